"""The discovery-document check: each kind of drift from Google's schemas is caught and named by path."""
from __future__ import annotations

import copy

import pytest

from local_cloud import discovery

CREATE_JOB = "aiplatform.projects.locations.customJobs.create"
GET_JOB = "aiplatform.projects.locations.customJobs.get"
DEPLOY = "aiplatform.projects.locations.endpoints.deployModel"
GET_OPERATION = "aiplatform.projects.locations.operations.get"
LAUNCH = "dataflow.projects.locations.flexTemplates.launch"
TYPE_URL = "type.googleapis.com/google.cloud.aiplatform.v1."

CUSTOM_JOB = {
    "displayName": "train-run-1",
    "labels": {"run_id": "run-1"},
    "jobSpec": {
        "workerPoolSpecs": [{
            "machineSpec": {"machineType": "n1-standard-4"},
            "replicaCount": "1",
            "pythonPackageSpec": {"executorImageUri": "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest",
                                  "packageUris": ["gs://b/packages/t.tar.gz"], "pythonModule": "trainer.task",
                                  "args": ["--manifest", "gs://b/m.json"]},
        }],
        "baseOutputDirectory": {"outputUriPrefix": "gs://b/runs/run-1/train/"},
    },
}
DEPLOY_BODY = {
    "deployedModel": {"model": "projects/p/locations/r/models/m@2", "displayName": "run-1",
                      "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-2"},
                                             "minReplicaCount": 1, "maxReplicaCount": 1}},
    "trafficSplit": {"0": 10, "7": 90},
}


def changed(body: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A copy of `body` with the field at dotted `path` (numbers index lists) set or deleted."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return body


def test_a_conforming_body_has_no_errors():
    assert discovery.request_errors(CREATE_JOB, CUSTOM_JOB) == []
    assert discovery.request_errors(DEPLOY, DEPLOY_BODY) == []
    discovery.check_request(CREATE_JOB, CUSTOM_JOB)


@pytest.mark.parametrize("method_id, body, error", [
    # an unknown field, at any depth
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.machineSpec.machineTyp", "n1"),
     "jobSpec.workerPoolSpecs[0].machineSpec.machineTyp: unknown field"),
    (CREATE_JOB, changed(CUSTOM_JOB, "jobspec", {}), "jobspec: unknown field"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.machineSpec.gpus", 1),
     "deployedModel.dedicatedResources.machineSpec.gpus: unknown field"),
    # the JSON type of each type and format
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.replicaCount", 1),
     "jobSpec.workerPoolSpecs[0].replicaCount: expected a JSON string of digits (int64), got 1"),
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.replicaCount", "one"),
     "jobSpec.workerPoolSpecs[0].replicaCount: expected a JSON string of digits (int64)"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.minReplicaCount", "1"),
     "deployedModel.dedicatedResources.minReplicaCount: expected a JSON number without a fraction"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.minReplicaCount", 1.5),
     "deployedModel.dedicatedResources.minReplicaCount: expected a JSON number without a fraction"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.minReplicaCount", True),
     "deployedModel.dedicatedResources.minReplicaCount: expected a JSON number without a fraction"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.maxReplicaCount", 2 ** 31),
     "deployedModel.dedicatedResources.maxReplicaCount: 2147483648 is out of range"),
    (DEPLOY, changed(DEPLOY_BODY, "trafficSplit.0", "10"), 'trafficSplit["0"]: expected a JSON number'),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.enableAccessLogging", "true"),
     "deployedModel.enableAccessLogging: expected true or false"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.model", ["m"]), "deployedModel.model: expected a JSON string"),
    (DEPLOY, changed(DEPLOY_BODY, "trafficSplit", [10]), "trafficSplit: expected a JSON object (a map)"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel", "m"), "deployedModel: expected a JSON object"),
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.pythonPackageSpec.args", "--manifest"),
     "jobSpec.workerPoolSpecs[0].pythonPackageSpec.args: expected a JSON array"),
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.pythonPackageSpec.args", ["--limit", 5]),
     "jobSpec.workerPoolSpecs[0].pythonPackageSpec.args[1]: expected a JSON string"),
    (CREATE_JOB, changed(CUSTOM_JOB, "labels", {"run_id": 1}), 'labels["run_id"]: expected a JSON string'),
    (CREATE_JOB, [CUSTOM_JOB], "(body): expected a JSON object (GoogleCloudAiplatformV1CustomJob)"),
    # enum values
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.scheduling", {"strategy": "CHEAP"}),
     "jobSpec.scheduling.strategy: 'CHEAP' is not a value of the enum (FLEX_START, LOW_COST, ON_DEMAND, SPOT, "),
    (LAUNCH, {"launchParameter": {"jobName": "run-1", "environment": {"ipConfiguration": "WORKER_IP_PUBLICC"}}},
     "launchParameter.environment.ipConfiguration: 'WORKER_IP_PUBLICC' is not a value of the enum"),
    # required fields: missing, null, or an empty string or list
    (CREATE_JOB, changed(CUSTOM_JOB, "displayName", delete=True), "displayName: required field missing"),
    (CREATE_JOB, changed(CUSTOM_JOB, "displayName", None), "displayName: required field missing"),
    (CREATE_JOB, changed(CUSTOM_JOB, "displayName", ""), "displayName: required field missing"),
    (CREATE_JOB, changed(CUSTOM_JOB, "jobSpec.workerPoolSpecs.0.pythonPackageSpec.packageUris", []),
     "jobSpec.workerPoolSpecs[0].pythonPackageSpec.packageUris: required field missing"),
    (DEPLOY, changed(DEPLOY_BODY, "deployedModel.dedicatedResources.minReplicaCount", delete=True),
     "deployedModel.dedicatedResources.minReplicaCount: required field missing"),
    (LAUNCH, {"launchParameter": {"containerSpecGcsPath": "gs://b/t.json"}}, "launchParameter.jobName: required field missing"),
    (LAUNCH, {}, "launchParameter: required field missing"),
])
def test_each_kind_of_drift_is_named_by_its_path(method_id, body, error):
    errors = discovery.request_errors(method_id, body)
    assert any(e.startswith(error) for e in errors), errors
    with pytest.raises(discovery.SchemaMismatch, match="Invalid JSON payload for") as raised:
        discovery.check_request(method_id, body)
    assert raised.value.errors == errors


