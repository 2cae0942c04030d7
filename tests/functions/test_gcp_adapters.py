"""Contract tests of the Google Cloud adapters, without a cloud account.

Every call goes through the real Google client (REST transport, anonymous credentials) to a
local stand-in: Cloud Storage calls to gcp-storage-emulator (taught the ifGenerationMatch
precondition, tests/fakes/fake_gcs.py), Dataflow and Vertex AI calls to a small stateful fake of
their REST endpoints (tests/fakes/fake_google_apis.py) that records what it receives. The tests
hold the recorded requests against the documented REST shapes, check that API errors arrive as
the platform's kinds, and run the chain's stages on these adapters from request to deployment.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.fakes.fake_gcs import gcs_emulator
from tests.fakes.gcp_project import BUCKET, CONFIG, ENDPOINT, PARENT, PROJECT
from tests.fakes.gcp_project import credentials as _credentials
from tests.fakes.gcp_project import free_port as _free_port

from events.log_entries import JobKind, JobTerminal, JobOutcome
from functions import request_bodies
from functions.cloud_tasks import CloudTasksScheduler
from functions.run_store import RunStore, manifest_name
from functions.stages import deploy, release, start, training
from functions.triggers import BakeEnded, JobEnded, ManifestWritten, StartMessage, decode_release
from local_cloud import discovery
from local_cloud.tasks.wire import parse_timestamp
from tests.fakes.google_events import message_published
from functions.adapters import build_platform
from functions.local_adapters import LocalStorage
from functions.config import Config, ConfigError
from functions.gcp_adapters import (
    DataflowJobs,
    GcpJobs,
    GcsStorage,
    VertexJobs,
    VertexModels,
    platform_error,
)
from functions.platform import (
    AlreadyExists,
    DeployedModel,
    EndpointState,
    ModelVersion,
    NotFound,
    Platform,
    RegisteredVersion,
    TransientError,
)

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
MODEL = f"{PARENT}/models/babyweight"


@pytest.fixture
def dataflow(apis):
    return DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())


@pytest.fixture
def vertex_jobs(apis):
    return VertexJobs(CONFIG, api_endpoint=apis.url, credentials=_credentials())


@pytest.fixture
def models(apis):
    apis.add_endpoint(ENDPOINT)
    return VertexModels(CONFIG, api_endpoint=apis.url, credentials=_credentials())


@pytest.fixture(scope="module")
def gcs_url():
    with pytest.MonkeyPatch.context() as patch, gcs_emulator(_free_port(), BUCKET) as url:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        yield url


@pytest.fixture
def storage(gcs_url):
    from google.cloud import storage as gcs

    client = gcs.Client(project=PROJECT, credentials=_credentials())
    return GcsStorage(BUCKET, client)


def _prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"


# --- Dataflow: the Flex Template launch ----------------------------------------------------------


def test_the_flex_template_launch_carries_the_run_as_job_name_parameters_and_environment(apis, dataflow):
    out = f"gs://{BUCKET}/runs/run-1/preprocess/"
    job = dataflow.launch_preprocess("run-1", "bigquery", out, 5000, {"run_id": "run-1"})
    (request,) = apis.received("POST", r"flexTemplates:launch$")
    assert request.path == f"/v1b3/{PARENT}/flexTemplates:launch"
    assert request.body == {"launchParameter": {
        "jobName": "run-1",
        "containerSpecGcsPath": CONFIG.flex_template,
        "parameters": {"source": "bigquery", "out": out, "run_id": "run-1", "limit": "5000"},
        "environment": {
            "serviceAccountEmail": CONFIG.dataflow_service_account,
            "maxWorkers": 3,
            "tempLocation": f"gs://{BUCKET}/tmp/",
            "stagingLocation": f"gs://{BUCKET}/tmp/staging/",
            "additionalUserLabels": {"run_id": "run-1"},
        },
    }}
    assert job.kind == "preprocess" and job.name == "run-1"
    assert job.job_id == apis.dataflow_jobs["run-1"]["id"]


def test_a_dataflow_job_is_read_back_by_id_with_its_state_and_an_unknown_one_is_not_found(apis, dataflow):
    job = dataflow.launch_preprocess("run-3", "bigquery", "gs://x/", None, {"run_id": "run-3"})
    apis.set_dataflow_state("run-3", "JOB_STATE_DRAINED")
    found = dataflow.get_preprocess_job(job.job_id)
    assert (found.job_id, found.name, found.state, found.labels) == (job.job_id, "run-3", "JOB_STATE_DRAINED",
                                                                    {"run_id": "run-3"})
    assert found.terminal and not found.succeeded
    (call,) = apis.received("GET", "/jobs/")
    assert call.path.endswith(f"/locations/{CONFIG.region}/jobs/{job.job_id}")
    with pytest.raises(NotFound):
        dataflow.get_preprocess_job("2026-11-27_05_00_00-404")


def test_a_second_launch_of_a_run_is_already_exists_and_no_limit_sends_no_limit(apis, dataflow):
    dataflow.launch_preprocess("run-2", f"gs://{BUCKET}/data/n.parquet", "gs://x/", None, {"run_id": "run-2"})
    with pytest.raises(AlreadyExists, match="already an active job named run-2"):
        dataflow.launch_preprocess("run-2", f"gs://{BUCKET}/data/n.parquet", "gs://x/", None, {"run_id": "run-2"})
    first = apis.received("POST", "flexTemplates:launch")[0].body["launchParameter"]["parameters"]
    assert "limit" not in first and first["source"] == f"gs://{BUCKET}/data/n.parquet"


# --- Vertex AI: CustomJobs -----------------------------------------------------------------------


def test_a_training_launch_creates_the_documented_custom_job(apis, vertex_jobs):
    manifest = f"gs://{BUCKET}/runs/run-1/preprocess/_MANIFEST.json"
    base = f"gs://{BUCKET}/runs/run-1/train/"
    job = vertex_jobs.launch_training("run-1", manifest, base, ["--batch-size", "64"], {"run_id": "run-1"})
    (request,) = apis.received("POST", r"/customJobs$")
    assert request.path == f"/v1/{PARENT}/customJobs"
    spec = request.body["jobSpec"]
    (pool,) = spec["workerPoolSpecs"]
    assert pool["containerSpec"] == {  # our own image, running exactly what its entry point runs
        "imageUri": CONFIG.training_image,
        "command": ["python", "-m", "trainer.task"],
        "args": ["--manifest", manifest, "--batch-size", "64"],
    }
    assert "pythonPackageSpec" not in pool
    assert pool["replicaCount"] == "1" and pool["machineSpec"]["machineType"]
    assert spec["baseOutputDirectory"] == {"outputUriPrefix": base}
    assert spec["serviceAccount"] == CONFIG.training_service_account
    assert request.body["labels"] == {"run_id": "run-1"} and request.body["displayName"] == "train-run-1"
    assert job.name == f"{PARENT}/customJobs/{job.job_id}" and job.job_id in apis.custom_jobs


def test_training_jobs_are_found_by_run_label_and_read_back_with_state_and_error(apis, vertex_jobs):
    first = vertex_jobs.launch_training("run-a", "gs://m", "gs://b/runs/run-a/train/", [], {"run_id": "run-a"})
    vertex_jobs.launch_training("run-b", "gs://m", "gs://b/runs/run-b/train/", [], {"run_id": "run-b"})
    assert [j.job_id for j in vertex_jobs.find_training_jobs("run-a")] == [first.job_id]
    assert apis.received("GET", r"/customJobs$")[-1].query["filter"] == ['labels.run_id="run-a"']
    assert vertex_jobs.find_training_jobs("run-c") == []

    running = vertex_jobs.get_training_job(first.job_id)
    assert (running.state, running.terminal) == ("JOB_STATE_PENDING", False)
    apis.set_job_state(first.job_id, "JOB_STATE_FAILED", "Replica workerpool0-0 exited with a non-zero status of 137.")
    failed = vertex_jobs.get_training_job(first.job_id)
    assert failed.state == "JOB_STATE_FAILED" and failed.terminal and "status of 137" in failed.error
    assert failed.labels == {"run_id": "run-a"} and failed.base_output_uri == "gs://b/runs/run-a/train/"
    with pytest.raises(NotFound):
        vertex_jobs.get_training_job("999")


# --- Vertex AI: Model Registry and endpoint ------------------------------------------------------


def test_the_first_upload_names_the_model_and_later_ones_add_versions_under_parent_model(apis, models):
    first = models.upload_version("babyweight", f"gs://{BUCKET}/runs/run-1/train/model/", {"run_id": "run-1"})
    second = models.upload_version("babyweight", f"gs://{BUCKET}/runs/run-2/train/model/", {"run_id": "run-2"})
    create, add = (r.body for r in apis.received("POST", r"models:upload$"))
    assert create["modelId"] == "babyweight" and "parentModel" not in create
    assert add["parentModel"] == f"{PARENT}/models/babyweight" and "modelId" not in add
    assert add["model"] == {"displayName": "babyweight", "artifactUri": f"gs://{BUCKET}/runs/run-2/train/model/",
                            "containerSpec": {"imageUri": CONFIG.serving_image, "predictRoute": "/predict",
                                              "healthRoute": "/health", "ports": [{"containerPort": 8080}]},
                            "labels": {"run_id": "run-2"}}
    assert first == ModelVersion(f"{PARENT}/models/babyweight", "1")
    assert second == ModelVersion(f"{PARENT}/models/babyweight", "2")

    assert models.find_version("babyweight", "run-2") == second
    assert apis.received("GET", r":listVersions$")[-1].query["filter"] == ['labels.run_id="run-2"']
    assert models.find_version("babyweight", "run-9") is None
    assert models.find_version("no-such-model", "run-1") is None


def test_an_upload_that_outlasts_the_wait_raises_transient_and_the_retry_finds_the_version(apis):
    slow = VertexModels(CONFIG, api_endpoint=apis.url, credentials=_credentials(), upload_timeout_s=0.5)
    apis.hold_uploads = True
    with pytest.raises(TransientError, match="has not ended"):
        slow.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    assert slow.find_version("babyweight", "run-1") is None
    apis.complete_uploads()
    assert slow.find_version("babyweight", "run-1") == ModelVersion(f"{PARENT}/models/babyweight", "1")


def test_a_deploy_sends_the_traffic_split_and_returns_at_once_then_the_operation_tells_the_end(apis, models):
    champion = apis.add_version(MODEL, f"gs://{BUCKET}/runs/run-0/train/model/", {"run_id": "run-0"})
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100},
                      deployed_models=[{"id": "111", "model": MODEL, "modelVersionId": champion["versionId"]}])
    version = models.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    op = models.start_deploy(version, "babyweight", {"0": 25, "111": 75}, "run-1")
    (request,) = apis.received("POST", r":deployModel$")
    assert request.path == f"/v1/{ENDPOINT}:deployModel"
    assert request.body["trafficSplit"] == {"0": 25, "111": 75}
    deployed = request.body["deployedModel"]
    assert deployed["model"] == f"{MODEL}@2" and deployed["displayName"] == "run-1"
    assert deployed["dedicatedResources"]["machineSpec"] == {"machineType": CONFIG.serving_machine_type}
    assert "automaticResources" not in deployed

    assert op.name.startswith(f"{ENDPOINT}/operations/") and not op.done
    assert not models.get_operation(op.name).done
    new_id = apis.finish_deploy(op.name)
    ended = models.get_operation(op.name)
    assert ended.done and not ended.error and ended.deployed_model_id == new_id
    assert apis.endpoints[ENDPOINT]["trafficSplit"] == {"111": 75, new_id: 25}

    again = models.start_deploy(version, "babyweight", {"0": 100, "111": 0, new_id: 0}, "run-1b")
    apis.finish_deploy(again.name, error="Model server never became ready.")
    failed = models.get_operation(again.name)
    assert failed.done and "never became ready" in failed.error
    with pytest.raises(NotFound):
        models.get_operation(f"{ENDPOINT}/operations/1")
    with pytest.raises(RuntimeError, match="no DeployedModel of"):  # a split naming no deployed model
        models.start_deploy(version, "babyweight", {"0": 50, "999": 50}, "run-1c")


def test_a_version_is_read_by_its_id_or_an_alias_with_its_artifacts_labels_and_aliases(apis, models):
    first = models.upload_version("babyweight", f"gs://{BUCKET}/runs/run-1/train/model/", {"run_id": "run-1"})
    second = models.upload_version("babyweight", f"gs://{BUCKET}/runs/run-2/train/model/",
                                   {"run_id": "run-2", "gate": "blessed"})
    read = models.get_version(second.versioned_name)
    assert read == RegisteredVersion(MODEL, "2", f"gs://{BUCKET}/runs/run-2/train/model/",
                                     {"run_id": "run-2", "gate": "blessed"}, ())
    assert read.versioned_name == second.versioned_name
    assert apis.received("GET", r"/models/")[-1].path == f"/v1/{MODEL}@2"
    # Vertex gives a model's first version the "default" alias; an alias names a version too
    assert models.get_version(first.versioned_name).aliases == ("default",)
    assert models.get_version(f"{MODEL}@default").version_id == "1"
    with pytest.raises(NotFound):
        models.get_version(f"{MODEL}@9")
    with pytest.raises(NotFound):
        models.get_version(f"{PARENT}/models/no-such-model@1")


def test_the_endpoint_tells_its_deployed_models_by_version_and_its_split(apis, models):
    assert models.get_endpoint("babyweight") == EndpointState((), {})
    assert models.get_endpoint("babyweight").champion() is None
    version = models.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    first = apis.finish_deploy(models.start_deploy(version, "babyweight", {"0": 100}, "run-1").name)
    canary = apis.finish_deploy(models.start_deploy(version, "babyweight", {"0": 10, first: 90}, "run-1b").name)
    endpoint = models.get_endpoint("babyweight")
    assert endpoint.deployed == (DeployedModel(first, MODEL, "1"), DeployedModel(canary, MODEL, "1"))
    assert endpoint.traffic_split == {first: 90, canary: 10}
    assert endpoint.champion() == DeployedModel(first, MODEL, "1")
    assert endpoint.champion().versioned_name == version.versioned_name
    assert apis.received("GET", r"/endpoints/")[-1].path == f"/v1/{ENDPOINT}"
    with pytest.raises(NotFound):
        models.get_endpoint("no-such-endpoint")


def test_an_undeploy_sends_the_split_the_endpoint_keeps_and_a_model_with_traffic_needs_one(apis, models):
    apis.add_version(MODEL)
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 90, "222": 10}, deployed_models=[
        {"id": "111", "model": MODEL, "modelVersionId": "1"}, {"id": "222", "model": MODEL, "modelVersionId": "1"}])
    # Vertex refuses to undeploy a model that still takes traffic when the request keeps it there
    with pytest.raises(RuntimeError, match="still has 90% of the traffic") as refused:
        models.undeploy("babyweight", "111", {})
    assert not isinstance(refused.value, (NotFound, TransientError, AlreadyExists))
    assert apis.received("POST", r":undeployModel$")[-1].answer["error"]["status"] == "FAILED_PRECONDITION"
    with pytest.raises(RuntimeError, match="no DeployedModel of"):  # the split names the models kept
        models.undeploy("babyweight", "111", {"333": 100})
    assert len(apis.endpoints[ENDPOINT]["deployedModels"]) == 2

    models.undeploy("babyweight", "111", {"222": 100})  # the canary is promoted
    request = apis.received("POST", r":undeployModel$")[-1]
    assert request.path == f"/v1/{ENDPOINT}:undeployModel"
    assert request.body == {"deployedModelId": "111", "trafficSplit": {"222": 100}}
    assert request.answer["name"].startswith(f"{ENDPOINT}/operations/")  # a long-running operation
    assert models.get_endpoint("babyweight") == EndpointState((DeployedModel("222", MODEL, "1"),), {"222": 100})
    with pytest.raises(NotFound):  # undeployed already (a redelivery)
        models.undeploy("babyweight", "111", {"222": 100})
    models.undeploy("babyweight", "222", {})  # the last model: the split ends empty
    assert apis.received("POST", r":undeployModel$")[-1].body == {"deployedModelId": "222"}  # an empty map is unset
    assert models.get_endpoint("babyweight") == EndpointState((), {})


def test_aliases_move_to_the_version_from_the_versions_that_held_them(apis, models):
    first = models.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    second = models.upload_version("babyweight", "gs://b/runs/run-2/train/model/", {"run_id": "run-2"})
    models.move_aliases(first, ["champion"])
    assert apis.aliases(MODEL) == {"1": ["default", "champion"], "2": []}

    models.move_aliases(second, ["champion", "default"])
    request = apis.received("POST", r":mergeVersionAliases$")[-1]
    assert request.path == f"/v1/{MODEL}@2:mergeVersionAliases"
    assert request.body == {"versionAliases": ["champion", "default"]}
    assert request.answer["versionId"] == "2" and request.answer["name"] == MODEL  # the Model answered
    assert apis.aliases(MODEL) == {"1": [], "2": ["champion", "default"]}
    models.move_aliases(second, ["champion", "default"])  # again (a redelivery): nothing changes
    assert apis.aliases(MODEL) == {"1": [], "2": ["champion", "default"]}
    assert models.get_version(f"{MODEL}@champion").version_id == "2"
    with pytest.raises(NotFound):
        models.move_aliases(ModelVersion(MODEL, "9"), ["champion"])


def test_the_fake_registry_refuses_what_vertex_refuses_of_aliases(apis, models):
    from google.api_core import exceptions as api

    models.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    client = models._models.get()
    with pytest.raises(api.BadRequest, match="default version alias cannot be removed"):
        client.merge_version_aliases(name=f"{MODEL}@1", version_aliases=["-default"])
    with pytest.raises(api.BadRequest, match="must match"):
        client.merge_version_aliases(name=f"{MODEL}@1", version_aliases=["Champion"])
    with pytest.raises(api.BadRequest, match="must name a version"):
        client.merge_version_aliases(name=MODEL, version_aliases=["champion"])
    assert apis.aliases(MODEL) == {"1": ["default"]}


# --- errors --------------------------------------------------------------------------------------

CALLS = {
    "launch_preprocess": (r"flexTemplates:launch", lambda p: p["dataflow"].launch_preprocess(
        "run-e", "bigquery", "gs://x/", None, {"run_id": "run-e"})),
    "launch_training": (r"/customJobs$", lambda p: p["vertex_jobs"].launch_training(
        "run-e", "gs://m", "gs://x/", [], {"run_id": "run-e"})),
    "upload_version": (r"models:upload$", lambda p: p["models"].upload_version(
        "babyweight", "gs://x/model/", {"run_id": "run-e"})),
    "start_deploy": (r":deployModel$", lambda p: p["models"].start_deploy(
        ModelVersion(MODEL, "1"), "babyweight", {"0": 100}, "run-e")),
    "get_version": (r"/models/babyweight@1$", lambda p: p["models"].get_version(f"{MODEL}@1")),
    "get_endpoint": (r"/endpoints/babyweight$", lambda p: p["models"].get_endpoint("babyweight")),
    # a model with no traffic: undeploying it again after the retry is NotFound, so it is not deployed
    "undeploy": (r":undeployModel$", lambda p: p["models"].undeploy("babyweight", "111", {})),
    "move_aliases": (r":mergeVersionAliases$", lambda p: p["models"].move_aliases(
        ModelVersion(MODEL, "1"), ["champion", "default"])),
}
GETS = {"get_version", "get_endpoint"}


@pytest.mark.parametrize("status, kind", [
    (409, AlreadyExists), (429, TransientError), (500, TransientError), (503, TransientError),
    (400, RuntimeError), (403, RuntimeError),
])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_api_errors_arrive_as_the_platform_kinds_with_the_api_message(apis, dataflow, vertex_jobs, models,
                                                                      call, status, kind):
    apis.add_version(MODEL)
    apis.add_endpoint(ENDPOINT, traffic_split={}, deployed_models=[{"id": "111", "model": MODEL, "modelVersionId": "1"}])
    path, invoke = CALLS[call]
    apis.fail("GET" if call in GETS else "POST", path, status, message=f"the fake says {status}")
    with pytest.raises(kind, match=f"the fake says {status}") as raised:
        invoke({"dataflow": dataflow, "vertex_jobs": vertex_jobs, "models": models})
    if kind is RuntimeError:  # a bug or misconfiguration, not one of the kinds stages handle
        assert not isinstance(raised.value, (AlreadyExists, TransientError, NotFound))
    invoke({"dataflow": dataflow, "vertex_jobs": vertex_jobs, "models": models})  # the retry goes through


def test_a_conflict_from_concurrency_is_transient_and_other_errors_pass_through():
    from google.api_core import exceptions as api

    assert isinstance(platform_error(api.Aborted("concurrent update"), "x"), TransientError)
    assert isinstance(platform_error(api.Conflict("exists"), "x"), AlreadyExists)
    assert isinstance(platform_error(api.RetryError("deadline", cause=None), "x"), TransientError)
    own = ValueError("not a Google error")
    assert platform_error(own, "x") is own


# --- Cloud Storage ------------------------------------------------------------------------------


def test_objects_round_trip_with_their_content_type_and_list_sorted_under_a_prefix(storage):
    base = _prefix()
    storage.write(base + "b.json", b'{"b": 1}')
    storage.write(base + "a/c.csv", b"x,y\n", content_type="text/csv")
    storage.write("elsewhere-" + base + "z", b"")
    assert storage.read(base + "b.json") == b'{"b": 1}'
    assert storage.list(base) == [base + "a/c.csv", base + "b.json"]
    blob = storage._client.get().bucket(BUCKET).get_blob(base + "a/c.csv")
    assert blob.content_type == "text/csv"
    assert storage.exists(base + "b.json") and not storage.exists(base + "nope")
    storage.delete(base + "b.json")
    storage.delete(base + "b.json")  # deleting what is gone is fine
    assert storage.list(base) == [base + "a/c.csv"]
    with pytest.raises(NotFound):
        storage.read(base + "b.json")


def test_folders_are_listed_one_level_deep_as_the_local_bucket_lists_them(storage, tmp_path):
    base = _prefix()
    local = LocalStorage(tmp_path)
    for bucket in (storage, local):
        for name in ("a/x.json", "b/c/y.json", "z.json"):
            bucket.write(base + name, b"{}")
    assert storage.list_folders(base) == local.list_folders(base) == [base + "a/", base + "b/"]
    assert storage.list_folders(base + "b/") == [base + "b/c/"]
    assert storage.list_folders(base + "nothing/") == local.list_folders(base + "nothing/") == []


def test_reads_are_bounded_by_max_bytes(storage):
    name = _prefix() + "trigger.json"
    storage.write(name, b"0123456789")
    assert storage.read(name, max_bytes=10) == b"0123456789"
    with pytest.raises(ValueError, match="larger than 9 bytes"):
        storage.read(name, max_bytes=9)
    storage.write(name, b"")
    assert storage.read(name, max_bytes=4) == b""


def test_create_writes_only_when_the_object_is_absent(storage):
    name = _prefix() + "_LAUNCHED"
    assert storage.create(name, b"first") is True
    assert storage.create(name, b"second") is False
    assert storage.read(name) == b"first"


def test_of_concurrent_create_only_writers_exactly_one_wins(storage):
    name = _prefix() + "_LAUNCHED"
    writers = 4
    start = threading.Barrier(writers)
    results: dict[int, bool] = {}

    def write(i: int) -> None:
        start.wait()
        results[i] = storage.create(name, f"writer-{i}".encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == writers and len(winners) == 1
    assert storage.read(name) == f"writer-{winners[0]}".encode()


@pytest.mark.parametrize("status, kind", [(503, TransientError), (429, TransientError), (403, RuntimeError)])
def test_storage_errors_arrive_as_the_platform_kinds(apis, status, kind):
    from google.cloud import storage as gcs

    client = gcs.Client(project=PROJECT, credentials=_credentials(), client_options={"api_endpoint": apis.url})
    flaky = GcsStorage(BUCKET, client, retry_deadline_s=0.5)
    apis.fail("GET", rf"/b/{BUCKET}/o", status, message=f"storage says {status}", times=1000)
    with pytest.raises(kind, match=rf"\b{status}\b"):  # media downloads do not carry the API's message
        flaky.read("runs/r/request.json")
    with pytest.raises(kind, match=f"storage says {status}"):
        flaky.list("runs/")


# --- the stages on the cloud adapters ------------------------------------------------------------


def _ledger_state(platform: Platform, run_id: str) -> str:
    (status,) = RunStore(platform.storage, BUCKET).statuses(run_id)
    return status.state.value


class _PubsubStandIn:
    """The local Cloud Tasks' `deliver`: Pub/Sub's publish endpoint, recording each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self._arrived = threading.Condition()

    def __call__(self, request: dict) -> int:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        return 200

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.requests) >= count, timeout), \
                f"{count} deliveries expected within {timeout} s, got {len(self.requests)}"
            return list(self.requests)


