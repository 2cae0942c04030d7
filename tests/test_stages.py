"""The stages' decisions, called directly: idempotency, rejection, and what each stage launches.

Storage is the real local adapter on a temporary bucket directory; the job and model APIs (the
network boundary) are fakes that record what they were asked and can fail on demand.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest

from events.ledger import LedgerEvent, fold
from events.log_entries import JobKind, Outcome, JobTerminal
from functions import stages
from functions.config import Config
from functions.local_adapters import LocalStorage
from functions.platform import (
    AlreadyExists,
    DeployOperation,
    JobRef,
    ModelVersion,
    Platform,
    TrainingJob,
    TransientError,
)

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


class FakeJobs:
    def __init__(self):
        self.preprocess_calls = []
        self.training_calls = []
        self.jobs: dict[str, TrainingJob] = {}
        self.fail_next: Exception | None = None
        self.launch_delay_s = 0.0
        self.lock = threading.Lock()

    def _maybe_fail(self):
        time.sleep(self.launch_delay_s)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def launch_preprocess(self, run_id, source, out_uri, limit, labels):
        self._maybe_fail()
        with self.lock:
            self.preprocess_calls.append((run_id, source, out_uri, limit, labels))
            return JobRef(f"df-{len(self.preprocess_calls)}", run_id, "preprocess")

    def launch_training(self, run_id, manifest_uri, base_output_uri, trainer_args, labels):
        self._maybe_fail()
        with self.lock:
            self.training_calls.append((run_id, manifest_uri, base_output_uri, trainer_args, labels))
            job_id = f"{1000 + len(self.training_calls)}"
            self.jobs[job_id] = TrainingJob(job_id, f"projects/p/locations/r/customJobs/{job_id}",
                                            "JOB_STATE_RUNNING", dict(labels), base_output_uri)
            return JobRef(job_id, self.jobs[job_id].name, "training")

    def find_training_jobs(self, run_id):
        return [JobRef(j.job_id, j.name, "training") for j in self.jobs.values() if j.labels.get("run_id") == run_id]

    def get_training_job(self, job_id):
        return self.jobs[job_id]

    def finish(self, job_id, state, error=""):
        job = self.jobs[job_id]
        self.jobs[job_id] = TrainingJob(job.job_id, job.name, state, job.labels, job.base_output_uri, error)


class FakeModels:
    def __init__(self):
        self.model_created_concurrently = False
        self.uploads = []
        self.deploys = []
        self.operations: dict[str, DeployOperation] = {}

    def upload_version(self, model_name, artifact_uri, labels):
        if self.model_created_concurrently:
            # another run created the model after our look: this upload (as a new model) is refused
            self.model_created_concurrently = False
            raise AlreadyExists(f"model {model_name} already exists")
        self.uploads.append((model_name, artifact_uri, labels))
        return ModelVersion(f"projects/p/locations/r/models/{model_name}", str(len(self.uploads)))

    def find_version(self, model_name, run_id):
        for i, (name, _, labels) in enumerate(self.uploads):
            if name == model_name and labels.get("run_id") == run_id:
                return ModelVersion(f"projects/p/locations/r/models/{name}", str(i + 1))
        return None

    def start_deploy(self, version, endpoint_id, traffic_percent, display_name):
        self.deploys.append((version, endpoint_id, traffic_percent, display_name))
        name = f"projects/p/locations/r/endpoints/{endpoint_id}/operations/{len(self.deploys)}"
        self.operations[name] = DeployOperation(name)
        return self.operations[name]

    def get_operation(self, name):
        return self.operations[name]


@pytest.fixture
def env(tmp_path):
    config = Config(bucket="b", local_root=str(tmp_path), local_api="http://127.0.0.1:1")
    storage = LocalStorage(tmp_path / "b")
    platform = Platform(storage, FakeJobs(), FakeModels())
    return config, platform


def message_trigger(data: bytes, message_id: str = "m-1") -> stages.StartTrigger:
    return stages.StartTrigger(origin="message", event_id=message_id, event_time=NOW, raw=data,
                               topic="mlrelay-start", message_id=message_id)


def ledger(platform, run_id):
    return [LedgerEvent.from_json(platform.storage.read(n)) for n in platform.storage.list(f"runs/{run_id}/events/")]


def test_a_valid_message_records_the_request_and_launches_preprocessing(env):
    config, platform = env
    outcome = stages.start_run(config, platform, message_trigger(b'{"limit": 1000, "source": "data/x.parquet"}'))
    assert outcome.action == "launched"
    doc = json.loads(platform.storage.read(f"runs/{outcome.run_id}/request.json"))
    assert doc["request"]["limit"] == 1000 and doc["origin"]["kind"] == "message"
    (run_id, source, out_uri, limit, labels), = platform.jobs.preprocess_calls
    assert source == "gs://b/data/x.parquet" and out_uri == f"gs://b/runs/{run_id}/preprocess/"
    assert limit == 1000 and labels == {"run_id": run_id}
    assert fold(ledger(platform, run_id)).state.value == "preprocessing"


def test_a_redelivered_message_maps_to_the_same_run_and_launches_nothing_more(env):
    config, platform = env
    first = stages.start_run(config, platform, message_trigger(b"{}"))
    again = stages.start_run(config, platform, message_trigger(b"{}"))
    assert again.run_id == first.run_id and again.action == "duplicate"
    assert len(platform.jobs.preprocess_calls) == 1


def test_concurrent_duplicates_launch_once(env):
    config, platform = env
    platform.jobs.launch_delay_s = 0.2
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(stages.start_run(config, platform, message_trigger(b"{}"))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(platform.jobs.preprocess_calls) == 1
    assert sorted(o.action for o in outcomes).count("launched") == 1


def test_a_duplicate_that_overtakes_the_requests_writer_still_leaves_the_ledger_in_order(env):
    """Delivery A creates request.json; delivery B runs to the launch while A is held up before
    its "requested" record. The records still fold as requested -> preprocessing."""
    config, platform = env
    trigger = message_trigger(b"{}")
    overtaken = []

    class OvertakenStorage(LocalStorage):
        def create(self, name, data, content_type="application/json"):
            created = super().create(name, data, content_type)
            if created and name.endswith("/request.json") and not overtaken:
                overtaken.append(stages.start_run(config, platform, trigger))  # B, while A waits here
                time.sleep(0.01)
            return created

    platform = Platform(OvertakenStorage(platform.storage.root), platform.jobs, platform.models)
    first = stages.start_run(config, platform, trigger)
    assert overtaken[0].action == "launched" and first.action != "launched"
    assert len(platform.jobs.preprocess_calls) == 1
    status = fold(ledger(platform, first.run_id))
    assert status.state.value == "preprocessing"
    assert not status.anomalies, status.anomalies


@pytest.mark.parametrize("raw, words", [
    (b"not json", "not JSON"),
    (b'{"batchSize": 0}', "batchSize"),
    (b'{"bogus": 1}', "bogus"),
    (b"", "empty"),
    (bytes(range(256)) * 4, ""),
    (b'{"source": "../../etc/passwd.csv"}', "source"),
])
def test_a_malformed_request_is_rejected_with_a_reason_and_launches_nothing(env, raw, words):
    config, platform = env
    outcome = stages.start_run(config, platform, message_trigger(raw))
    assert outcome.action == "rejected" and words in outcome.detail
    status = fold(ledger(platform, outcome.run_id))
    assert status.state.value == "rejected" and status.reason
    assert platform.jobs.preprocess_calls == []


def test_trigger_files_are_read_checked_for_size_and_must_be_under_triggers(env):
    config, platform = env
    platform.storage.write("triggers/ok.json", b'{"limit": 5}')
    ok = stages.start_run(config, platform, stages.StartTrigger(
        "trigger-file", "e1", NOW, None, bucket="b", object_name="triggers/ok.json", generation=7, object_size=12))
    assert ok.action == "launched"
    big = stages.start_run(config, platform, stages.StartTrigger(
        "trigger-file", "e2", NOW, None, bucket="b", object_name="triggers/big.json", generation=8,
        object_size=10 << 20))
    assert big.action == "rejected" and "64 KiB" in big.detail
    gone = stages.start_run(config, platform, stages.StartTrigger(
        "trigger-file", "e3", NOW, None, bucket="b", object_name="triggers/gone.json", generation=9))
    assert gone.action == "rejected" and "no longer exists" in gone.detail
    outside = stages.start_run(config, platform, stages.StartTrigger(
        "trigger-file", "e4", NOW, None, bucket="b", object_name="runs/x/request.json", generation=1))
    assert outside.action == "ignored"
    assert len(platform.jobs.preprocess_calls) == 1


def test_a_transient_launch_failure_raises_and_the_retry_launches(env):
    config, platform = env
    platform.jobs.fail_next = TransientError("503")
    with pytest.raises(TransientError):
        stages.start_run(config, platform, message_trigger(b"{}"))
    assert stages.start_run(config, platform, message_trigger(b"{}")).action == "launched"
    assert len(platform.jobs.preprocess_calls) == 1


def test_a_409_from_the_job_api_counts_as_done(env):
    config, platform = env
    platform.jobs.fail_next = AlreadyExists("job name in use")
    assert stages.start_run(config, platform, message_trigger(b"{}")).action == "duplicate"


def write_manifest(platform, run_id, **override):
    manifest = {"format": "mlrelay.preprocess/v1", "run_id": run_id,
                "splits": {"train": {"shards": ["train.csv-00000-of-00001"], "rows": 10},
                           "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 4}}}
    manifest.update(override)
    platform.storage.write(f"runs/{run_id}/preprocess/_MANIFEST.json", json.dumps(manifest).encode())


class CountingStorage(LocalStorage):
    reads = 0

    def read(self, name, max_bytes=None):
        CountingStorage.reads += 1
        return super().read(name, max_bytes)


def test_other_objects_are_ignored_without_being_read(env, tmp_path):
    config, platform = env
    platform.storage = CountingStorage(tmp_path / "b")
    for name in ["runs/r/preprocess/train.csv-00000-of-00001", "triggers/x.json", "data/natality.parquet",
                 "runs/run-20261127-050000-abcdef0123/events/x.json", "runs/a/b/preprocess/_MANIFEST.json"]:
        assert stages.start_training(config, platform, "b", name, "e").action == "ignored"
    assert CountingStorage.reads == 0 and platform.jobs.training_calls == []


def test_a_manifest_launches_training_once_with_the_run_label(env):
    config, platform = env
    run = stages.start_run(config, platform, message_trigger(b'{"batchSize": 64}')).run_id
    write_manifest(platform, run)
    name = f"runs/{run}/preprocess/_MANIFEST.json"
    first = stages.start_training(config, platform, "b", name, "e1")
    second = stages.start_training(config, platform, "b", name, "e1")
    assert (first.action, second.action) == ("launched", "duplicate")
    (run_id, manifest_uri, base, args, labels), = platform.jobs.training_calls
    assert manifest_uri == f"gs://b/{name}" and base == f"gs://b/runs/{run}/train/"
    assert labels == {"run_id": run} and args[args.index("--batch-size") + 1] == "64"
    assert fold(ledger(platform, run)).state.value == "training"


def test_a_bad_manifest_fails_the_run_and_launches_nothing(env):
    config, platform = env
    run = stages.start_run(config, platform, message_trigger(b"{}")).run_id
    write_manifest(platform, run, splits={"train": {"shards": [], "rows": 0}})
    outcome = stages.start_training(config, platform, "b", f"runs/{run}/preprocess/_MANIFEST.json", "e")
    assert outcome.action == "rejected" and "train" in outcome.detail
    assert fold(ledger(platform, run)).state.value == "failed"
    assert platform.jobs.training_calls == []


def training_run(config, platform):
    run = stages.start_run(config, platform, message_trigger(b"{}")).run_id
    write_manifest(platform, run)
    stages.start_training(config, platform, "b", f"runs/{run}/preprocess/_MANIFEST.json", "e")
    job_id = platform.jobs.training_calls[0] and next(iter(platform.jobs.jobs))
    return run, job_id


def terminal(job_id, outcome=Outcome.SUCCEEDED):
    return JobTerminal(JobKind.VERTEX_CUSTOM_JOB, job_id, outcome)


def test_the_log_line_is_only_a_doorbell_the_api_decides(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    with pytest.raises(TransientError):
        stages.finish_training(config, platform, terminal(job_id), "e")  # API still says RUNNING
    assert platform.models.uploads == []


def test_a_failed_training_job_fails_the_run_and_deploys_nothing(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    platform.jobs.finish(job_id, "JOB_STATE_FAILED", "OOM")
    outcome = stages.finish_training(config, platform, terminal(job_id, Outcome.FAILED), "e")
    assert outcome.action == "recorded"
    status = fold(ledger(platform, run))
    assert status.state.value == "failed" and "OOM" in status.reason
    assert platform.models.uploads == [] and platform.models.deploys == []


def test_success_registers_one_version_and_starts_one_deploy_then_the_operation_ends_it(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    platform.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")
    platform.storage.write(f"runs/{run}/train/metrics.json", b'{"eval_rmse": 1.01}')
    for _ in range(3):
        stages.finish_training(config, platform, terminal(job_id), "e")
    assert len(platform.models.uploads) == 1 and len(platform.models.deploys) == 1
    model_name, artifact, labels = platform.models.uploads[0]
    assert artifact == f"gs://b/runs/{run}/train/model/" and labels == {"run_id": run}
    assert fold(ledger(platform, run)).state.value == "deploying"

    op_name = next(iter(platform.models.operations))
    platform.models.operations[op_name] = DeployOperation(op_name, done=True, deployed_model_id="77")
    assert stages.finish_deploy(config, platform, op_name, "e").action == "recorded"
    assert stages.finish_deploy(config, platform, op_name, "e").action == "duplicate"
    assert fold(ledger(platform, run)).state.value == "deployed"


def test_a_failed_deploy_fails_the_run(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    platform.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")
    stages.finish_training(config, platform, terminal(job_id), "e")
    op_name = next(iter(platform.models.operations))
    platform.models.operations[op_name] = DeployOperation(op_name, done=True, error="model failed to load")
    stages.finish_deploy(config, platform, op_name, "e")
    status = fold(ledger(platform, run))
    assert status.state.value == "failed" and "model failed to load" in status.reason


def test_an_unknown_operation_or_unlabelled_job_is_ignored(env):
    config, platform = env
    assert stages.finish_deploy(config, platform, "projects/p/locations/r/endpoints/e/operations/9", "e").action == "ignored"
    platform.jobs.jobs["5"] = TrainingJob("5", "n", "JOB_STATE_SUCCEEDED", {}, "gs://b/x/")
    assert stages.finish_training(config, platform, terminal("5"), "e").action == "ignored"


def test_a_dead_marker_is_taken_over_after_its_lease(env, monkeypatch):
    config, platform = env
    platform.storage.create("runs/r/m", json.dumps({"owner": "dead", "claimed": time.time() - 10_000}).encode())
    how, job = stages.launch_once(platform, "runs/r/m", lambda: None, lambda: "job-1")
    assert (how, job) == ("launched", "job-1")
    platform.storage.write("runs/r/n", json.dumps({"owner": "alive", "claimed": time.time()}).encode())
    assert stages.launch_once(platform, "runs/r/n", lambda: None, lambda: "job-2") == ("in-flight", None)


def test_a_model_created_by_another_run_meanwhile_is_uploaded_to_as_a_new_version(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    platform.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")
    platform.models.model_created_concurrently = True
    outcome = stages.finish_training(config, platform, terminal(job_id), "e")
    assert outcome.action == "launched"
    assert len(platform.models.uploads) == 1 and len(platform.models.deploys) == 1
    assert fold(ledger(platform, run)).state.value == "deploying"
