"""The real chain end to end through the local cloud: functions-framework servers, the broker,
Beam on DirectRunner, TensorFlow training and the local endpoint, on a small sample.

One local cloud serves the whole module, and it delivers EVERY event twice at the same time, so
every run here also proves that duplicates launch nothing twice.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from functions.config import Config
from functions.local_adapters import LocalStorage
from local_cloud.cloud import LocalCloud, LocalCloudSettings
from local_cloud.scheduler import ScheduleEntry
from functions.run_store import RunStore, manifest_name, request_name
from mlrelay.demo import SAMPLE_INSTANCES, ensure_sample, predict
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

SMALL_TRAINING = {"numTrainExamples": 3000, "numEvalExamples": 1000, "numEvals": 1, "batchSize": 256}
RUN_TIMEOUT_S = 420


def _first_cron_minute() -> tuple[str, timedelta]:
    """A daily cron minute, and the clock shift that puts it 3 s from now: it fires once."""
    now = datetime.now(timezone.utc)
    due = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    return f"{due.minute} {due.hour} * * *", due - now - timedelta(seconds=3)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("local-cloud")
    cron, shift = _first_cron_minute()
    # The first test starts three runs at once (one per origin) and judges them side by side; the
    # cap on active runs has its own tests (tests/functions/stages/test_admission.py).
    config = Config(max_active_runs=3)
    body = json.dumps({**SMALL_TRAINING, "source": "data/natality.parquet"}).encode()
    settings = LocalCloudSettings(
        root=root, config=config, duplicate_deliveries=2, min_backoff_s=0.2, max_backoff_s=2.0,
        schedules=[ScheduleEntry("retrain", cron, config.start_topic, body)],
        scheduler_now=lambda: datetime.now(timezone.utc) + shift,
    )
    ensure_sample(root / "buckets" / config.bucket, rows=4000, seed=3)
    local = LocalCloud(settings).start()
    yield local
    local.stop()
    for name, proc in local.processes.items():
        assert proc.poll() is not None, f"function {name} still running after stop"
    for job in local.jobs.all():
        assert job.process is None or job.process.poll() is not None, f"job {job.job_id} still running after stop"


def storage_of(cloud) -> LocalStorage:
    return LocalStorage(cloud.bucket_dir)


def runs_of(cloud) -> RunStore:
    return RunStore(storage_of(cloud), cloud.config.bucket)


def wait_for(predicate, timeout_s: float, what: str):
    return wait_until(predicate, timeout_s, what, interval_s=0.25)


def run_state(cloud, run_id: str):
    statuses = runs_of(cloud).statuses(run_id)
    return statuses[0] if statuses else None


def wait_terminal(cloud, run_id: str, timeout_s: float = RUN_TIMEOUT_S):
    def done():
        status = run_state(cloud, run_id)
        return status if status is not None and status.terminal else None
    return wait_for(done, timeout_s, f"run {run_id} to end")


def upload_trigger(cloud, name: str, data: bytes) -> str:
    storage_of(cloud).write(f"triggers/{name}", data)
    uri = f"gs://{cloud.config.bucket}/triggers/{name}"
    return wait_for(lambda: runs_of(cloud).find_run_for_trigger(uri) or _rejected_run(cloud, uri), 60,
                    f"a run for {uri}")


def _rejected_run(cloud, uri: str) -> str | None:
    """A rejected trigger has no request.json: find its run by the ledger record's origin."""
    runs = runs_of(cloud)
    for status in runs.statuses():
        if status.state.value != "rejected":
            continue
        if any(record.details.get("origin", {}).get("object") == uri
               for record in runs.ledger(status.run_id).get(status.run_id, [])):
            return status.run_id
    return None


def publish_start(cloud, body: dict) -> str:
    """Publish with the real google-cloud-pubsub client, through PUBSUB_EMULATOR_HOST."""
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{cloud.ports['pubsub']}"
    try:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(cloud.config.project, cloud.config.start_topic)
        return publisher.publish(topic, json.dumps(body).encode()).result(timeout=30)
    finally:
        del os.environ["PUBSUB_EMULATOR_HOST"]


def run_for_message(cloud, message_id: str) -> str:
    def find():
        runs = runs_of(cloud)
        return next((run_id for run_id in runs.run_ids()
                     if runs.request_origin(run_id).get("messageId") == message_id), None)
    return wait_for(find, 60, f"a run for message {message_id}")


