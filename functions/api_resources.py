"""Vertex AI REST resources read back into the platform's types, for both adapters.

The Google Cloud adapters turn a client message into its REST JSON first (`Message.to_json`), so
one reader serves the cloud's answers and the local cloud's alike.
"""
from __future__ import annotations

from functions.platform import (
    DeployedModel,
    DeployOperation,
    EndpointState,
    PreprocessJob,
    RegisteredVersion,
    TrainingJob,
)


def preprocess_job_from_resource(job: dict) -> PreprocessJob:
    """A Dataflow Job resource (https://cloud.google.com/dataflow/docs/reference/rest/v1b3/projects.jobs)."""
    return PreprocessJob(job_id=job["id"], name=job.get("name", ""),
                         state=job.get("currentState", "JOB_STATE_UNKNOWN"), labels=dict(job.get("labels", {})))


def training_job_from_resource(job: dict) -> TrainingJob:
    spec = job.get("jobSpec", {})
    return TrainingJob(
        job_id=job["name"].rsplit("/", 1)[-1],
        name=job["name"],
        state=job.get("state", "JOB_STATE_UNSPECIFIED"),
        labels=dict(job.get("labels", {})),
        base_output_uri=spec.get("baseOutputDirectory", {}).get("outputUriPrefix", ""),
        error=(job.get("error") or {}).get("message", ""),
    )


def operation_from_resource(op: dict) -> DeployOperation:
    error = op.get("error") or {}
    response = op.get("response") or {}
    return DeployOperation(
        name=op["name"],
        done=bool(op.get("done")),
        error=error.get("message", ""),
        deployed_model_id=str(response.get("deployedModel", {}).get("id", "")),
        response=response,
    )


def version_from_resource(model: dict) -> RegisteredVersion:
    """A Model resource (one version of it) as the registry gave it."""
    return RegisteredVersion(
        model=model["name"].split("@")[0],
        version_id=str(model["versionId"]),
        artifact_uri=model.get("artifactUri", ""),
        labels=dict(model.get("labels", {})),
        aliases=tuple(model.get("versionAliases", ())),
    )


def endpoint_from_resource(endpoint: dict) -> EndpointState:
    """An Endpoint resource: its deployed models and traffic split (ids as strings, as in the REST JSON)."""
    deployed = tuple(
        DeployedModel(id=str(d["id"]), model=d["model"].split("@")[0], version_id=str(d.get("modelVersionId", "")))
        for d in endpoint.get("deployedModels", ())
    )
    split = {str(k): int(v) for k, v in (endpoint.get("trafficSplit") or {}).items()}
    return EndpointState(deployed=deployed, traffic_split=split)
