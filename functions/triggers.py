"""CloudEvents decoded into the typed triggers the stages act on.

Each function's trigger delivers more than its stage wants: the start topic carries trigger-file
notifications and plain messages alike, the bucket's storage trigger fires for every object, the
job-events topic for every line the sink forwards. Decoding sorts each event into exactly one
trigger, or into `NotForUs` with the reason, without any I/O. An event that is not what the
trigger should deliver is acknowledged: a retry would not make it better.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.errors import InvalidEvent
from events.log_entries import JobTerminal, classify, parse_log_entry
from events.pubsub import (
    MESSAGE_PUBLISHED_EVENT_TYPE,
    GcsNotification,
    is_gcs_notification,
    parse_message_published,
    topic_from_source,
)
from events.run_id import is_run_id
from events.storage import FINALIZED_EVENT_TYPE, StorageObject
from events.timestamps import parse_rfc3339
from functions.run_store import manifest_run_id


@dataclass(frozen=True)
class TriggerFile:
    """A trigger file was uploaded: its Cloud Storage notification on the start topic."""

    event_id: str
    event_time: datetime
    bucket: str
    object_name: str
    generation: int
    size: int  # 0 when the notification carries no object resource

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.object_name}"


@dataclass(frozen=True)
class StartMessage:
    """A message on the start topic whose data is the run request (scheduler, gcloud, mlrelay)."""

    event_id: str
    event_time: datetime
    topic: str
    message_id: str
    data: bytes


@dataclass(frozen=True)
class ManifestWritten:
    """A run's preprocessing manifest was finalized in a bucket."""

    event_id: str
    bucket: str
    object_name: str
    run_id: str


@dataclass(frozen=True)
class JobEnded:
    """A job's terminal log line, forwarded by the log sink: only a doorbell, the API decides."""

    event_id: str
    terminal: JobTerminal


@dataclass(frozen=True)
class NotForUs:
    """An event the stage does not act on, and why (`quiet`: too common to be worth a log line)."""

    reason: str
    quiet: bool = False


StartTrigger = TriggerFile | StartMessage


def _not_of_type(cloud_event: Any, expected: str) -> NotForUs | None:
    """An event of another type than the trigger delivers (a misrouted or forged one), or None.

    The data alone can look right (a Pub/Sub body under a storage type launched a run once)."""
    kind = cloud_event.get("type") if hasattr(cloud_event, "get") else None
    return None if kind == expected else NotForUs(f"a {kind!r} event, not {expected}")