def assert_launched_once(cloud, run_id: str) -> None:
    dataflow = [j for j in cloud.jobs.all() if j.kind == "dataflow" and j.display_name == run_id]
    training = cloud.jobs.list_custom_jobs({"run_id": run_id})
    versions = [v for v in cloud.models.list_model_versions("babyweight")["models"]
                if v.get("labels", {}).get("run_id") == run_id]
    deploys = [e for e in runs_of(cloud).ledger(run_id).get(run_id, []) if e.state.value == "deploying"]
    assert (len(dataflow), len(training), len(versions), len(deploys)) == (1, 1, 1, 1), (
        f"run {run_id}: {len(dataflow)} preprocessing jobs, {len(training)} training jobs, "
        f"{len(versions)} model versions, {len(deploys)} deployments")


def assert_one_model_serves(cloud) -> dict:
    """Once every run has ended, the endpoint holds exactly one deployed model, at 100 %."""
    endpoint = cloud.models.get_endpoint(cloud.config.endpoint_id)
    assert len(endpoint["deployedModels"]) == 1, endpoint
    assert list(endpoint["trafficSplit"].values()) == [100], endpoint
    return endpoint["deployedModels"][0]


def test_each_origin_starts_a_run_that_is_deployed_once_and_served(cloud):
    good = json.dumps({**SMALL_TRAINING, "source": "data/natality.parquet"}).encode()
    by_file = upload_trigger(cloud, "by-file.json", good)
    by_message = run_for_message(cloud, publish_start(cloud, {**SMALL_TRAINING}))
    by_schedule = wait_for(
        lambda: next((s.run_id for s in runs_of(cloud).statuses()
                      if s.run_id not in (by_file, by_message) and s.state.value != "rejected"), None),
        90, "the scheduled run")
    # Three runs at once: the first to finish deploys alone. The others were judged at the gate
    # against no champion (there was none when they started training), so they are not deployed
    # beside the one that now serves; nor is one that finishes while a canary bakes (never more
    # than two deployed models). Each says why.
    outcomes = {}
    for run_id in (by_file, by_message, by_schedule):
        status = wait_terminal(cloud, run_id)
        outcomes[run_id] = status.state.value
        assert not status.anomalies
        assert status.state.value == "deployed" or (
            status.state.value == "rejected" and ("a canary is baking" in status.reason
                                                  or "start the run again" in status.reason)), (
            f"{run_id}: {status.state.value} ({status.reason})")
        metrics = runs_of(cloud).read_metrics(run_id)
        assert metrics["eval_rmse"] < metrics["baseline_rmse"]
        if status.state.value == "deployed":
            assert {"request", "preprocess", "train", "deploy"} <= set(status.stages)
            assert_launched_once(cloud, run_id)
    assert "deployed" in outcomes.values()
    served = assert_one_model_serves(cloud)
    assert served["displayName"] in [r for r, state in outcomes.items() if state == "deployed"]

    answer = predict(cloud.endpoint_url, SAMPLE_INSTANCES)
    assert len(answer["predictions"]) == len(SAMPLE_INSTANCES)
    assert all(1.0 < p < 12.0 for p in answer["predictions"])
    assert answer["deployedModelId"]


def test_a_burst_of_one_message_and_of_one_trigger_file_starts_one_run_each(cloud):
    body = {**SMALL_TRAINING, "seed": 11}
    message_ids = [publish_start(cloud, body) for _ in range(5)]
    # a refused repeat has no request.json: its run is found by the ledger's origin
    runs_started = [wait_for(lambda: _runs_with_origin(cloud, "messageId", message_id, 1), 60,
                             f"a run for message {message_id}")[0] for message_id in message_ids]
    data = json.dumps({**SMALL_TRAINING, "seed": 12}).encode()
    uploads = []
    for _ in range(5):
        storage_of(cloud).write("triggers/burst.json", data)
        uri = f"gs://{cloud.config.bucket}/triggers/burst.json"
        uploads.append(wait_for(lambda: _runs_with_origin(cloud, "object", uri, len(uploads) + 1), 60,
                                "a run for the upload")[-1])
    for burst in (runs_started, uploads):
        states = {run_id: wait_terminal(cloud, run_id) for run_id in burst}
        went = [r for r, s in states.items() if s.state.value != "rejected" or "not run again" not in s.reason]
        assert len(went) == 1, {r: (s.state.value, s.reason) for r, s in states.items()}
        assert len([j for j in cloud.jobs.all() if j.kind == "dataflow" and j.display_name in burst]) == 1


def _runs_with_origin(cloud, key: str, value: str, at_least: int) -> list[str] | None:
    """The runs (oldest first) started or refused for an origin (a message id, a trigger object),
    once there are at least `at_least` of them."""
    found = []
    runs = runs_of(cloud)
    for status in runs.statuses():
        records = runs.ledger(status.run_id).get(status.run_id, [])
        if any(r.details.get("origin", {}).get(key) == value for r in records):
            found.append(status.run_id)
    return found if len(found) >= at_least else None


