"""Decoding: each CloudEvent sorted into exactly one trigger, or into NotForUs with the reason.

The events are Google's published shapes (tests/fakes/google_events/), read by cloudevents'
own HTTP parser from the binary-mode request they arrive as.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from cloudevents.http import from_http

from functions import triggers
from functions.run_store import manifest_name
from tests.fakes.google_events import (
    GENERATION, PROJECT, WHEN, job_events_message, message_published, log_entry_message, object_finalized, run_request_message,
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


def release(body, message_id: str = "6001"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return received(message_published(f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-release", data,
                                      message_id=message_id))


BAKE = {"run_id": RUN, "candidate": "dm2", "champion": "dm1", "bake_started": "2026-11-27T05:10:00.5+00:00",
        "model_version": "projects/p/locations/r/models/babyweight@2"}


def test_the_bake_tasks_message_is_a_bake_end_and_a_rollback_request_a_rollback():
    decoded = triggers.decode_release(release(BAKE))
    assert decoded == triggers.BakeEnded("6001", RUN, "dm2", "dm1",
                                         datetime(2026, 11, 27, 5, 10, 0, 500000, tzinfo=timezone.utc))
    assert triggers.decode_release(release({**BAKE, "champion": None})).champion is None
    asked = triggers.decode_release(release({"action": "rollback", "to": "projects/p/locations/r/models/m@3",
                                             "requested_by": "alice"}))
    assert asked == triggers.RollbackAsked("6001", "projects/p/locations/r/models/m@3", "alice")
    assert triggers.decode_release(release({"action": "rollback"})) == triggers.RollbackAsked("6001", None, "unknown")


@pytest.mark.parametrize("body, reason", [
    (b"bake over", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    ({k: v for k, v in BAKE.items() if k != "run_id"}, "must name its run_id"),
    ({**BAKE, "run_id": "../../etc"}, "must name its run_id"),
    ({**BAKE, "run_id": 7}, "must name its run_id"),
    ({k: v for k, v in BAKE.items() if k != "candidate"}, "must name its candidate"),
    ({**BAKE, "candidate": ""}, "must name its candidate"),
    ({**BAKE, "champion": 1}, "must name its candidate (and champion)"),
    ({k: v for k, v in BAKE.items() if k != "bake_started"}, "without its start time"),
    ({**BAKE, "bake_started": "yesterday"}, "without its start time"),
    ({**BAKE, "bake_started": 1764219662}, "without its start time"),
    ({"action": "rollback", "to": "babyweight"}, "rollback 'to' must be MODEL@VERSION"),
    ({"action": "rollback", "to": "babyweight@"}, "rollback 'to' must be MODEL@VERSION"),
    ({"action": "rollback", "to": "@3"}, "rollback 'to' must be MODEL@VERSION"),
    ({"action": "rollback", "to": 3}, "rollback 'to' must be MODEL@VERSION"),
    ({"action": "promote", **BAKE}, "unknown release action 'promote'"),
], ids=["text", "binary", "empty", "array", "no-run-id", "path-run-id", "number-run-id", "no-candidate",
        "empty-candidate", "number-champion", "no-start", "bad-start", "number-start", "to-no-version",
        "to-empty-version", "to-no-model", "to-number", "unknown-action"])
def test_a_malformed_release_message_is_not_for_us_with_a_clear_reason(body, reason):
    decoded = triggers.decode_release(release(body))
    assert isinstance(decoded, triggers.NotForUs) and reason in decoded.reason and not decoded.quiet


def test_a_release_delivery_without_a_message_is_not_for_us():
    broken = message_published("//pubsub.googleapis.com/projects/p/topics/mlrelay-release", b"{}", message_id="1")
    del broken["data"]["message"]
    assert "not a Pub/Sub delivery" in triggers.decode_release(received(broken)).reason


def test_an_event_of_another_type_is_not_for_us_whatever_its_data_looks_like():
    """A storage-finalized type carrying a Pub/Sub body once launched a whole run."""
    forged = run_request_message(b'{"limit": 5}')
    forged["type"] = "google.cloud.storage.object.v1.finalized"
    decoded = triggers.decode_start(received(forged))
    assert isinstance(decoded, triggers.NotForUs) and "messagePublished" in decoded.reason
    pubsub_as_storage = object_finalized(manifest_name(RUN), 300, event_id="11")
    pubsub_as_storage["type"] = "google.cloud.pubsub.topic.v1.messagePublished"
    assert isinstance(triggers.decode_object_finalized(received(pubsub_as_storage)), triggers.NotForUs)
    for decode in (triggers.decode_job_event, triggers.decode_release):
        line = log_entry_message(vertex_job_line("123", "Job completed successfully.", job_state="JOB_STATE_SUCCEEDED"))
        line["type"] = "google.cloud.audit.log.v1.written"
        assert isinstance(decode(received(line)), triggers.NotForUs)


def test_a_start_event_whose_time_is_not_a_time_is_not_for_us_rather_than_a_500():
    event = run_request_message(b'{"limit": 5}')
    event["time"] = "yesterday"
    decoded = triggers.decode_start(received(event))
    assert isinstance(decoded, triggers.NotForUs) and "RFC 3339" in decoded.reason