def test_every_error_of_a_body_is_reported_not_only_the_first():
    body = changed(changed(CUSTOM_JOB, "displayName", delete=True), "jobSpec.workerPoolSpecs.0.replicaCount", 2)
    body["jobSpec"]["extra"] = True
    assert sorted(discovery.request_errors(CREATE_JOB, body)) == [
        "displayName: required field missing",
        "jobSpec.extra: unknown field",
        "jobSpec.workerPoolSpecs[0].replicaCount: expected a JSON string of digits (int64), got 2",
    ]


def test_a_message_sent_empty_is_set_and_zero_and_false_are_values():
    # A message has presence: {} is set (its own required fields are then checked).
    assert discovery.request_errors(CREATE_JOB, changed(CUSTOM_JOB, "jobSpec", {})) == [
        "jobSpec.workerPoolSpecs: required field missing"]
    zero = changed(DEPLOY_BODY, "deployedModel.dedicatedResources.minReplicaCount", 0)
    assert discovery.request_errors(DEPLOY, zero) == []
    private = {"enablePrivateServiceConnect": False}
    assert discovery.document("aiplatform").errors("GoogleCloudAiplatformV1PrivateServiceConnectConfig", private) == []


def test_a_null_optional_field_is_accepted_as_proto3_json_reads_it():
    assert discovery.request_errors(CREATE_JOB, changed(CUSTOM_JOB, "labels", None)) == []