def decode_start(cloud_event: Any) -> StartTrigger | NotForUs:
    """messagePublished on the start topic."""
    wrong = _not_of_type(cloud_event, MESSAGE_PUBLISHED_EVENT_TYPE)
    if wrong:
        return wrong
    event_id = cloud_event["id"]
    try:
        message = parse_message_published(cloud_event.data).message
        try:
            event_time = parse_rfc3339(cloud_event["time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEvent(f"the event's time is not an RFC 3339 time: {exc}") from None
        if not is_gcs_notification(message.attributes):
            return StartMessage(event_id, event_time, topic_from_source(cloud_event["source"]),
                                message.message_id or event_id, message.data)
        notification = GcsNotification.from_attributes(message.attributes)
    except InvalidEvent as exc:
        return NotForUs(f"not a Pub/Sub delivery: {exc}")
    if not notification.is_finalize:
        return NotForUs(notification.event_type)
    # The object's own finalize time, not this message's: Cloud Storage may notify one generation
    # twice, in two messages, and both must name the same run.
    return TriggerFile(event_id, parse_rfc3339(notification.event_time), notification.bucket,
                       notification.object_name, notification.generation, _object_size(message.data))


def _object_size(data: bytes) -> int:
    """The object's size from a JSON_API_V1 notification's payload (0 when absent or unreadable)."""
    if not data:
        return 0
    try:
        return StorageObject.from_resource(json.loads(data)).size
    except (ValueError, InvalidEvent):
        return 0


def decode_object_finalized(cloud_event: Any) -> ManifestWritten | NotForUs:
    """Cloud Storage object finalized: only a run's manifest is a trigger, by its name alone."""
    wrong = _not_of_type(cloud_event, FINALIZED_EVENT_TYPE)
    if wrong:
        return wrong
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    run_id = manifest_run_id(data.get("name", ""))
    if run_id is None:
        return NotForUs("not a run's manifest", quiet=True)
    try:
        obj = StorageObject.from_resource(data)
    except InvalidEvent as exc:
        return NotForUs(f"not a storage object: {exc}")
    return ManifestWritten(cloud_event["id"], obj.bucket, obj.name, run_id)


def decode_job_event(cloud_event: Any) -> JobEnded | NotForUs:
    """messagePublished on the job-events topic: a LogEntry the log sink forwarded."""
    wrong = _not_of_type(cloud_event, MESSAGE_PUBLISHED_EVENT_TYPE)
    if wrong:
        return wrong
    try:
        delivery = parse_message_published(cloud_event.data)
        terminal = classify(parse_log_entry(delivery.message.data))
    except (InvalidEvent, ValueError) as exc:
        return NotForUs(f"carries no LogEntry: {exc}")
    if terminal is None:
        return NotForUs("not a terminal job line")
    return JobEnded(cloud_event["id"], terminal)


@dataclass(frozen=True)
class BakeEnded:
    """The canary's bake is over: the task scheduled at its start published this (run id, models)."""

    event_id: str
    run_id: str
    candidate: str
    champion: str | None
    bake_started: datetime


@dataclass(frozen=True)
class RollbackAsked:
    """A user asked (mlrelay rollback) to serve an earlier registered version again."""

    event_id: str
    to_version: str | None  # MODEL@VERSION; None: the version that served before the current one
    requested_by: str


def decode_release(cloud_event: Any) -> BakeEnded | RollbackAsked | NotForUs:
    """messagePublished on the release topic: a bake's end or a rollback request, JSON in the data."""
    wrong = _not_of_type(cloud_event, MESSAGE_PUBLISHED_EVENT_TYPE)
    if wrong:
        return wrong
    event_id = cloud_event["id"]
    try:
        message = parse_message_published(cloud_event.data).message
        body = json.loads(message.data or b"null")
    except InvalidEvent as exc:
        return NotForUs(f"not a Pub/Sub delivery: {exc}")
    except (UnicodeDecodeError, ValueError) as exc:
        return NotForUs(f"the release message is not JSON: {exc}")
    if not isinstance(body, dict):
        return NotForUs("the release message is not a JSON object")
    action = body.get("action")
    if action == "rollback":
        to_version = body.get("to")
        if to_version is not None and not _is_versioned_name(to_version):
            return NotForUs(f"rollback 'to' must be MODEL@VERSION, not {str(to_version)[:80]!r}")
        return RollbackAsked(event_id, to_version, str(body.get("requested_by") or "unknown"))
    if action is not None:
        return NotForUs(f"unknown release action {str(action)[:40]!r} (only 'rollback', or a bake's end)")
    run_id, candidate, champion = body.get("run_id"), body.get("candidate"), body.get("champion")
    if not (isinstance(run_id, str) and is_run_id(run_id)):
        return NotForUs(f"a bake's end must name its run_id, not {str(run_id)[:80]!r}")
    if not (isinstance(candidate, str) and candidate and (champion is None or isinstance(champion, str))):
        return NotForUs("a bake's end must name its candidate (and champion) deployed model ids")
    try:
        started = parse_rfc3339(body.get("bake_started"))
    except (InvalidEvent, ValueError, TypeError):
        return NotForUs(f"a bake's end without its start time (bake_started {str(body.get('bake_started'))[:40]!r})")
    return BakeEnded(event_id, run_id, candidate, champion, started)


def _is_versioned_name(text: object) -> bool:
    """MODEL@VERSION with both parts given."""
    if not isinstance(text, str):
        return False
    model, _, version = text.rpartition("@")
    return bool(model.strip()) and bool(version.strip())
