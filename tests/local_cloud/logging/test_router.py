"""The log router: every entry kept, only what a sink's filter matches published."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from events.log_entries import DATAFLOW_LAUNCHER_FAILED_LINE, JobOutcome
from events.sink_filters import filter_for
from local_cloud.logging.entries import (
    LAUNCH_EXIT_LINE,
    dataflow_job_message_entry,
    dataflow_launch_failed_entry,
    vertex_job_log_entry,
    vertex_job_terminal_entry,
)
from local_cloud.logging.router import LogRouter, Sink

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


def test_the_router_forwards_only_what_the_sink_filter_matches(tmp_path):
    published = []
    router = LogRouter(tmp_path / "log.jsonl", [Sink("job-events", filter_for("job-events"), "events")],
                       lambda topic, data, attrs: published.append((topic, json.loads(data))))
    ordinary = vertex_job_log_entry("p", "1", "epoch 1/5 loss 1.2", NOW, "a", task_name="workerpool0-0")
    done = vertex_job_terminal_entry("p", "1", JobOutcome.SUCCEEDED, NOW, "b")
    dataflow_ok = dataflow_job_message_entry("p", "2", "run-20261127-050000-0123456789", "r",
                                             "Worker pool stopped.", NOW, "c")
    dataflow_failed = dataflow_job_message_entry("p", "2", "run-20261127-050000-0123456789", "r",
                                                 "Workflow failed. Causes: boom", NOW, "d", severity="ERROR")
    for entry in (ordinary, done, dataflow_ok, dataflow_failed):
        router.write(entry)
    assert [e["insertId"] for _, e in published] == ["b", "d"]
    assert len(router.entries()) == 4


def test_of_a_failed_template_launch_the_router_forwards_only_the_launcher_line(tmp_path):
    published = []
    router = LogRouter(tmp_path / "log.jsonl", [Sink("job-events", filter_for("job-events"), "events")],
                       lambda topic, data, attrs: published.append(json.loads(data)))
    run = "run-20261127-050000-0123456789"
    cause = dataflow_job_message_entry("p", "2", run, "r", "preprocess: error: no files match 'x'", NOW, "a")
    exit_line = dataflow_job_message_entry("p", "2", run, "r", LAUNCH_EXIT_LINE.format(code=2), NOW, "b",
                                           severity="ERROR")
    failed = dataflow_launch_failed_entry("p", "2", run, "r", NOW, "c")
    for entry in (cause, exit_line, failed):
        router.write(entry)
    assert [e["insertId"] for e in published] == ["c"]
    assert published[0]["textPayload"] == DATAFLOW_LAUNCHER_FAILED_LINE and published[0]["severity"] == "ERROR"


def test_a_custom_jobs_failed_line_is_logged_at_info_and_forwarded(tmp_path):
    published = []
    router = LogRouter(tmp_path / "log.jsonl", [Sink("job-events", filter_for("job-events"), "events")],
                       lambda topic, data, attrs: published.append(json.loads(data)))
    router.write(vertex_job_terminal_entry("p", "1", JobOutcome.FAILED, NOW, "f"))
    assert [(e["textPayload"], e["severity"]) for e in published] == [("Job failed.", "INFO")]