def test_output_only_and_path_bound_fields_are_not_required_though_marked_required():
    doc = discovery.document("aiplatform")
    metadata = doc._schemas["GoogleCloudAiplatformV1DatasetVersion"]["properties"]["metadata"]
    assert metadata["description"].startswith("Required. Output only.")
    assert doc.errors("GoogleCloudAiplatformV1DatasetVersion", {}) == []
    # `location` is in the body schema of evaluateInstances, marked "Required.", and in its path.
    method = doc.method("aiplatform.projects.locations.evaluateInstances")
    location = doc._schemas[method.request]["properties"]["location"]
    assert location["description"].startswith("Required.") and "location" in method.path_parameters
    assert discovery.request_errors(method.id, {}) == []
    assert doc.errors(method.request, {}) == ["location: required field missing"]


def test_output_only_fields_are_accepted_in_a_request_as_google_apis_ignore_them():
    body = dict(CUSTOM_JOB, name="projects/p/locations/r/customJobs/1", state="JOB_STATE_RUNNING",
                createTime="2026-11-27T05:00:00Z")
    assert discovery.request_errors(CREATE_JOB, body) == []


def test_an_any_is_checked_against_the_schema_its_type_url_names():
    operation = {"name": "projects/p/locations/r/endpoints/e/operations/1", "done": True,
                 "metadata": {"@type": TYPE_URL + "DeployModelOperationMetadata",
                              "genericMetadata": {"createTime": "2026-11-27T05:00:00Z"}},
                 "response": {"@type": TYPE_URL + "DeployModelResponse", "deployedModel": {"id": "7", "model": "m"}}}
    assert discovery.response_errors(GET_OPERATION, operation) == []
    drifted = changed(operation, "response.deployedModel.deployedModelId", "7")
    assert discovery.response_errors(GET_OPERATION, drifted) == ["response.deployedModel.deployedModelId: unknown field"]
    untyped = changed(operation, "response", {"deployedModel": {"id": "7"}})
    assert discovery.response_errors(GET_OPERATION, untyped) == [
        "response.@type: required field missing (google.protobuf.Any)"]
    foreign = changed(operation, "response", {"@type": "type.googleapis.com/google.protobuf.Empty"})
    assert discovery.response_errors(GET_OPERATION, foreign) == []  # a type of no schema here: not checked further


def test_responses_are_checked_against_the_method_response_schema():
    job = dict(CUSTOM_JOB, name="projects/p/locations/r/customJobs/1", state="JOB_STATE_SUCCEEDED")
    assert discovery.response_errors(GET_JOB, job) == []
    # Dataflow's name for a finished job, not Vertex AI's (JOB_STATE_SUCCEEDED).
    (error,) = discovery.response_errors(GET_JOB, dict(job, state="JOB_STATE_DONE"))
    assert error.startswith("state: 'JOB_STATE_DONE' is not a value of the enum (JOB_STATE_CANCELLED, ")
    assert error.endswith(" more)")
    with pytest.raises(discovery.SchemaMismatch, match=r"customJobs\.get \(GoogleCloudAiplatformV1CustomJob\)"):
        discovery.check_response(GET_JOB, dict(job, status="done"))


def test_documents_are_read_once_and_schemas_resolved_once():
    first = discovery.document("aiplatform")
    assert discovery.document("aiplatform", "v1") is first
    assert first.message("GoogleCloudAiplatformV1CustomJob") is first.message("GoogleCloudAiplatformV1CustomJob")
    assert discovery.document("dataflow").revision and discovery.document("dataflow").version == "v1b3"


def test_unknown_methods_and_documents_are_errors_of_the_caller():
    with pytest.raises(KeyError, match="has no method"):
        discovery.request_errors("aiplatform.projects.locations.customJobs.launch", {})
    with pytest.raises(LookupError, match="no discovery document"):
        discovery.document("aiplatform", "v0")
    with pytest.raises(ValueError, match="takes no request body"):
        discovery.request_errors(GET_JOB, {})


@pytest.mark.parametrize("api", sorted(discovery.API_VERSIONS))
def test_every_api_the_chain_speaks_has_its_document_in_the_package(api):
    doc = discovery.document(api)
    assert (doc.name, doc.version) == (api, discovery.API_VERSIONS[api]) and doc.revision
