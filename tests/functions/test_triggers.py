"""Decoding: each CloudEvent sorted into exactly one trigger, or into NotForUs with the reason.

The events are Google's published shapes (tests/fakes/google_events/), read by cloudevents'
own HTTP parser from the binary-mode request they arrive as.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from cloudevents.http import from_http

from functions import triggers
from functions.run_store import manifest_name
from tests.fakes.google_events import (
    GENERATION, WHEN, job_events_message, log_entry_message, object_finalized, run_request_message,
    trigger_notification, vertex_job_line,
)

RUN = "run-20261127-050102-0123456789"


def received(event: dict):
    """The CloudEvent functions-framework hands an entry point for this event."""
    headers = {f"ce-{key}": value for key, value in event.items() if key not in ("data", "datacontenttype")}
    headers["Content-Type"] = event["datacontenttype"]
    return from_http(headers, json.dumps(event["data"]))


def test_a_trigger_files_notification_is_named_by_the_objects_own_finalize_time():
    decoded = triggers.decode_start(received(trigger_notification("triggers/a.json", 42, publish_time="2026-11-27T06:00:00Z")))
    assert isinstance(decoded, triggers.TriggerFile)
    assert (decoded.bucket, decoded.object_name, decoded.generation, decoded.size) == ("b", "triggers/a.json", GENERATION, 42)
    assert decoded.event_time == datetime.fromisoformat(WHEN.replace("Z", "+00:00"))
    assert decoded.uri == "gs://b/triggers/a.json"


def test_a_plain_message_carries_its_request_and_topic():
    decoded = triggers.decode_start(received(run_request_message(b'{"limit": 5}', message_id="77")))
    assert isinstance(decoded, triggers.StartMessage)
    assert (decoded.topic, decoded.message_id, decoded.data) == ("mlrelay-start", "77", b'{"limit": 5}')
    assert decoded.event_time.tzinfo == timezone.utc


def test_deletions_and_deliveries_without_a_message_are_not_for_us():
    deleted = triggers.decode_start(received(trigger_notification("triggers/a.json", 1, event_type="OBJECT_DELETE")))
    assert deleted == triggers.NotForUs("OBJECT_DELETE")
    broken = run_request_message(b"{}")
    del broken["data"]["message"]
    assert "not a Pub/Sub delivery" in triggers.decode_start(received(broken)).reason


def test_only_a_runs_manifest_is_a_storage_trigger_and_the_rest_are_dropped_quietly():
    decoded = triggers.decode_object_finalized(received(object_finalized(manifest_name(RUN), 300, event_id="9")))
    assert decoded == triggers.ManifestWritten("9", "b", manifest_name(RUN), RUN)
    shard = triggers.decode_object_finalized(received(object_finalized(f"runs/{RUN}/preprocess/train.csv-00000-of-00001",
                                                                      9, event_id="10")))
    assert isinstance(shard, triggers.NotForUs) and shard.quiet


def test_a_terminal_job_line_is_a_job_end_and_anything_else_is_not():
    ended = triggers.decode_job_event(received(log_entry_message(
        vertex_job_line("123", "Job completed successfully.", job_state="JOB_STATE_SUCCEEDED"))))
    assert isinstance(ended, triggers.JobEnded) and ended.terminal.job_id == "123"
    ordinary = triggers.decode_job_event(received(log_entry_message(vertex_job_line("123", "Job is running."))))
    assert ordinary == triggers.NotForUs("not a terminal job line")
    garbage = triggers.decode_job_event(received(job_events_message(b"\x00\x01")))
    assert isinstance(garbage, triggers.NotForUs) and "no LogEntry" in garbage.reason and not garbage.quiet
