"""The log router: every entry kept, only what a sink's filter matches published."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from events.log_entries import JobOutcome
from events.sink_filters import filter_for
from local_cloud.logging.entries import dataflow_job_message_entry, vertex_job_log_entry, vertex_job_terminal_entry
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
