"""Vertex AI REST resources read back into the platform's types, for both adapters.

The Google Cloud adapters turn a client message into its REST JSON first (`Message.to_json`), so
one reader serves the cloud's answers and the local cloud's alike.
"""
from __future__ import annotations

from functions.platform import DeployOperation, TrainingJob


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
