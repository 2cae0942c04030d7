"""CloudEvents decoded into the typed triggers the stages act on.

Each function's trigger delivers more than its stage wants: the start topic carries trigger-file
notifications and plain messages alike, the bucket's storage trigger fires for every object, the
job-events topic for every line the sink forwards. Decoding sorts each event into exactly one
trigger, or into `NotForUs` with the reason, without any I/O. An event that is not what the
trigger should deliver is acknowledged: a retry would not make it better.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.errors import InvalidEvent
from events.log_entries import (
    DATAFLOW_RESOURCE_TYPE,
    VERTEX_RESOURCE_TYPE,
    JobKind,
    JobTerminal,
    LogEntry,
    classify,
    parse_log_entry,
)
from events.pubsub import (
    MESSAGE_PUBLISHED_EVENT_TYPE,
    GcsNotification,
    MessageDelivery,
    is_gcs_notification,
    parse_message_published,
    topic_from_source,
)
from events.run_id import is_run_id
from events.storage import FINALIZED_EVENT_TYPE, StorageObject, parse_finalized_event
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


def _delivery(cloud_event: Any, topic: str | None) -> MessageDelivery | NotForUs:
    """A messagePublished event's message, once its type is that and its source names a topic
    (`topic`, when given): every Pub/Sub trigger's first check.

    The source is the topic the Eventarc trigger is bound to; a message of another topic is a
    misrouted trigger or a forged event, which a retry would not make right."""
    wrong = _not_of_type(cloud_event, MESSAGE_PUBLISHED_EVENT_TYPE)
    if wrong:
        return wrong
    try:
        source_topic = topic_from_source(cloud_event.get("source") or "")
        delivery = parse_message_published(cloud_event.data)
    except InvalidEvent as exc:
        return NotForUs(f"not a Pub/Sub delivery: {exc}")
    if topic is not None and source_topic != topic:
        return NotForUs(f"a message of topic {source_topic!r}, not of {topic!r}")
    return delivery


def decode_start(cloud_event: Any, *, topic: str | None = None) -> StartTrigger | NotForUs:
    """messagePublished on the start topic (`topic`: its name, to refuse messages of any other)."""
    event_id = cloud_event["id"]
    delivery = _delivery(cloud_event, topic)
    if isinstance(delivery, NotForUs):
        return delivery
    message = delivery.message
    try:
        event_time = parse_rfc3339(cloud_event.get("time"))
    except ValueError as exc:
        return NotForUs(f"the event's time is not an RFC 3339 time: {exc}")
    if not is_gcs_notification(message.attributes):
        return StartMessage(event_id, event_time, topic_from_source(cloud_event["source"]),
                            message.message_id or event_id, message.data)
    try:
        notification = GcsNotification.from_attributes(message.attributes)
    except InvalidEvent as exc:
        return NotForUs(f"a malformed Cloud Storage notification: {exc}")
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
    except (ValueError, RecursionError, InvalidEvent):
        return 0


def decode_object_finalized(cloud_event: Any) -> ManifestWritten | NotForUs:
    """Cloud Storage object finalized: only a run's manifest is a trigger, by its name alone.

    Every other object is dropped quietly, without reading it; an event whose data is no object
    resource at all (no name) is not an everyday object, and says so."""
    wrong = _not_of_type(cloud_event, FINALIZED_EVENT_TYPE)
    if wrong:
        return wrong
    data = cloud_event.data
    if not isinstance(data, dict):
        kind = "no data" if data is None else f"{type(data).__name__} data"
        return NotForUs(f"not a storage object: the event carries {kind}, not an object resource")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return NotForUs(f"not a storage object: its 'name' must be a non-empty string, not {name!r:.60}")
    run_id = manifest_run_id(name)
    if run_id is None:
        return NotForUs("not a run's manifest", quiet=True)
    try:
        obj = parse_finalized_event(cloud_event, data)  # the source must name the object's bucket
    except InvalidEvent as exc:
        return NotForUs(f"not a storage object: {exc}")
    return ManifestWritten(cloud_event["id"], obj.bucket, obj.name, run_id)


def decode_job_event(cloud_event: Any, *, topic: str | None = None) -> JobEnded | NotForUs:
    """messagePublished on the job-events topic: a LogEntry the log sink forwarded."""
    delivery = _delivery(cloud_event, topic)
    if isinstance(delivery, NotForUs):
        return delivery
    try:
        entry = parse_log_entry(delivery.message.data)
        terminal = classify(entry)
    except InvalidEvent as exc:
        return NotForUs(f"carries no LogEntry: {exc}")
    if terminal is None:
        return NotForUs(_why_not_terminal(entry))
    # The id is put into the job API's path to confirm the end: anything but an id is refused here.
    if not terminal.job_id:
        return NotForUs(f"the {terminal.kind.value} entry names no job (no job or operation id)")
    if terminal.kind == JobKind.VERTEX_CUSTOM_JOB and not (terminal.job_id.isascii() and terminal.job_id.isdigit()):
        return NotForUs(f"the entry's Vertex AI job id {terminal.job_id[:60]!r} is not a job id (a number)")
    if terminal.kind == JobKind.DATAFLOW_JOB and not _DATAFLOW_JOB_ID.fullmatch(terminal.job_id):
        return NotForUs(f"the entry's Dataflow job id {terminal.job_id[:60]!r} is not a job id")
    if terminal.kind == JobKind.VERTEX_DEPLOY_MODEL and not _DEPLOY_OPERATION.fullmatch(terminal.job_id):
        return NotForUs(f"the DeployModel audit entry's operation {terminal.job_id[:120]!r} is not an "
                        "operation name (projects/P/locations/R/endpoints/E/operations/N)")
    return JobEnded(cloud_event["id"], terminal)


# A Dataflow job id (2026-11-27_05_01_03-4369315246414288431): letters, digits, '-' and '_'.
_DATAFLOW_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# The operation of a DeployModel audit entry (operation.id), or its bare number.
_DEPLOY_OPERATION = re.compile(r"(?:projects/[^/]+/locations/[^/]+/endpoints/[^/]+/operations/)?[0-9]+")


def _why_not_terminal(entry: LogEntry) -> str:
    """Why a LogEntry ends no job: an ordinary line of a job, or an entry of no job at all."""
    if entry.resource_type in (VERTEX_RESOURCE_TYPE, DATAFLOW_RESOURCE_TYPE) or entry.proto_payload is not None:
        return "not a terminal job line"
    if not entry.resource_type:
        return "not a terminal job line: the LogEntry names no resource (resource.type)"
    return (f"not a terminal job line: a LogEntry of resource type {entry.resource_type[:60]!r}, not of a "
            f"job ({VERTEX_RESOURCE_TYPE}, {DATAFLOW_RESOURCE_TYPE}) or a DeployModel audit entry")


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


def decode_release(cloud_event: Any, *, topic: str | None = None) -> BakeEnded | RollbackAsked | NotForUs:
    """messagePublished on the release topic: a bake's end or a rollback request, JSON in the data."""
    event_id = cloud_event["id"]
    delivery = _delivery(cloud_event, topic)
    if isinstance(delivery, NotForUs):
        return delivery
    try:
        body = json.loads(delivery.message.data or b"null")
    except RecursionError:
        return NotForUs("the release message is not JSON: nested too deeply")
    except ValueError as exc:  # UnicodeDecodeError too
        return NotForUs(f"the release message is not JSON: {exc}")
    if not isinstance(body, dict):
        return NotForUs("the release message is not a JSON object")
    action = body.get("action")
    if action == "rollback":
        to_version = body.get("to")
        if to_version is not None and not is_versioned_model_name(to_version):
            return NotForUs(f"rollback 'to' must be MODEL@VERSION ({VERSIONED_MODEL_FORM}), "
                            f"not {str(to_version)[:80]!r}")
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


# A registered version's name, as the registry and the release records give it: the model's
# resource name, then @ and a version id or alias. Anything else would be put into the model API's
# path as it came (a short "babyweight@3" names no resource there).
VERSIONED_MODEL_FORM = "projects/P/locations/R/models/M@VERSION"
_VERSIONED_MODEL_NAME = re.compile(r"projects/[^/@\s]+/locations/[^/@\s]+/models/[^/@\s]+@[A-Za-z0-9_-]+")


def is_versioned_model_name(text: object) -> bool:
    """Whether `text` is a registered version's full name, projects/P/locations/R/models/M@VERSION."""
    return isinstance(text, str) and _VERSIONED_MODEL_NAME.fullmatch(text) is not None


@dataclass(frozen=True)
class SweepAsked:
    """A tick of the reconcile sweep's schedule (Cloud Scheduler publishes; the body is not read)."""

    event_id: str


def decode_sweep(cloud_event: Any, *, topic: str | None = None) -> SweepAsked | NotForUs:
    """messagePublished on the reconcile topic: any message of it is a tick."""
    delivery = _delivery(cloud_event, topic)
    return delivery if isinstance(delivery, NotForUs) else SweepAsked(cloud_event["id"])
