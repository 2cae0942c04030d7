"""Every request the chain sends, and every answer the fake gives, in Google's own schemas.

The schemas are the APIs' discovery documents (local_cloud.discovery). The bodies come from
functions.request_bodies with the configurations the tests use (the contract project and a bare
Config); the answers are those of the fake of the REST APIs (tests/fakes/fake_google_apis.py),
which the cloud adapters and the local adapters both talk to here.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from functions import request_bodies
from functions.config import Config
from functions.gcp_adapters import DataflowJobs, VertexJobs, VertexModels
from functions.local_adapters import LocalApi, LocalJobs, LocalModels
from functions.platform import ModelVersion
from local_cloud import discovery
from tests.fakes.gcp_project import CONFIG, ENDPOINT, PARENT, credentials as _credentials

RUN = "run-20261127-050000-abcdef0123"
BARE = Config(bucket="b")
LAUNCH = "dataflow.projects.locations.flexTemplates.launch"
CREATE_JOB = "aiplatform.projects.locations.customJobs.create"
UPLOAD = "aiplatform.projects.locations.models.upload"
DEPLOY = "aiplatform.projects.locations.endpoints.deployModel"
VERSION = ModelVersion(f"{PARENT}/models/babyweight", "2")


def built_bodies(config: Config) -> list[tuple[str, str, dict]]:
    """(what, method id, body) for every body the builders make, in each of their variants."""
    out = f"gs://{config.bucket}/runs/{RUN}/preprocess/"
    labels = {"run_id": RUN}
    return [
        ("launch with a limit", LAUNCH,
         request_bodies.flex_template_launch(config, RUN, "bigquery", out, 1000, labels)),
        ("launch of a bucket source, no limit, no labels", LAUNCH,
         request_bodies.flex_template_launch(config, RUN, f"gs://{config.bucket}/data/n.parquet", out, None, {})),
        ("custom job", CREATE_JOB, request_bodies.custom_job(
            config, RUN, f"{out}_MANIFEST.json", f"gs://{config.bucket}/runs/{RUN}/train/",
            ["--batch-size", "64", "--learning-rate", "0.01"], labels)),
        ("custom job with no trainer arguments", CREATE_JOB,
         request_bodies.custom_job(config, RUN, "gs://b/m.json", "gs://b/o/", [], {})),
        ("first upload", UPLOAD,
         request_bodies.upload_model(config, "babyweight", "gs://b/runs/r/train/model/", labels, False)),
        ("upload of a version", UPLOAD,
         request_bodies.upload_model(config, "babyweight", "gs://b/runs/r/train/model/", labels, True)),
        ("first deploy", DEPLOY, request_bodies.deploy_model(config, VERSION, RUN, 100, {})),
        ("canary deploy", DEPLOY, request_bodies.deploy_model(config, VERSION, RUN, 10, {"7": 100, "8": 0})),
    ]


CASES = [pytest.param(method_id, body, id=f"{name}: {what}")
         for name, config in (("contract project", CONFIG), ("bare config", BARE))
         for what, method_id, body in built_bodies(config)]


@pytest.mark.parametrize("method_id, body", CASES)
def test_every_body_the_builders_make_is_one_the_api_accepts(method_id, body):
    assert discovery.request_errors(method_id, body) == []


def test_every_request_and_answer_on_the_wire_is_in_the_documented_schemas(apis):
    """Both adapters through every route of the fake: each body and each answer is checked (the
    fake refuses a body its method's schema refuses; the `apis` fixture fails on a drifted answer)."""
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100},
                      deployed_models=[{"id": "111", "model": f"{PARENT}/models/babyweight@1"}])
    dataflow = DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    jobs = VertexJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    models = VertexModels(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    local_jobs = LocalJobs(LocalApi(apis.url), CONFIG)
    local_models = LocalModels(LocalApi(apis.url), CONFIG)

    dataflow.launch_preprocess(RUN, "bigquery", f"gs://{CONFIG.bucket}/runs/{RUN}/preprocess/", 1000, {"run_id": RUN})
    local_jobs.launch_preprocess("run-local", "bigquery", "gs://b/o/", None, {"run_id": "run-local"})
    for side in (jobs, local_jobs):
        job = side.launch_training(RUN, "gs://b/m.json", f"gs://b/runs/{RUN}/train/", ["--batch-size", "64"],
                                   {"run_id": RUN})
        apis.set_job_state(job.job_id, "JOB_STATE_FAILED", "Replica workerpool0-0 exited with status 137.")
        assert side.get_training_job(job.job_id).terminal
        assert job.job_id in [found.job_id for found in side.find_training_jobs(RUN)]
    for side, run in ((models, "run-a"), (local_models, "run-b"), (models, "run-c")):
        version = side.upload_version("babyweight", f"gs://b/runs/{run}/train/model/", {"run_id": run})
        assert side.find_version("babyweight", run) == version
        operation = side.start_deploy(version, "babyweight", 10, run)
        apis.finish_deploy(operation.name)
        assert side.get_operation(operation.name).done

    routes = {method_id for _, _, _, method_id in apis._routes()}
    assert {request.method_id for request in apis.requests} == routes, "a route of the fake went unchecked"
    for request in apis.requests:
        if request.method == "POST":
            assert discovery.request_errors(request.method_id, request.body) == [], request
        if request.status == 200:
            assert discovery.response_errors(request.method_id, request.answer) == [], request
    assert apis.drift == []


def test_the_fake_refuses_a_body_its_schema_refuses_as_the_api_does(apis):
    body = request_bodies.custom_job(CONFIG, RUN, "gs://b/m.json", "gs://b/o/", [], {})
    body["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]["machineTyp"] = body["jobSpec"]["workerPoolSpecs"][0][
        "machineSpec"].pop("machineType")
    request = urllib.request.Request(f"{apis.url}/v1/{PARENT}/customJobs", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    error = json.loads(refused.value.read())["error"]
    assert refused.value.code == 400 and error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert "jobSpec.workerPoolSpecs[0].machineSpec.machineTyp: unknown field" in error["message"]
    assert apis.custom_jobs == {}
