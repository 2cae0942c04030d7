"""One body per request: what the cloud adapters send is what the local adapters send.

Both adapters are pointed at the same fake of the Google REST APIs (tests/fakes/fake_google_apis.py),
which records each body as it arrives on the wire, so the two can be compared exactly.
"""
from __future__ import annotations

import pytest

from functions import request_bodies
from functions.gcp_adapters import DataflowJobs, VertexJobs, VertexModels
from functions.local_adapters import LocalApi, LocalJobs, LocalModels
from functions.platform import ModelVersion
from tests.fakes.gcp_project import CONFIG, ENDPOINT, PARENT, credentials as _credentials

RUN = "run-20261127-050000-abcdef0123"


def bodies(apis, method: str, path_regex: str) -> list[dict]:
    return [request.body for request in apis.received(method, path_regex)]


def test_the_flex_template_launch_is_the_same_from_both_sides(apis):
    DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials()).launch_preprocess(
        RUN, "bigquery", f"gs://{CONFIG.bucket}/runs/{RUN}/preprocess/", 1000, {"run_id": RUN})
    LocalJobs(LocalApi(apis.url), CONFIG).launch_preprocess(
        "run-20261127-050000-abcdef0124", "bigquery", f"gs://{CONFIG.bucket}/runs/{RUN}/preprocess/", 1000,
        {"run_id": RUN})
    cloud, local = bodies(apis, "POST", "flexTemplates:launch")
    local["launchParameter"]["jobName"] = RUN  # two launches of one name would be refused
    local["launchParameter"]["parameters"]["run_id"] = RUN
    assert cloud == local
    environment = cloud["launchParameter"]["environment"]
    assert environment["maxWorkers"] == CONFIG.max_workers
    assert environment["serviceAccountEmail"] == CONFIG.dataflow_service_account


def test_the_custom_job_is_the_same_from_both_sides(apis):
    args = (RUN, "gs://b/m.json", f"gs://b/runs/{RUN}/train/", ["--batch-size", "64"], {"run_id": RUN})
    VertexJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials()).launch_training(*args)
    LocalJobs(LocalApi(apis.url), CONFIG).launch_training(*args)
    cloud, local = bodies(apis, "POST", r"/customJobs$")
    assert cloud == local == request_bodies.custom_job(CONFIG, *args)


def test_model_upload_and_deploy_are_the_same_from_both_sides(apis):
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100}, deployed_models=[{"id": "111", "model": "old@1"}])
    cloud_side = VertexModels(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    local_side = LocalModels(LocalApi(apis.url), CONFIG)
    cloud_side.upload_version("babyweight", "gs://b/runs/first/train/model/", {"run_id": "first"})
    for side in (cloud_side, local_side):
        version = side.upload_version("babyweight", f"gs://b/runs/{RUN}/train/model/", {"run_id": RUN})
        side.start_deploy(version, "babyweight", {"0": 10, "111": 90}, RUN)  # a canary beside the champion
    create, add_cloud, add_local = bodies(apis, "POST", r"models:upload$")
    assert create["modelId"] == "babyweight"
    assert add_cloud == add_local and add_cloud["parentModel"] == f"{PARENT}/models/babyweight"
    cloud_deploy, local_deploy = bodies(apis, "POST", r":deployModel$")
    assert cloud_deploy["deployedModel"]["dedicatedResources"] == local_deploy["deployedModel"]["dedicatedResources"]
    # the stage decides the whole split (functions.release.rollout); both sides send it as given
    assert cloud_deploy["trafficSplit"] == local_deploy["trafficSplit"] == {"0": 10, "111": 90}


@pytest.mark.parametrize("split", [{"0": 100}, {"0": 10, "7": 90}])
def test_the_deploy_request_carries_the_split_it_is_given(split):
    version = ModelVersion("projects/p/locations/r/models/m", "2")
    body = request_bodies.deploy_model(CONFIG, version, RUN, split)
    assert body["trafficSplit"] == split and body["trafficSplit"] is not split


def test_optional_fields_are_sent_only_when_configured():
    from functions.config import Config

    bare = Config(bucket="b")
    launch = request_bodies.flex_template_launch(bare, RUN, "gs://b/data/x", "gs://b/out/", None, {})
    assert "serviceAccountEmail" not in launch["launchParameter"]["environment"]
    assert "limit" not in launch["launchParameter"]["parameters"]
    assert launch["launchParameter"]["containerSpecGcsPath"] == "gs://b/packages/preprocess-template.json"
    job = request_bodies.custom_job(bare, RUN, "gs://m", "gs://o/", [], {})
    assert "serviceAccount" not in job["jobSpec"]
    container = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert container == {"imageUri": "mlrelay-trainer:local", "command": ["python", "-m", "trainer.task"],
                         "args": ["--manifest", "gs://m"]}
    deploy = request_bodies.deploy_model(bare, ModelVersion("projects/p/locations/r/models/m", "2"), RUN, {"0": 100})
    assert deploy["deployedModel"]["model"] == "projects/p/locations/r/models/m@2"
