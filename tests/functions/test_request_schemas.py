"""Every request the chain sends, and every answer the fake gives, in Google's own schemas.

The schemas are the APIs' discovery documents (local_cloud.discovery). The bodies come from
functions.request_bodies with the configurations the tests use (the contract project and a bare
Config); the answers are those of the fake of the REST APIs (tests/fakes/fake_google_apis.py),
which the cloud adapters and the local adapters both talk to here. The bake-end task is two
requests in one: Cloud Tasks' tasks.create carries it, and its httpRequest is a call of Pub/Sub's
topics.publish, whose body (base64 in the task) is held against Pub/Sub's own document.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

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
UNDEPLOY = "aiplatform.projects.locations.endpoints.undeployModel"
MERGE_ALIASES = "aiplatform.projects.locations.models.mergeVersionAliases"
CREATE_TASK = "cloudtasks.projects.locations.queues.tasks.create"
PUBLISH = "pubsub.projects.topics.publish"
VERSION = ModelVersion(f"{PARENT}/models/babyweight", "2")
BAKE_END = {"run_id": RUN, "candidate": "8", "champion": "7", "bake_started": "2026-11-27T05:30:00+00:00",
            "model_version": VERSION.versioned_name}
BAKE_ENDS_AT = datetime(2026, 11, 27, 5, 45, 0, 250000, tzinfo=timezone.utc)


def bake_end_task(config: Config, message: dict | None = None) -> dict:
    return request_bodies.publish_task(config, f"bake-end-{RUN}", config.release_topic,
                                       BAKE_END if message is None else message, BAKE_ENDS_AT)


def carried_publish(task: dict) -> dict:
    """The PublishRequest a task's httpRequest.body carries (base64 of its JSON)."""
    return json.loads(base64.b64decode(task["httpRequest"]["body"], validate=True))


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
        ("first deploy", DEPLOY, request_bodies.deploy_model(config, VERSION, RUN, {"0": 100})),
        ("canary deploy", DEPLOY, request_bodies.deploy_model(config, VERSION, RUN, {"0": 10, "7": 90})),
        ("replacing deploy", DEPLOY, request_bodies.deploy_model(config, VERSION, RUN, {"0": 100, "7": 0})),
        ("undeploy of the champion at promotion", UNDEPLOY, request_bodies.undeploy_model("7", {"8": 100})),
        ("undeploy of the last model", UNDEPLOY, request_bodies.undeploy_model("8", {})),
        ("serving aliases", MERGE_ALIASES, request_bodies.merge_version_aliases(["champion", "default"])),
        ("bake-end task", CREATE_TASK, {"task": bake_end_task(config)}),
        ("bake-end task with no champion", CREATE_TASK, {"task": bake_end_task(config, {**BAKE_END, "champion": None})}),
        ("publish the bake-end task carries", PUBLISH, carried_publish(bake_end_task(config))),
    ]


CASES = [pytest.param(method_id, body, id=f"{name}: {what}")
         for name, config in (("contract project", CONFIG), ("bare config", BARE))
         for what, method_id, body in built_bodies(config)]


@pytest.mark.parametrize("method_id, body", CASES)
def test_every_body_the_builders_make_is_one_the_api_accepts(method_id, body):
    assert discovery.request_errors(method_id, body) == []


def test_every_method_the_chain_calls_has_a_body_checked():
    checked = {method_id for _, method_id, _ in built_bodies(CONFIG)}
    assert checked == {LAUNCH, CREATE_JOB, UPLOAD, DEPLOY, UNDEPLOY, MERGE_ALIASES, CREATE_TASK, PUBLISH}


@pytest.mark.parametrize("config", [CONFIG, BARE], ids=["contract project", "bare config"])
def test_the_bake_end_task_calls_pubsub_publish_as_its_discovery_document_describes_it(config):
    """The httpRequest is the documented REST call: the method's URL under Pub/Sub's root URL, its
    verb, a scope the method takes, and a body whose message data is the message's JSON."""
    from googleapiclient.discovery_cache import get_static_doc

    pubsub = json.loads(get_static_doc("pubsub", "v1"))
    publish = pubsub["resources"]["projects"]["resources"]["topics"]["methods"]["publish"]
    assert publish["id"] == PUBLISH
    task = bake_end_task(config)
    http = task["httpRequest"]
    topic = f"projects/{config.project}/topics/{config.release_topic}"
    assert http["url"] == pubsub["rootUrl"] + pubsub["servicePath"] + publish["path"].replace("{+topic}", topic)
    assert http["httpMethod"] == publish["httpMethod"] == "POST"
    assert http["oauthToken"]["scope"] in publish["scopes"]
    assert http["oauthToken"]["serviceAccountEmail"] == request_bodies.release_publisher(config)
    assert http["headers"] == {"Content-Type": "application/json"}
    (message,) = carried_publish(task)["messages"]
    assert json.loads(base64.b64decode(message["data"], validate=True)) == BAKE_END
    assert task["name"] == (f"projects/{config.project}/locations/{config.region}/queues/{config.tasks_queue}"
                            f"/tasks/bake-end-{RUN}")
    assert task["scheduleTime"] == "2026-11-27T05:45:00.250000Z"