@pytest.mark.parametrize("name, data, reason", [
    ("not-json.json", b"{limit: 5", "not JSON"),
    ("wrong-type.json", b'{"batchSize": "big"}', "batchSize"),
    ("out-of-range.json", b'{"learningRate": 5}', "learningRate"),
    ("unknown-key.json", b'{"epochs": 3}', "epochs"),
    ("empty.json", b"", "empty"),
    ("random.bin", os.urandom(2048), ""),
    ("huge.json", b'{"limit": 1' + b"0" * (200 * 1024) + b"}", "64 KiB"),
    ("escape.json", b'{"source": "../../../etc/passwd.csv"}', "source"),
    ("absolute.json", b'{"source": "/etc/natality.parquet"}', "source"),
])
def test_malformed_trigger_files_are_rejected_once_and_launch_nothing(cloud, name, data, reason):
    cloud.broker.wait_idle(10)
    seen = len(cloud.broker.deliveries())
    run_id = upload_trigger(cloud, name, data)
    status = wait_terminal(cloud, run_id, 60)
    assert status.state.value == "rejected" and reason in status.reason
    assert not storage_of(cloud).exists(request_name(run_id))
    assert not [j for j in cloud.jobs.all() if j.display_name == run_id]
    cloud.broker.wait_idle(10)
    retried = [d for d in cloud.broker.deliveries()[seen:]
               if d.subscription == "eventarc-start-pipeline" and d.outcome != "acked"]
    assert retried == [], "a rejected request must be acknowledged, not retried"


def test_objects_outside_the_expected_prefixes_start_nothing(cloud):
    before = {s.run_id for s in runs_of(cloud).statuses()}
    storage = storage_of(cloud)
    storage.write("data/notes.json", b'{"limit": 5}')
    storage.write(manifest_name("run-20990101-000000-0000000000") + ".bak", b"{}")
    storage.write("packages/trainer.json", b"{}")
    cloud.broker.wait_idle(10)
    time.sleep(1)
    assert {s.run_id for s in runs_of(cloud).statuses()} == before


def test_a_preprocessing_failure_ends_the_run_failed(cloud):
    run_id = run_for_message(cloud, publish_start(cloud, {**SMALL_TRAINING, "source": "data/missing.parquet"}))
    status = wait_terminal(cloud, run_id, 180)
    assert status.state.value == "failed" and "Dataflow" in status.reason
    # The source cannot be read, so the launch fails before any pipeline runs: the job's end is
    # the launcher's line, as a Flex Template logs it, not "Workflow failed.".
    assert "Error occurred in the launcher container" in status.reason, status.reason
    assert cloud.jobs.list_custom_jobs({"run_id": run_id}) == []


def test_a_transient_api_fault_is_retried_and_the_run_completes_once(cloud):
    cloud.api.inject_fault("flexTemplates:launch", status=503, count=2)
    # a request of its own (not a repeat for the debounce guard) whose gate is lenient: this test is
    # about the retried launch, and a small model of another run may score a few % apart
    lenient = {"release": {"tolerance": 0.5, "sliceTolerance": 0.5}}
    run_id = run_for_message(cloud, publish_start(cloud, {**SMALL_TRAINING, **lenient}))
    status = wait_terminal(cloud, run_id)
    assert status.state.value == "deployed", status.reason
    assert [s for _, s in cloud.api.fault_log] == [503, 503]
    retried = [d for d in cloud.broker.deliveries() if d.subscription == "eventarc-start-pipeline"
               and d.outcome == "retrying"]
    assert retried, "the function should have failed and been delivered again"
    assert_launched_once(cloud, run_id)


def test_a_cancelled_training_job_fails_the_run_and_the_previous_model_keeps_serving(cloud):
    serving = predict(cloud.endpoint_url, SAMPLE_INSTANCES[:1])["deployedModelId"]
    run_id = run_for_message(cloud, publish_start(cloud, {**SMALL_TRAINING, "numTrainExamples": 50_000_000}))
    job = wait_for(lambda: cloud.jobs.list_custom_jobs({"run_id": run_id}), 240, "training to start")[0]
    request = urllib.request.Request(
        f"{cloud.config.local_api}/v1/{job.name}:cancel", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    status = wait_terminal(cloud, run_id, 120)
    assert status.state.value == "failed" and "CANCELLED" in status.reason
    assert not [v for v in cloud.models.list_model_versions("babyweight")["models"]
                if v.get("labels", {}).get("run_id") == run_id]
    assert predict(cloud.endpoint_url, SAMPLE_INSTANCES[:1])["deployedModelId"] == serving