class _Answer:
    def __init__(self, body: dict):
        self.status_code, self._body = 200, body

    def json(self) -> dict:
        return self._body


class _MonitoringSession:
    """Cloud Monitoring's projects.timeSeries.list for MonitoringServingMetrics' `session`: the
    series of Vertex AI's prediction metrics for the figures set per deployed model, each answer
    held against the method's response schema in the monitoring v3 discovery document."""

    def __init__(self, endpoint_id: str):
        self.endpoint_id = endpoint_id
        self.figures: dict[str, dict] = {}
        self.calls: list[dict] = []

    def get(self, url, params=None, timeout=None):
        from functions.serving_metrics import PREDICTION_COUNT, PREDICTION_LATENCIES

        assert url == f"https://monitoring.googleapis.com/v3/projects/{PROJECT}/timeSeries"
        assert f'resource.labels.endpoint_id = "{self.endpoint_id}"' in params["filter"]
        self.calls.append(dict(params))
        metric = params["filter"].split('"')[1]
        interval = {"startTime": params["interval.startTime"], "endTime": params["interval.endTime"]}
        series = []
        for deployed_model_id, figures in self.figures.items():
            labels = {"deployed_model_id": deployed_model_id}
            if metric == PREDICTION_LATENCIES:
                kind, value = ("GAUGE", "DOUBLE"), {"doubleValue": figures["latency_p99_ms"]}
                labels["latency_type"] = "total"
            else:
                count = figures["requests" if metric == PREDICTION_COUNT else "errors"]
                kind, value = ("DELTA", "INT64"), {"int64Value": str(count)}
            series.append({"metric": {"type": metric, "labels": labels},
                           "resource": {"type": "aiplatform.googleapis.com/Endpoint",
                                        "labels": {"resource_container": PROJECT, "location": CONFIG.region,
                                                   "endpoint_id": self.endpoint_id}},
                           "metricKind": kind[0], "valueType": kind[1],
                           "points": [{"interval": interval, "value": value}]})
        answer = {"timeSeries": series} if series else {}
        assert discovery.response_errors("monitoring.projects.timeSeries.list", answer) == []
        return _Answer(answer)