@pytest.mark.parametrize("method_id, body, drift, expected", [
    pytest.param(UNDEPLOY, request_bodies.undeploy_model("7", {"8": 100}), lambda b: b.update(trafficSplit={"8": "100"}),
                 'trafficSplit["8"]: expected a JSON number without a fraction', id="undeploy: a percent as text"),
    pytest.param(MERGE_ALIASES, request_bodies.merge_version_aliases(["champion"]),
                 lambda b: b.update(aliases=b.pop("versionAliases")), "aliases: unknown field", id="aliases renamed"),
    pytest.param(CREATE_TASK, {"task": bake_end_task(CONFIG)},
                 lambda b: b["task"]["httpRequest"]["oauthToken"].update(serviceAccount="x@y"),
                 "task.httpRequest.oauthToken.serviceAccount: unknown field", id="task: a token field misnamed"),
    pytest.param(CREATE_TASK, {"task": bake_end_task(CONFIG)}, lambda b: b["task"]["httpRequest"].update(httpMethod="post"),
                 "task.httpRequest.httpMethod: 'post' is not a value of the enum", id="task: the verb in lower case"),
    pytest.param(CREATE_TASK, {"task": bake_end_task(CONFIG)}, lambda b: b.update(b.pop("task")),
                 "name: unknown field", id="a Task sent where CreateTaskRequest is due"),
    pytest.param(PUBLISH, carried_publish(bake_end_task(CONFIG)),
                 lambda b: b["messages"][0].update(attributes={"origin": 1}),
                 'messages[0].attributes["origin"]: expected a JSON string', id="publish: an attribute not text"),
])
def test_a_body_that_drifts_from_its_schema_is_refused_by_the_check(method_id, body, drift, expected):
    drift(body)
    errors = discovery.request_errors(method_id, body)
    assert any(expected in error for error in errors), errors


def test_every_request_and_answer_on_the_wire_is_in_the_documented_schemas(apis):
    """Both adapters through every route of the fake: each body and each answer is checked (the
    fake refuses a body its method's schema refuses; the `apis` fixture fails on a drifted answer)."""
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100},
                      deployed_models=[{"id": "111", "model": f"{PARENT}/models/babyweight", "modelVersionId": "1"}])
    dataflow = DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    jobs = VertexJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    models = VertexModels(CONFIG, api_endpoint=apis.url, credentials=_credentials())
    local_jobs = LocalJobs(LocalApi(apis.url), CONFIG)
    local_models = LocalModels(LocalApi(apis.url), CONFIG)

    launched = [dataflow.launch_preprocess(RUN, "bigquery", f"gs://{CONFIG.bucket}/runs/{RUN}/preprocess/", 1000,
                                           {"run_id": RUN}),
                local_jobs.launch_preprocess("run-local", "bigquery", "gs://b/o/", None, {"run_id": "run-local"})]
    for side, job in zip((dataflow, local_jobs), launched):
        assert side.get_preprocess_job(job.job_id).labels == {"run_id": job.name}
    for side in (jobs, local_jobs):
        job = side.launch_training(RUN, "gs://b/m.json", f"gs://b/runs/{RUN}/train/", ["--batch-size", "64"],
                                   {"run_id": RUN})
        apis.set_job_state(job.job_id, "JOB_STATE_FAILED", "Replica workerpool0-0 exited with status 137.")
        assert side.get_training_job(job.job_id).terminal
        assert job.job_id in [found.job_id for found in side.find_training_jobs(RUN)]
    apis.add_version(f"{PARENT}/models/babyweight", "gs://b/runs/run-0/train/model/", {"run_id": "run-0"})
    for side, run in ((models, "run-a"), (local_models, "run-b"), (models, "run-c")):
        version = side.upload_version("babyweight", f"gs://b/runs/{run}/train/model/", {"run_id": run})
        assert side.find_version("babyweight", run) == version
        assert side.get_version(version.versioned_name).artifact_uri == f"gs://b/runs/{run}/train/model/"
        (champion,) = side.get_endpoint("babyweight").deployed
        operation = side.start_deploy(version, "babyweight", {"0": 10, champion.id: 90}, run)
        canary = apis.finish_deploy(operation.name)
        assert side.get_operation(operation.name).done
        side.undeploy("babyweight", champion.id, {canary: 100})  # the canary is promoted
        side.move_aliases(version, ["champion", "default"])
        assert set(side.get_version(version.versioned_name).aliases) == {"champion", "default"}

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
