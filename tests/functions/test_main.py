"""The four entry points, called as the platform calls them: CloudEvents in binary content mode,
built from Google's published event shapes (tests/fakes/google_events/), posted to
functions-framework's test client.

A 2xx answer acknowledges the event; a 5xx answer makes the platform deliver it again. What each
test checks is what a user of the chain would notice: the run's ledger and request.json in the
bucket, the jobs and deployments asked of the (fake) APIs, and the one line each entry point logs.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import replace

import pytest

from events.ledger import LedgerEvent, RunStatus, fold
from functions import bootstrap
from functions.platform import Platform, TrainingJob, TransientError
from tests.fakes.google_events import (
    BUCKET, GENERATION, LATER, PROJECT, WHEN, dataflow_job_message, deliver, google_event, job_events_message,
    log_entry_message, message_published, object_finalized, run_request_message, trigger_notification,
    vertex_job_line,
)
from tests.fakes.runs import write_comparison

REQUEST = b'{"limit": 1000, "numTrainExamples": 5000}'

def manifest(run_id: str) -> dict:
    """_MANIFEST.json as the preprocessing pipeline writes it (beam_pipeline/manifest.py)."""
    return {
        "format": "mlrelay.preprocess/v1",
        "run_id": run_id,
        "created": "2026-11-27T05:03:00Z",
        "source": {"path": f"gs://{BUCKET}/data/natality.parquet"},
        "splits": {
            "train": {"shards": ["train.csv-00000-of-00001"], "rows": 1600, "records": 800},
            "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 400, "records": 200},
        },
        "input": {"rows_read": 1000, "rows_dropped": 0, "rows_valid": 1000, "limit": 1000},
        "options": {},
    }


# --- what a user sees ----------------------------------------------------------------------------


def ledger(cloud, run_id: str) -> list[LedgerEvent]:
    return [LedgerEvent.from_json(cloud.storage.read(name)) for name in cloud.storage.list(f"runs/{run_id}/events/")]


def run_status(cloud, run_id: str) -> RunStatus:
    return fold(ledger(cloud, run_id))


def request_doc(cloud, run_id: str) -> dict:
    return json.loads(cloud.storage.read(f"runs/{run_id}/request.json"))


def reports(caplog, function: str) -> list[dict]:
    """The structured lines the entry point logged, one per event it handled."""
    lines = []
    for record in caplog.records:
        if record.name != "mlrelay.functions" or record.levelno != logging.INFO:
            continue
        try:
            line = json.loads(record.getMessage())
        except ValueError:
            continue
        if line.get("function") == function:
            lines.append(line)
    return lines


# --- getting a run to a stage through the entry points ---------------------------------------------


def upload_trigger(cloud, name: str, content: bytes) -> int:
    cloud.storage.write(name, content)
    return len(content)


def start_a_run(clients, cloud) -> str:
    """A run started by a published request, now preprocessing; its id."""
    assert deliver(clients["start_pipeline"], run_request_message(REQUEST, "9001")).status_code == 200
    return cloud.jobs.preprocess_calls[-1][0]


def publish_manifest(clients, cloud, run_id: str, content: bytes | None = None, event_id: str = "4001"):
    name = f"runs/{run_id}/preprocess/_MANIFEST.json"
    content = json.dumps(manifest(run_id)).encode() if content is None else content
    cloud.storage.write(name, content)
    return deliver(clients["on_preprocess_output"], object_finalized(name, len(content), event_id=event_id))


def a_run_in_training(clients, cloud) -> tuple[str, str]:
    """A run whose training job was launched: (run id, training job id)."""
    run_id = start_a_run(clients, cloud)
    assert publish_manifest(clients, cloud, run_id).status_code == 200
    (job_id,) = cloud.jobs.jobs
    return run_id, job_id


# --- start_pipeline ------------------------------------------------------------------------------


def test_a_trigger_file_upload_starts_one_run_and_one_preprocessing_job(clients, cloud, caplog):
    size = upload_trigger(cloud, "triggers/nightly.json", b'{"limit": 5000}')

    response = deliver(clients["start_pipeline"], trigger_notification("triggers/nightly.json", size))

    assert response.status_code == 200
    (run_id, source, out_uri, limit, labels), = cloud.jobs.preprocess_calls
    assert (limit, labels, out_uri) == (5000, {"run_id": run_id}, f"gs://{BUCKET}/runs/{run_id}/preprocess/")
    doc = request_doc(cloud, run_id)
    assert doc["origin"] == {"kind": "trigger-file", "object": f"gs://{BUCKET}/triggers/nightly.json",
                             "generation": str(GENERATION)}
    assert doc["request"]["limit"] == 5000
    assert run_status(cloud, run_id).state == "preprocessing"
    (line,) = reports(caplog, "start_pipeline")
    assert (line["event"], line["action"], line["run_id"], line["job"]) == ("2001", "launched", run_id, "df-1")


def test_a_trigger_file_notified_twice_starts_one_run(clients, cloud):
    size = upload_trigger(cloud, "triggers/nightly.json", REQUEST)
    first = trigger_notification("triggers/nightly.json", size, message_id="2001", publish_time=WHEN)
    second = trigger_notification("triggers/nightly.json", size, message_id="2002", publish_time=LATER)

    assert deliver(clients["start_pipeline"], first).status_code == 200
    assert deliver(clients["start_pipeline"], second).status_code == 200

    assert len(cloud.jobs.preprocess_calls) == 1


def test_a_new_generation_of_the_trigger_file_starts_another_run(clients, cloud):
    size = upload_trigger(cloud, "triggers/nightly.json", REQUEST)
    deliver(clients["start_pipeline"], trigger_notification("triggers/nightly.json", size, message_id="2001"))
    deliver(clients["start_pipeline"], trigger_notification("triggers/nightly.json", size, message_id="2002",
                                                            generation=GENERATION + 1))

    first, second = (call[0] for call in cloud.jobs.preprocess_calls)
    assert first != second
    assert request_doc(cloud, second)["origin"]["generation"] == str(GENERATION + 1)


def test_the_same_event_delivered_twice_launches_once(clients, cloud, caplog):
    size = upload_trigger(cloud, "triggers/nightly.json", REQUEST)
    event = trigger_notification("triggers/nightly.json", size)

    responses = [deliver(clients["start_pipeline"], event) for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    (run_id, *_), = cloud.jobs.preprocess_calls
    assert [line["action"] for line in reports(caplog, "start_pipeline")] == ["launched", "duplicate"]
    assert [event.state for event in ledger(cloud, run_id)] == ["requested", "preprocessing"]


def test_a_published_run_request_starts_a_run(clients, cloud, caplog):
    response = deliver(clients["start_pipeline"], run_request_message(REQUEST, message_id="1001"))

    assert response.status_code == 200
    (run_id, source, _, limit, _), = cloud.jobs.preprocess_calls
    assert (source, limit) == (f"gs://{BUCKET}/data/natality.parquet", 1000)
    doc = request_doc(cloud, run_id)
    assert doc["origin"] == {"kind": "message", "topic": "mlrelay-start", "messageId": "1001"}
    assert doc["request"]["numTrainExamples"] == 5000
    assert run_status(cloud, run_id).state == "preprocessing"
    assert reports(caplog, "start_pipeline")[-1]["run_id"] == run_id


@pytest.mark.parametrize("request_body, reason", [
    (b"limit=1000", "not JSON"),
    (b'{"limit": 1000, "limt": 10}', "unknown key 'limt'"),
    (b'{"limit": "lots"}', "limit: must be an integer"),
], ids=["not-json", "unknown-key", "wrong-type"])
def test_a_malformed_request_is_rejected_with_its_reason_and_acknowledged(clients, cloud, caplog,
                                                                          request_body, reason):
    response = deliver(clients["start_pipeline"], run_request_message(request_body))

    assert response.status_code == 200
    assert cloud.jobs.preprocess_calls == []
    (line,) = reports(caplog, "start_pipeline")
    assert line["action"] == "rejected" and reason in line["detail"]
    status = run_status(cloud, line["run_id"])
    assert status.state == "rejected" and reason in status.reason
    assert not cloud.storage.exists(f"runs/{line['run_id']}/request.json")


def test_a_trigger_file_that_is_not_a_run_request_is_rejected(clients, cloud, caplog):
    size = upload_trigger(cloud, "triggers/nightly.json", b'{"limit": 1000,')

    response = deliver(clients["start_pipeline"], trigger_notification("triggers/nightly.json", size))

    assert response.status_code == 200
    assert cloud.jobs.preprocess_calls == []
    (line,) = reports(caplog, "start_pipeline")
    status = run_status(cloud, line["run_id"])
    assert status.state == "rejected" and status.reason.startswith("not JSON")


def test_a_deleted_trigger_file_is_ignored(clients, cloud, caplog):
    event = trigger_notification("triggers/nightly.json", 15, event_type="OBJECT_DELETE")

    response = deliver(clients["start_pipeline"], event)

    assert response.status_code == 200
    assert cloud.objects() == [] and cloud.jobs.preprocess_calls == []
    (line,) = reports(caplog, "start_pipeline")
    assert (line["action"], line["run_id"], line["detail"]) == ("ignored", None, "OBJECT_DELETE")


def test_an_object_outside_triggers_is_ignored(clients, cloud, caplog):
    size = upload_trigger(cloud, "data/nightly.json", REQUEST)

    response = deliver(clients["start_pipeline"], trigger_notification("data/nightly.json", size))

    assert response.status_code == 200
    assert cloud.objects() == ["data/nightly.json"] and cloud.jobs.preprocess_calls == []
    assert cloud.storage.reads == []
    (line,) = reports(caplog, "start_pipeline")
    assert line["action"] == "ignored" and "not a trigger file" in line["detail"]


def test_a_transient_job_api_fault_is_retried_and_the_redelivery_launches(clients, cloud, caplog):
    event = run_request_message(REQUEST)
    cloud.jobs.fail_next = TransientError("dataflow: 503 backend unavailable")

    failed = deliver(clients["start_pipeline"], event)

    assert failed.status_code == 500
    assert cloud.jobs.preprocess_calls == [] and reports(caplog, "start_pipeline") == []

    retried = deliver(clients["start_pipeline"], event)

    assert retried.status_code == 200
    (run_id, *_), = cloud.jobs.preprocess_calls
    assert [event.state for event in ledger(cloud, run_id)] == ["requested", "preprocessing"]


# --- on_preprocess_output ------------------------------------------------------------------------


def test_a_runs_manifest_starts_training_once_labelled_with_the_run(clients, cloud, caplog):
    run_id = start_a_run(clients, cloud)

    responses = [publish_manifest(clients, cloud, run_id, event_id=event_id) for event_id in ("4001", "4002")]

    assert [r.status_code for r in responses] == [200, 200]
    (call_run, manifest_uri, base_output, trainer_args, labels), = cloud.jobs.training_calls
    assert (call_run, labels) == (run_id, {"run_id": run_id})
    assert manifest_uri == f"gs://{BUCKET}/runs/{run_id}/preprocess/_MANIFEST.json"
    assert base_output == f"gs://{BUCKET}/runs/{run_id}/train/"
    assert trainer_args == ["--num-train-examples", "5000"]
    assert run_status(cloud, run_id).state == "training"
    assert [line["action"] for line in reports(caplog, "on_preprocess_output")] == ["launched", "duplicate"]


@pytest.mark.parametrize("name", [
    "runs/{run_id}/preprocess/train.csv-00000-of-00001",
    "runs/{run_id}/preprocess/.temp-beam-4f2a/eval.csv-00000-of-00001",
    "runs/{run_id}/events/20261127T050102.345000Z-request.json",
    "tmp/staging/pipeline.pb",
    "triggers/nightly.json",
], ids=["shard", "beam-temp", "ledger-record", "dataflow-tmp", "trigger-file"])
def test_other_objects_of_the_bucket_are_ignored_without_being_read(clients, cloud, caplog, name):
    run_id = start_a_run(clients, cloud)
    name = name.format(run_id=run_id)
    cloud.storage.write(name, b"is_male,mother_age\n")
    before, cloud.storage.reads[:] = cloud.objects(), []

    response = deliver(clients["on_preprocess_output"], object_finalized(name, 19, event_id="4001"))

    assert response.status_code == 200
    assert cloud.storage.reads == []
    assert cloud.objects() == before
    assert cloud.jobs.training_calls == []
    assert reports(caplog, "on_preprocess_output") == []


@pytest.mark.parametrize("content, reason", [
    (b'{"format": "mlrelay.preprocess/v1", "splits": {', "manifest is not readable JSON"),
    (json.dumps({"format": "mlrelay.preprocess/v1", "splits": {
        "train": {"shards": ["train.csv-00000-of-00001"], "rows": 1600}, "eval": {"shards": [], "rows": 0}}}).encode(),
     "manifest lists no eval shards"),
    (json.dumps({"format": "tfrecords/v0"}).encode(), "manifest format is 'tfrecords/v0'"),
], ids=["not-json", "no-eval-shards", "other-format"])
def test_a_bad_manifest_fails_the_run_with_its_reason(clients, cloud, caplog, content, reason):
    run_id = start_a_run(clients, cloud)

    response = publish_manifest(clients, cloud, run_id, content)

    assert response.status_code == 200
    assert cloud.jobs.training_calls == []
    status = run_status(cloud, run_id)
    assert status.state == "failed" and reason in status.reason
    (line,) = reports(caplog, "on_preprocess_output")
    assert (line["action"], line["run_id"]) == ("rejected", run_id)


# --- on_training_complete ------------------------------------------------------------------------


def test_a_succeeded_training_job_is_registered_and_deployed_once(clients, cloud, caplog):
    run_id, job_id = a_run_in_training(clients, cloud)
    cloud.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")
    write_comparison(cloud.storage, run_id, candidate=1.0)  # the trainer's, with no champion to score
    line = vertex_job_line(job_id, "Job completed successfully.", job_state="SUCCEEDED")

    responses = [deliver(clients["on_training_complete"], log_entry_message(line, message_id))
                 for message_id in ("3001", "3002")]

    assert [r.status_code for r in responses] == [200, 200]
    (model, artifact_uri, labels), = cloud.models.uploads
    assert (model, artifact_uri, labels) == ("babyweight", f"gs://{BUCKET}/runs/{run_id}/train/model/",
                                             {"run_id": run_id, "gate": "blessed"})
    (version, endpoint, traffic, display_name), = cloud.models.deploys
    assert (version.versioned_name, endpoint, traffic, display_name) == (
        "projects/p/locations/r/models/babyweight@1", "babyweight", {"0": 100}, run_id)  # the first: all traffic
    assert run_status(cloud, run_id).state == "deploying"
    assert [line["action"] for line in reports(caplog, "on_training_complete")] == ["launched", "duplicate"]


def test_a_job_the_api_still_reports_running_is_retried(clients, cloud):
    run_id, job_id = a_run_in_training(clients, cloud)
    line = vertex_job_line(job_id, "Job completed successfully.", job_state="SUCCEEDED")

    response = deliver(clients["on_training_complete"], log_entry_message(line))

    assert response.status_code == 500
    assert cloud.models.uploads == [] and cloud.models.deploys == []
    assert run_status(cloud, run_id).state == "training"


def test_a_failed_training_job_fails_the_run_with_the_apis_error(clients, cloud):
    run_id, job_id = a_run_in_training(clients, cloud)
    cloud.jobs.finish(job_id, "JOB_STATE_FAILED", error="The replica workerpool0-0 exited with a non-zero status of 1.")
    line = vertex_job_line(job_id, "Job failed.", job_state="FAILED")

    response = deliver(clients["on_training_complete"], log_entry_message(line))

    assert response.status_code == 200
    assert cloud.models.uploads == []
    status = run_status(cloud, run_id)
    assert status.state == "failed" and "JOB_STATE_FAILED" in status.reason and "non-zero status" in status.reason


@pytest.mark.parametrize("make_line", [
    lambda job_id: vertex_job_line(job_id, "Waiting for job to be provisioned.", job_state="QUEUED"),
    lambda job_id: vertex_job_line(job_id, "Job completed successfully.", task_name="workerpool0-0"),
    lambda job_id: {"insertId": "abc", "logName": f"projects/{PROJECT}/logs/cloudfunctions.googleapis.com%2Fcloud-functions",
                    "resource": {"type": "cloud_function", "labels": {"function_name": "on_training_complete",
                                                                      "project_id": PROJECT, "region": "us-central1"}},
                    "severity": "INFO", "textPayload": "Job completed successfully.", "timestamp": WHEN},
], ids=["queued-service-line", "training-code-line", "other-resource"])
def test_a_log_line_that_does_not_end_a_job_is_ignored(clients, cloud, caplog, make_line):
    run_id, job_id = a_run_in_training(clients, cloud)
    cloud.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")

    response = deliver(clients["on_training_complete"], log_entry_message(make_line(job_id)))

    assert response.status_code == 200
    assert cloud.models.uploads == [] and cloud.models.deploys == []
    assert run_status(cloud, run_id).state == "training"
    (line,) = reports(caplog, "on_training_complete")
    assert line["action"] == "ignored"


def test_a_terminal_line_of_a_job_the_pipeline_did_not_start_is_ignored(clients, cloud, caplog):
    cloud.jobs.jobs["777"] = TrainingJob("777", "projects/p/locations/r/customJobs/777", "JOB_STATE_SUCCEEDED",
                                         {"team": "recsys"}, "gs://elsewhere/out/")
    line = vertex_job_line("777", "Job completed successfully.", job_state="SUCCEEDED")

    response = deliver(clients["on_training_complete"], log_entry_message(line))

    assert response.status_code == 200
    assert cloud.models.uploads == [] and cloud.objects() == []
    (line,) = reports(caplog, "on_training_complete")
    assert line["action"] == "ignored" and "777" in line["detail"]


@pytest.mark.parametrize("data", [
    base64.b64decode(google_event("pubsub_binary-cloudevent-input.json")["data"]["message"]["data"]),
    b"test message 3",
    b'["Job completed successfully."]',
], ids=["binary", "text", "json-array"])
def test_a_message_that_is_not_a_log_entry_is_acknowledged_and_ignored(clients, cloud, caplog, data):
    run_id, job_id = a_run_in_training(clients, cloud)
    cloud.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")

    response = deliver(clients["on_training_complete"], job_events_message(data))

    assert response.status_code == 200
    assert cloud.models.uploads == [] and cloud.models.deploys == []
    assert run_status(cloud, run_id).state == "training"
    (line,) = reports(caplog, "on_training_complete")
    assert line["action"] == "ignored" and "LogEntry" in line["detail"]


@pytest.mark.parametrize("line, reason", [
    ("Workflow failed. Causes: S02:Read natality failed.", "S02:Read natality failed"),
    # A launch that fails in the launcher container never logs "Workflow failed.": its job logs
    # this line instead (Dataflow's common-errors page, "Template launch failed with error").
    ("Error occurred in the launcher container: Template launch failed. See console logs.",
     "Error occurred in the launcher container"),
], ids=["workflow-failed", "flex-template-launch-failed"])
def test_a_failed_dataflow_job_fails_its_run(clients, cloud, line, reason):
    run_id = start_a_run(clients, cloud)
    (job_id,) = cloud.jobs.dataflow
    cloud.jobs.end_preprocess(job_id, "JOB_STATE_FAILED")  # what the job API says: the line is only a doorbell
    entry = dataflow_job_message(job_id, run_id, line)

    response = deliver(clients["on_training_complete"], log_entry_message(entry))

    assert response.status_code == 200
    status = run_status(cloud, run_id)
    assert status.state == "failed" and reason in status.reason
    assert cloud.jobs.training_calls == []


def test_a_forged_dataflow_failure_for_a_run_whose_job_succeeded_changes_nothing(clients, cloud, caplog):
    run_id = start_a_run(clients, cloud)
    (job_id,) = cloud.jobs.dataflow
    cloud.jobs.end_preprocess(job_id, "JOB_STATE_DONE")
    entry = dataflow_job_message(job_id, run_id, "Workflow failed. Causes: forged")

    with caplog.at_level(logging.INFO, logger="mlrelay.functions"):
        response = deliver(clients["on_training_complete"], log_entry_message(entry))

    assert response.status_code == 200
    assert run_status(cloud, run_id).state == "preprocessing"
    line = json.loads(caplog.records[-1].getMessage())
    assert line["action"] == "ignored" and "the job API says JOB_STATE_DONE" in line["detail"]


# --- on_release_event ----------------------------------------------------------------------------

RELEASE_SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-release"


def release_message(body: bytes, message_id: str = "6001") -> dict:
    """A message of the release topic, as the bake's Cloud Tasks task (or mlrelay rollback) publishes it."""
    return message_published(RELEASE_SOURCE, body, message_id=message_id, attributes={"origin": "bake-end"})


