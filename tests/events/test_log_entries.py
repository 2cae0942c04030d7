"""LogEntry parsing and the classification of job-ending lines."""
import json

import pytest

from events.errors import InvalidEvent
from events.log_entries import (
    DATAFLOW_LAUNCHER_FAILED_LINE,
    JobKind,
    JobOutcome,
    JobTerminal,
    LogEntry,
    classify,
    parse_log_entry,
)
from local_cloud.logging.entries import vertex_job_terminal_entry
from tests.fakes.log_corpus import (
    DATAFLOW_JOB,
    FOREIGN,
    OPERATION,
    ORDINARY,
    PROJECT,
    RUN,
    TERMINAL,
    VERTEX_JOB,
    WHEN,
    launch_failed,
    vertex_line,
)

TERMINAL_BY_NAME = {name: entry for name, entry, _ in TERMINAL}


def test_parses_an_entry_from_sink_message_bytes():
    raw = {
        "textPayload": "Waiting for job to be provisioned.",
        "insertId": "1lpygqldc71g",
        "resource": {"type": "ml_job", "labels": {"task_name": "service", "job_id": "3440268323059662848",
                                                  "project_id": "xpl-demo"}},
        "timestamp": "2023-11-03T15:55:41.256638588Z",
        "severity": "INFO",
        "labels": {"ml.googleapis.com/endpoint": "", "ml.googleapis.com/job_state": "QUEUED"},
        "logName": "projects/xpl-demo/logs/ml.googleapis.com%2F3440268323059662848",
        "receiveTimestamp": "2023-11-03T15:55:42.094715726Z",
    }
    entry = parse_log_entry(json.dumps(raw).encode())
    assert entry.resource_type == "ml_job"
    assert entry.resource_labels["job_id"] == "3440268323059662848"
    assert entry.labels["ml.googleapis.com/job_state"] == "QUEUED"
    assert entry.message == "Waiting for job to be provisioned."
    assert entry.insert_id == "1lpygqldc71g" and entry.severity == "INFO"
    assert entry.raw == raw
    assert classify(entry) is None


def test_message_comes_from_json_payload_when_structured():
    entry = LogEntry.from_dict({"jsonPayload": {"message": "hello", "step": 3}, "resource": {"type": "x"}})
    assert entry.message == "hello"
    assert LogEntry.from_dict({"jsonPayload": {"msg": "x"}}).message == ""
    assert LogEntry.from_dict({"protoPayload": {}}).message == ""


@pytest.mark.parametrize("name, entry, expected", TERMINAL + [(n, e, None) for n, e in ORDINARY])
def test_classify(name, entry, expected):
    result = classify(entry)
    if expected is None:
        assert result is None, name
    else:
        assert result is not None, name
        assert (result.kind, result.job_id, result.outcome) == expected, name
        assert result.timestamp == WHEN and result.insert_id == entry["insertId"]


def test_classify_reports_the_line_and_the_names_it_carries():
    dataflow = classify(TERMINAL_BY_NAME["dataflow failed causes"])
    assert dataflow.message == "Workflow failed. Causes: S05:Read failed."
    assert dataflow.job_name == "run-20261127-045219-0123456789"
    deploy_error = classify(TERMINAL_BY_NAME["deploy error"])
    assert deploy_error == JobTerminal(
        JobKind.VERTEX_DEPLOY_MODEL, OPERATION, JobOutcome.FAILED, "model failed to load",
        resource_name="projects/mlrelay-demo/locations/europe-west1/endpoints/4455",
        timestamp=WHEN, insert_id="audit-1",
    )


def test_foreign_job_ends_are_still_classified():
    assert [classify(entry).job_name for _, entry in FOREIGN] == ["nightly-etl", "nightly-etl"]


def test_job_failed_at_info_is_a_terminal_line():
    # Vertex AI logs its "Job failed." service line at INFO; the severity decides nothing.
    built = vertex_job_terminal_entry(PROJECT, VERTEX_JOB, JobOutcome.FAILED, WHEN, "f")
    assert built["severity"] == "INFO" and built["textPayload"] == "Job failed."
    for entry in (built, vertex_line("Job failed.", severity="INFO"), vertex_line("Job failed.", severity="DEFAULT")):
        ended = classify(entry)
        assert (ended.kind, ended.job_id, ended.outcome) == (JobKind.VERTEX_CUSTOM_JOB, VERTEX_JOB, JobOutcome.FAILED)


def test_a_failed_flex_template_launch_is_a_failure_of_its_dataflow_job():
    entry = launch_failed()
    # The documented line (Dataflow's common-errors page), logged at ERROR in the job's messages.
    assert entry["textPayload"] == DATAFLOW_LAUNCHER_FAILED_LINE
    assert entry["logName"].endswith("/logs/dataflow.googleapis.com%2Fjob-message")
    assert entry["resource"]["type"] == "dataflow_step" and entry["severity"] == "ERROR"
    assert classify(entry) == JobTerminal(JobKind.DATAFLOW_JOB, DATAFLOW_JOB, JobOutcome.FAILED,
                                          DATAFLOW_LAUNCHER_FAILED_LINE, job_name=RUN, timestamp=WHEN,
                                          insert_id=entry["insertId"])


def test_a_failed_launch_names_its_job_from_the_entry_labels_when_the_resource_does_not():
    ended = classify(TERMINAL_BY_NAME["dataflow launch failed, names in entry labels"])
    assert (ended.job_id, ended.job_name) == (DATAFLOW_JOB, RUN)
    nameless = launch_failed()
    nameless["resource"]["labels"] = {"project_id": PROJECT}
    nameless["labels"] = {}
    assert classify(nameless) is None  # no job to name: nothing to route


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xff", "not UTF-8"),
        ("{", "not JSON"),
        ("[]", "must be a JSON object"),
        ({"resource": "ml_job"}, "'resource' must be an object"),
        ({"textPayload": 5}, "textPayload"),
        ({"jsonPayload": "x"}, "jsonPayload"),
        ({"labels": {"a": 1}}, "labels"),
        ({"resource": {"type": "ml_job", "labels": ["job_id"]}}, "resource.labels"),
        ({"timestamp": 17}, "timestamp"),
    ],
)
def test_malformed_entries_raise_invalid_event(raw, words):
    with pytest.raises(InvalidEvent, match=words):
        parse_log_entry(raw)
