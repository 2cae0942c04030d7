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
from functions.run_store import RunStore, manifest_name
from functions.stages import deploy, start, training
from functions.triggers import JobEnded, ManifestWritten, StartMessage
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
from functions.platform import AlreadyExists, ModelVersion, NotFound, Platform, TransientError

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


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
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100}, deployed_models=[{"id": "111", "model": "old@1"}])
    version = models.upload_version("babyweight", "gs://b/runs/run-1/train/model/", {"run_id": "run-1"})
    op = models.start_deploy(version, "babyweight", 25, "run-1")
    (request,) = apis.received("POST", r":deployModel$")
    assert request.path == f"/v1/{ENDPOINT}:deployModel"
    assert request.body["trafficSplit"] == {"0": 25, "111": 75}
    deployed = request.body["deployedModel"]
    assert deployed["model"] == f"{PARENT}/models/babyweight@1" and deployed["displayName"] == "run-1"
    assert deployed["dedicatedResources"]["machineSpec"] == {"machineType": CONFIG.serving_machine_type}
    assert "automaticResources" not in deployed

    assert op.name.startswith(f"{ENDPOINT}/operations/") and not op.done
    assert not models.get_operation(op.name).done
    new_id = apis.finish_deploy(op.name)
    ended = models.get_operation(op.name)
    assert ended.done and not ended.error and ended.deployed_model_id == new_id

    again = models.start_deploy(version, "babyweight", 100, "run-1b")
    apis.finish_deploy(again.name, error="Model server never became ready.")
    failed = models.get_operation(again.name)
    assert failed.done and "never became ready" in failed.error
    with pytest.raises(NotFound):
        models.get_operation(f"{ENDPOINT}/operations/1")


# --- errors --------------------------------------------------------------------------------------

CALLS = {
    "launch_preprocess": (r"flexTemplates:launch", lambda p: p["dataflow"].launch_preprocess(
        "run-e", "bigquery", "gs://x/", None, {"run_id": "run-e"})),
    "launch_training": (r"/customJobs$", lambda p: p["vertex_jobs"].launch_training(
        "run-e", "gs://m", "gs://x/", [], {"run_id": "run-e"})),
    "upload_version": (r"models:upload$", lambda p: p["models"].upload_version(
        "babyweight", "gs://x/model/", {"run_id": "run-e"})),
    "start_deploy": (r":deployModel$", lambda p: p["models"].start_deploy(
        ModelVersion(f"{PARENT}/models/babyweight", "1"), "babyweight", 100, "run-e")),
}


@pytest.mark.parametrize("status, kind", [
    (409, AlreadyExists), (429, TransientError), (500, TransientError), (503, TransientError),
    (400, RuntimeError), (403, RuntimeError),
])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_api_errors_arrive_as_the_platform_kinds_with_the_api_message(apis, dataflow, vertex_jobs, models,
                                                                      call, status, kind):
    apis.models[f"{PARENT}/models/babyweight"] = [{"name": f"{PARENT}/models/babyweight", "versionId": "1",
                                                   "displayName": "babyweight"}]
    path, invoke = CALLS[call]
    apis.fail("POST", path, status, message=f"the fake says {status}")
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


def test_a_run_goes_from_request_to_deployment_through_the_cloud_adapters(apis, storage):
    credentials = _credentials()
    platform = Platform(
        storage=storage,
        jobs=GcpJobs(DataflowJobs(CONFIG, api_endpoint=apis.url, credentials=credentials),
                     VertexJobs(CONFIG, api_endpoint=apis.url, credentials=credentials)),
        models=VertexModels(CONFIG, api_endpoint=apis.url, credentials=credentials),
    )
    apis.add_endpoint(ENDPOINT, traffic_split={"111": 100}, deployed_models=[{"id": "111", "model": "old@1"}])
    trigger = StartMessage(event_id=f"m-{uuid.uuid4().hex}", event_time=NOW, topic="mlrelay-start",
                           message_id=uuid.uuid4().hex, data=b'{"limit": 2000}')

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
    assert apis.custom_jobs[job_id]["labels"] == {"run_id": run_id}
    assert _ledger_state(platform, run_id) == "training"

    # The training job ends; its log line reaches the third function.
    storage.write(f"runs/{run_id}/train/metrics.json", b'{"eval_rmse": 1.05}')
    apis.set_job_state(job_id, "JOB_STATE_SUCCEEDED")
    ended = JobEnded("e-2", JobTerminal(JobKind.VERTEX_CUSTOM_JOB, job_id, JobOutcome.SUCCEEDED))
    deploying = training.finish_training(CONFIG, platform, ended)
    assert deploying.action == "launched"
    assert training.finish_training(CONFIG, platform, ended).action == "duplicate"
    (upload,) = apis.received("POST", "models:upload")
    assert upload.body["model"]["artifactUri"] == f"gs://{BUCKET}/runs/{run_id}/train/model/"
    (deploy_call,) = apis.received("POST", ":deployModel")
    assert deploy_call.body["trafficSplit"] == {"0": 100, "111": 0}
    assert _ledger_state(platform, run_id) == "deploying"

    # The deployment's audit line arrives later, in another invocation.
    operation = deploying.extra["operation"]
    deployed_id = apis.finish_deploy(operation)
    assert deploy.finish_deploy(CONFIG, platform, operation, "e-3").action == "recorded"
    assert deploy.finish_deploy(CONFIG, platform, operation, "e-3").action == "duplicate"
    assert _ledger_state(platform, run_id) == "deployed"
    assert apis.endpoints[ENDPOINT]["trafficSplit"] == {deployed_id: 100}


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
        "print(type(p.storage).__name__, type(p.jobs).__name__, type(p.models).__name__)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.storage', 'google.cloud.aiplatform',"
        " 'google.cloud.dataflow'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds, loaded = result.stdout.splitlines()
    assert kinds == "GcsStorage GcpJobs VertexModels"
    assert loaded == "[]"