def a_baking_canary(clients, cloud) -> str:
    """A first run deployed, then a better one baking beside it (short bake): the baking run's id."""
    from dataclasses import replace

    from functions import bootstrap
    from tests.functions.stages.chain import baking_canary, serving_champion

    config, platform = bootstrap.context()
    with bootstrap.override(replace(config, bake_seconds=5), platform):
        config, platform = bootstrap.context()
        serving_champion(config, platform)
        run_id, _ = baking_canary(config, platform)
    return run_id


def test_a_bake_end_published_by_its_task_promotes_the_canary_once(clients, cloud, caplog):
    run_id = a_baking_canary(clients, cloud)
    (topic, body, _), = cloud.tasks.scheduled.values()
    assert topic == "mlrelay-release"
    cloud.metrics.figures_by_model.update({"dm2": {"requests": 50, "errors": 0, "latency_p99_ms": 30.0}})
    event = release_message(json.dumps(body).encode())

    responses = [deliver(clients["on_release_event"], event) for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    assert run_status(cloud, run_id).state == "deployed"
    assert [d.id for d in cloud.models.deployed] == ["dm2"] and cloud.models.split == {"dm2": 100}
    assert [line["action"] for line in reports(caplog, "on_release_event")] == ["recorded", "duplicate"]


@pytest.mark.parametrize("data, reason", [
    (b"promote it", "not JSON"),
    (b'["bake", "over"]', "not a JSON object"),
    (b'{"candidate": "dm2", "bake_started": "2026-11-27T05:00:00Z"}', "must name its run_id"),
    (b'{"action": "rollback", "to": "babyweight"}', "MODEL@VERSION"),
], ids=["not-json", "array", "no-run-id", "rollback-bad-to"])
def test_a_malformed_release_message_is_acknowledged_and_changes_nothing(clients, cloud, caplog, data, reason):
    run_id = a_baking_canary(clients, cloud)
    deploys, undeploys = list(cloud.models.deploys), list(cloud.models.undeploys)

    response = deliver(clients["on_release_event"], release_message(data))

    assert response.status_code == 200
    (line,) = reports(caplog, "on_release_event")
    assert line["action"] == "ignored" and reason in line["detail"]
    assert run_status(cloud, run_id).state == "baking"
    assert (cloud.models.deploys, cloud.models.undeploys) == (deploys, undeploys)


def test_a_rollback_request_through_the_entry_point_deploys_the_earlier_version(clients, cloud, caplog):
    a_baking_canary(clients, cloud)
    body = json.dumps({"action": "rollback", "to": None, "requested_by": "alice"}).encode()

    response = deliver(clients["on_release_event"], release_message(body, "6002"))

    assert response.status_code == 200
    (line,) = reports(caplog, "on_release_event")
    # a canary is baking: the endpoint holds two models, a rollback would be a third
    assert line["action"] == "rejected" and "a canary is baking" in line["detail"]


# --- reconcile_runs ------------------------------------------------------------------------------

RECONCILE_SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-reconcile"


def test_a_sweep_tick_drives_on_a_run_whose_manifest_event_was_lost(clients, cloud, caplog):
    run_id = start_a_run(clients, cloud)
    cloud.storage.write(f"runs/{run_id}/preprocess/_MANIFEST.json", json.dumps(manifest(run_id)).encode())
    (job_id,) = cloud.jobs.dataflow
    cloud.jobs.end_preprocess(job_id, "JOB_STATE_DONE")  # and the manifest's finalize event is lost
    quick = replace(cloud.config, reconcile_after_seconds=1)
    platform = Platform(cloud.storage, cloud.jobs, cloud.models, cloud.tasks, cloud.metrics)
    time.sleep(1.1)  # the run is quiet for longer than the sweep's quiet time
    with bootstrap.override(quick, platform):
        tick = message_published(RECONCILE_SOURCE, b"{}", message_id="7001")
        assert deliver(clients["reconcile_runs"], tick).status_code == 200
        assert deliver(clients["reconcile_runs"], message_published(RECONCILE_SOURCE, b"{}", message_id="7002")
                       ).status_code == 200

    assert run_status(cloud, run_id).state == "training"
    assert len(cloud.jobs.training_calls) == 1  # two ticks, one launch
    first, second = reports(caplog, "reconcile_runs")
    assert first["action"] == "recorded" and first["runs"] == {run_id: "launched"}
    assert second["action"] == "ignored" and second["runs"] == {}
