"""The REST bodies of every request the chain sends to Dataflow and Vertex AI, built once.

Both sides of each platform interface send these very bodies: the Google Cloud adapters turn them
into the client library's messages (`Message.from_json`), the local adapters POST them to the
local cloud, so the local chain receives exactly what the cloud would. Each builder cites the
reference page of its request.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from functions.config import Config
from functions.platform import ModelVersion

# Where the Flex Template spec lives when the configuration names none (the local cloud has no
# template to read; deploy.sh uploads the real one and sets MLRELAY_FLEX_TEMPLATE).
DEFAULT_TEMPLATE_NAME = "packages/preprocess-template.json"
# What the training image runs (deploy/training_image/Dockerfile's entry point, the same words).
TRAINER_COMMAND = ("python", "-m", "trainer.task")
# Where the serving image (deploy/serving_image, python -m model_server) listens and answers: the
# port Vertex AI sends every request to, and the routes it passes back in AIP_HEALTH_ROUTE and
# AIP_PREDICT_ROUTE (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements).
SERVING_PORT = 8080
SERVING_HEALTH_ROUTE = "/health"
SERVING_PREDICT_ROUTE = "/predict"
TRAINING_MACHINE_TYPE = "n1-standard-4"


def location_parent(config: Config) -> str:
    return f"projects/{config.project}/locations/{config.region}"


def flex_template_launch(config: Config, run_id: str, source: str, out_uri: str, limit: int | None,
                         labels: dict[str, str]) -> dict:
    """The body of projects.locations.flexTemplates.launch (project and location are in the URL).

    Reference: https://cloud.google.com/dataflow/docs/reference/rest/v1b3/projects.locations.flexTemplates/launch
    and .../v1b3/projects.locations.flexTemplates/launch#FlexTemplateRuntimeEnvironment.
    The run id is the job name: Dataflow refuses a second active job of one name. "bigquery" as
    the source is passed as it is: the pipeline then reads the public natality table.
    """
    parameters = {"source": source, "out": out_uri, "run_id": run_id}
    if limit is not None:
        parameters["limit"] = str(limit)
    environment: dict = {
        "maxWorkers": config.max_workers,
        "tempLocation": config.uri("tmp/"),
        "stagingLocation": config.uri("tmp/staging/"),
        "additionalUserLabels": dict(labels),
    }
    if config.dataflow_service_account:
        environment["serviceAccountEmail"] = config.dataflow_service_account
    return {
        "launchParameter": {
            "jobName": run_id,
            "containerSpecGcsPath": config.flex_template or config.uri(DEFAULT_TEMPLATE_NAME),
            "parameters": parameters,
            "environment": environment,
        }
    }


def custom_job(config: Config, run_id: str, manifest_uri: str, base_output_uri: str,
               trainer_args: list[str], labels: dict[str, str]) -> dict:
    """A Vertex AI CustomJob resource (REST v1) running the trainer in our own training image.

    A container spec, not a Python package on a prebuilt image: pythonPackageSpec takes only
    Vertex's prebuilt training images, and there is none with a TensorFlow as new as the one the
    trainer is tested with. The image (deploy/training_image) pins that TensorFlow and Keras.
    Reference: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJob and
    .../v1/CustomJobSpec (workerPoolSpecs[].containerSpec, baseOutputDirectory.outputUriPrefix).
    """
    spec: dict = {
        "workerPoolSpecs": [
            {
                "machineSpec": {"machineType": TRAINING_MACHINE_TYPE},
                "replicaCount": "1",
                "containerSpec": {
                    "imageUri": config.training_image,
                    "command": list(TRAINER_COMMAND),
                    "args": ["--manifest", manifest_uri, *trainer_args],
                },
            }
        ],
        "baseOutputDirectory": {"outputUriPrefix": base_output_uri},
    }
    if config.training_service_account:
        spec["serviceAccount"] = config.training_service_account
    return {"displayName": f"train-{run_id}", "jobSpec": spec, "labels": dict(labels)}


def upload_model(config: Config, model_name: str, artifact_uri: str, labels: dict[str, str],
                 parent_exists: bool) -> dict:
    """UploadModelRequest: a new version of `model_name` when it exists, else the model itself.

    Reference: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/upload
    (`parentModel` makes the upload a new version; `modelId` names a new model). The model is served
    by our own image under Vertex's custom-container contract, its routes and port named here
    (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/ModelContainerSpec).
    """
    body: dict = {
        "model": {
            "displayName": model_name,
            "artifactUri": artifact_uri,
            "containerSpec": {
                "imageUri": config.serving_image,
                "predictRoute": SERVING_PREDICT_ROUTE,
                "healthRoute": SERVING_HEALTH_ROUTE,
                "ports": [{"containerPort": SERVING_PORT}],
            },
            "labels": dict(labels),
        }
    }
    if parent_exists:
        body["parentModel"] = f"{location_parent(config)}/models/{model_name}"
    else:
        body["modelId"] = model_name
    return body


def deploy_model(config: Config, version: ModelVersion, display_name: str, traffic_split: dict[str, int]) -> dict:
    """DeployModelRequest (the endpoint is in the URL) with dedicated resources and the split.

    A custom-trained model lists only DEDICATED_RESOURCES (and SHARED_RESOURCES) among its
    supportedDeploymentResourcesTypes, so Vertex AI refuses automaticResources for it.
    References: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints/deployModel,
    .../v1/DedicatedResources and .../v1/projects.locations.models#deploymentresourcestype
    """
    return {
        "deployedModel": {
            "model": version.versioned_name,
            "displayName": display_name,
            "dedicatedResources": {
                "machineSpec": {"machineType": config.serving_machine_type},
                "minReplicaCount": 1,
                "maxReplicaCount": 1,
            },
        },
        "trafficSplit": dict(traffic_split),
    }


def undeploy_model(deployed_model_id: str, traffic_split: dict[str, int]) -> dict:
    """UndeployModelRequest: the split the endpoint keeps, which must leave out the model undeployed.

    Reference: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.endpoints/undeployModel
    """
    return {"deployedModelId": deployed_model_id, "trafficSplit": dict(traffic_split)}


def merge_version_aliases(aliases: list[str]) -> dict:
    """MergeVersionAliasesRequest: aliases to put on the version named in the URL.

    Reference: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/mergeVersionAliases
    (an alias another version holds moves; "default" sits on exactly one version).
    """
    return {"versionAliases": list(aliases)}


def publish_task(config: Config, task_id: str, topic: str, message: dict, at: datetime) -> dict:
    """A Cloud Tasks Task that, at `at`, calls Pub/Sub's REST publish with the release account's token.

    References: https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks
    (name, scheduleTime, httpRequest with oauthToken: an OAuth token for *.googleapis.com targets)
    and https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/publish (the body:
    PublishRequest, each message's data base64). A named task is created once: a second create
    answers ALREADY_EXISTS, so a redelivered event schedules nothing twice.
    """
    data = base64.b64encode(json.dumps(message, sort_keys=True).encode("utf-8")).decode("ascii")
    publish = json.dumps({"messages": [{"data": data, "attributes": {"origin": "bake-end"}}]}).encode("utf-8")
    return {
        "name": f"{tasks_queue_path(config)}/tasks/{task_id}",
        "scheduleTime": at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "httpRequest": {
            "url": f"https://pubsub.googleapis.com/v1/projects/{config.project}/topics/{topic}:publish",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(publish).decode("ascii"),
            "oauthToken": {"serviceAccountEmail": release_publisher(config),
                           "scope": "https://www.googleapis.com/auth/pubsub"},
        },
    }


def tasks_queue_path(config: Config) -> str:
    return f"{location_parent(config)}/queues/{config.tasks_queue}"


def release_publisher(config: Config) -> str:
    """The account whose token the bake-end task carries (deploy.sh creates it)."""
    return config.tasks_service_account or f"mlrelay-release-publisher@{config.project}.iam.gserviceaccount.com"