@pytest.fixture
def cloud_tasks():
    """The local Cloud Tasks on 127.0.0.1 with the release queue, delivering to a Pub/Sub stand-in."""
    from local_cloud.tasks.http import CloudTasksServer
    from local_cloud.tasks.service import CloudTasksService

    pubsub = _PubsubStandIn()
    server = CloudTasksServer(CloudTasksService(pubsub))
    try:
        server.service.create_queue(PARENT, {"name": request_bodies.tasks_queue_path(CONFIG)})
        yield server, pubsub
    finally:
        server.close()


def _received(event: dict):
    """The CloudEvent functions-framework hands an entry point for this event."""
    from cloudevents.http import from_http

    headers = {f"ce-{key}": value for key, value in event.items() if key not in ("data", "datacontenttype")}
    headers["Content-Type"] = event["datacontenttype"]
    return from_http(headers, json.dumps(event["data"]))


def test_a_run_goes_from_request_to_deployment_through_the_cloud_adapters(apis, storage, cloud_tasks):
    """Request, preprocessing, training, the gate, a canary beside the serving model, the bake's
    end scheduled on Cloud Tasks and delivered as Pub/Sub's publish, the serving figures read from
    Cloud Monitoring, and the promotion: each API through its real client (MonitoringServingMetrics
    through a stand-in session)."""
    from local_cloud.tasks.pubsub_target import parse_pubsub_publish
    from functions.serving_metrics import MonitoringServingMetrics

    tasks_server, pubsub = cloud_tasks
    credentials = _credentials()
    monitoring = _MonitoringSession(CONFIG.endpoint_id)
    platform = Platform(
        storage=storage,
        jobs=GcpJobs(DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=credentials),
                     VertexJobs(CONFIG, api_endpoint=apis.url, credentials=credentials)),
        models=VertexModels(CONFIG, api_endpoint=apis.url, credentials=credentials),
        tasks=CloudTasksScheduler(CONFIG, api_endpoint=tasks_server.url, credentials=credentials, plain_http=True),
        metrics=MonitoringServingMetrics(PROJECT, session=monitoring),
    )
    # The model that serves: version 1, at all of the endpoint's traffic.
    champion_uri = f"gs://{BUCKET}/runs/run-0/train/model/"
    apis.add_version(MODEL, champion_uri, {"run_id": "run-0", "gate": "blessed"}, aliases=["champion"])
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100},
                      deployed_models=[{"id": "111", "model": MODEL, "modelVersionId": "1", "displayName": "run-0"}])
    # A bake of one second (the request may shorten it), so that the task falls due in the test.
    trigger = StartMessage(event_id=f"m-{uuid.uuid4().hex}", event_time=NOW, topic="mlrelay-start",
                           message_id=uuid.uuid4().hex, data=b'{"limit": 2000, "release": {"bakeSeconds": 1}}')

    started = start.start_run(CONFIG, platform, trigger)
    assert started.action == "launched"
    run_id = started.run_id
    assert start.start_run(CONFIG, platform, trigger).action == "duplicate"
    (launch,) = apis.received("POST", "flexTemplates:launch")
    assert launch.body["launchParameter"]["parameters"] == {
        "source": "bigquery", "out": f"gs://{BUCKET}/runs/{run_id}/preprocess/", "run_id": run_id, "limit": "2000"}
    assert _ledger_state(platform, run_id) == "preprocessing"

    # The pipeline's last act: the manifest, after every shard.
    written = ManifestWritten("e-1", BUCKET, manifest_name(run_id), run_id)
    storage.write(written.object_name, json.dumps({
        "format": "mlrelay.preprocess/v1", "run_id": run_id,
        "splits": {"train": {"shards": ["train.csv-00000-of-00001"], "rows": 1600},
                   "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 400}}}).encode())
    assert training.start_training(CONFIG, platform, written).action == "launched"
    assert training.start_training(CONFIG, platform, written).action == "duplicate"
    (job_id,) = apis.custom_jobs
    job = apis.custom_jobs[job_id]
    assert job["labels"] == {"run_id": run_id}
    args = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    # the serving model, found through the endpoint and the registry, is scored beside the candidate
    assert args[args.index("--champion-model-dir") + 1] == champion_uri
    assert _ledger_state(platform, run_id) == "training"

    # The training job ends, having written its metrics and the comparison the gate reads.
    storage.write(f"runs/{run_id}/train/metrics.json", b'{"eval_rmse": 1.05}')
    slices = {"plurality=Single(1)": (1.04, 1.05, 371), "gestation_weeks<37": (1.31, 1.33, 41),
              "is_male=Unknown": (1.12, 1.13, 35), "plurality=Twins(2)": (1.5, 1.4, 12)}  # too small to judge
    storage.write(f"runs/{run_id}/train/comparison.json", json.dumps({
        "format": "mlrelay-model-comparison/1", "eval_rows": 400, "mean_baseline_rmse": 1.32,
        "candidate": {"rmse": 1.05, "slices": {k: {"rmse": c, "rows": n} for k, (c, _, n) in slices.items()}},
        "champion": {"artifact_uri": champion_uri, "rmse": 1.06,
                     "slices": {k: {"rmse": h, "rows": n} for k, (_, h, n) in slices.items()}},
    }).encode())
    apis.set_job_state(job_id, "JOB_STATE_SUCCEEDED")
    ended = JobEnded("e-2", JobTerminal(JobKind.VERTEX_CUSTOM_JOB, job_id, JobOutcome.SUCCEEDED))
    deploying = training.finish_training(CONFIG, platform, ended)
    assert deploying.action == "launched"
    assert training.finish_training(CONFIG, platform, ended).action == "duplicate"
    (upload,) = apis.received("POST", "models:upload")
    assert upload.body["parentModel"] == MODEL  # a new version of the serving model
    assert upload.body["model"]["artifactUri"] == f"gs://{BUCKET}/runs/{run_id}/train/model/"
    assert upload.body["model"]["labels"] == {"run_id": run_id, "gate": "blessed"}
    (deploy_call,) = apis.received("POST", ":deployModel")
    assert deploy_call.body["deployedModel"]["model"] == f"{MODEL}@2"
    assert deploy_call.body["trafficSplit"] == {"0": 10, "111": 90}  # a canary beside the champion
    assert _ledger_state(platform, run_id) == "deploying"

    # The deployment's audit line arrives later, in another invocation: the bake starts.
    operation = deploying.extra["operation"]
    canary = apis.finish_deploy(operation)
    baking = deploy.finish_deploy(CONFIG, platform, operation, "e-3")
    assert baking.action == "recorded"
    assert deploy.finish_deploy(CONFIG, platform, operation, "e-3").action == "duplicate"  # the task: 409
    assert _ledger_state(platform, run_id) == "baking"
    assert apis.endpoints[ENDPOINT]["trafficSplit"] == {"111": 90, canary: 10}
    (task,) = tasks_server.service.list_tasks(request_bodies.tasks_queue_path(CONFIG), "FULL")["tasks"]
    assert task["name"] == f"{request_bodies.tasks_queue_path(CONFIG)}/tasks/bake-end-{run_id}"
    assert parse_timestamp(task["scheduleTime"]) == parse_timestamp(
        datetime.fromisoformat(baking.extra["bake_ends"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert task["httpRequest"]["url"] == (f"https://pubsub.googleapis.com/v1/projects/{PROJECT}/topics/"
                                          f"{CONFIG.release_topic}:publish")
    assert task["httpRequest"]["oauthToken"]["serviceAccountEmail"] == request_bodies.release_publisher(CONFIG)

    # While it bakes, both models serve; Cloud Monitoring has their figures.
    monitoring.figures = {canary: {"requests": 118, "errors": 0, "latency_p99_ms": 41.5},
                          "111": {"requests": 1062, "errors": 2, "latency_p99_ms": 39.0}}
    (request,) = pubsub.wait_for(1)  # the bake's end falls due: Cloud Tasks calls Pub/Sub's publish
    publish = parse_pubsub_publish(request)
    assert publish.topic == f"projects/{PROJECT}/topics/{CONFIG.release_topic}"
    (message,) = publish.messages
    event = message_published(f"//pubsub.googleapis.com/{publish.topic}", message.data, message_id="4001",
                              attributes=message.attributes)
    bake = decode_release(_received(event))
    assert isinstance(bake, BakeEnded) and (bake.run_id, bake.candidate, bake.champion) == (run_id, canary, "111")

    promoted = release.end_bake(CONFIG, platform, bake)
    assert (promoted.action, promoted.detail) == ("recorded", "promoted")
    assert release.end_bake(CONFIG, platform, bake).action == "duplicate"
    assert len(monitoring.calls) == 3  # requests, errors, p99 latency: each once, for the decision
    assert monitoring.calls[0]["interval.startTime"] <= bake.bake_started.astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    (undeploy_call,) = apis.received("POST", ":undeployModel")
    assert undeploy_call.body == {"deployedModelId": "111", "trafficSplit": {canary: 100}}
    (aliases_call,) = apis.received("POST", ":mergeVersionAliases")
    assert aliases_call.path == f"/v1/{MODEL}@2:mergeVersionAliases"
    assert apis.aliases(MODEL) == {"1": [], "2": ["champion", "default"]}
    assert apis.endpoints[ENDPOINT]["trafficSplit"] == {canary: 100}
    assert [d["id"] for d in apis.endpoints[ENDPOINT]["deployedModels"]] == [canary]
    assert _ledger_state(platform, run_id) == "deployed"
    last = RunStore(storage, BUCKET).releases()[-1]
    assert (last["action"], last["run_id"], last["model_version"]) == ("promoted", run_id, f"{MODEL}@2")
    assert last["from"] == {"111": 90, canary: 10} and last["to"] == {canary: 100} and last["retired"] == ["111"]


# --- configuration and cold start ---------------------------------------------------------------


TRAINER = "europe-west4-docker.pkg.dev/p/mlrelay/trainer:1"
SERVER = "europe-west4-docker.pkg.dev/p/mlrelay/server:1"


def test_the_gcp_platform_needs_its_template_and_images_and_names_what_is_missing():
    with pytest.raises(ConfigError, match="MLRELAY_FLEX_TEMPLATE and MLRELAY_TRAINING_IMAGE and MLRELAY_SERVING_IMAGE"):
        build_platform(Config(platform="gcp", training_image="", serving_image=""))
    with pytest.raises(ConfigError, match="MLRELAY_FLEX_TEMPLATE must be a gs:// URI"):
        build_platform(Config(platform="gcp", flex_template="/tmp/t.json", training_image=TRAINER, serving_image=SERVER))
    with pytest.raises(ConfigError, match="MLRELAY_TRAINING_IMAGE must name an image in a registry"):
        build_platform(Config(platform="gcp", flex_template="gs://b/t.json", serving_image=SERVER))  # the local name
    # the serving image's local default is no image Vertex AI can pull either
    with pytest.raises(ConfigError, match=r"MLRELAY_SERVING_IMAGE must name an image in a registry .*server:TAG.*"
                                          r"'mlrelay-server:local'"):
        build_platform(Config(platform="gcp", flex_template="gs://b/t.json", training_image=TRAINER))


def test_the_functions_and_the_cloud_platform_load_without_the_google_clients():
    code = (
        "import sys\n"
        "import functions.main\n"
        "from functions.adapters import build_platform\n"
        "from functions.config import Config\n"
        "p = build_platform(Config(platform='gcp', flex_template='gs://b/t.json', training_image='europe-west4-docker.pkg.dev/p/mlrelay/trainer:1',"
        " serving_image='europe-west4-docker.pkg.dev/p/mlrelay/server:1'))\n"
        "print(*(type(x).__name__ for x in (p.storage, p.jobs, p.models, p.tasks, p.metrics)))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.storage', 'google.cloud.aiplatform',"
        " 'google.cloud.dataflow', 'google.cloud.tasks', 'google.auth'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds, loaded = result.stdout.splitlines()
    assert kinds == "GcsStorage GcpJobs VertexModels CloudTasksScheduler MonitoringServingMetrics"
    assert loaded == "[]"
