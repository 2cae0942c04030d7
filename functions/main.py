"""The chain's three Cloud Functions (2nd gen, CloudEvent signature).

Each entry point parses its event, hands the decision to `functions.stages`, and logs one line.
An event that is not what the trigger should deliver is logged and acknowledged (a retry would not
make it better); a `TransientError` propagates so that the platform delivers the event again.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache

import functions_framework

from events.errors import InvalidEvent
from events.log_entries import JobKind, classify, parse_log_entry
from events.pubsub import GcsNotification, is_gcs_notification, parse_message_published, topic_from_source
from events.storage import StorageObject
from events.timestamps import parse_rfc3339
from functions import stages
from functions.adapters import build_platform
from functions.config import Config

log = logging.getLogger("mlrelay.functions")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@lru_cache(maxsize=1)
def _context():
    config = Config.from_env()
    return config, build_platform(config)


def _report(function: str, event_id: str, outcome: stages.Outcome) -> None:
    log.info(json.dumps({"function": function, "event": event_id, "action": outcome.action,
                         "run_id": outcome.run_id, "job": outcome.job, "detail": outcome.detail}))


@functions_framework.cloud_event
def start_pipeline(cloud_event) -> None:
    """messagePublished on the start topic: a trigger file's notification, a cron tick, a message."""
    config, platform = _context()
    event_id = cloud_event["id"]
    try:
        delivery = parse_message_published(cloud_event.data)
        event_time = parse_rfc3339(cloud_event["time"])
        message = delivery.message
        if is_gcs_notification(message.attributes):
            notification = GcsNotification.from_attributes(message.attributes)
            if not notification.is_finalize:
                _report("start_pipeline", event_id, stages.Outcome("ignored", detail=notification.event_type))
                return
            size = 0
            if message.data:
                try:
                    size = StorageObject.from_resource(json.loads(message.data)).size
                except (ValueError, InvalidEvent):
                    size = 0
            trigger = stages.StartTrigger(
                origin="trigger-file", event_id=event_id, event_time=event_time, raw=None,
                bucket=notification.bucket, object_name=notification.object_name,
                generation=notification.generation, object_size=size)
        else:
            trigger = stages.StartTrigger(
                origin="message", event_id=event_id, event_time=event_time, raw=message.data,
                topic=topic_from_source(cloud_event["source"]), message_id=message.message_id or event_id)
    except InvalidEvent as exc:
        log.warning("start_pipeline: event %s is not a Pub/Sub delivery: %s", event_id, exc)
        return
    _report("start_pipeline", event_id, stages.start_run(config, platform, trigger))


@functions_framework.cloud_event
def on_preprocess_output(cloud_event) -> None:
    """Cloud Storage object finalized in the pipeline bucket: start training on a run's manifest."""
    config, platform = _context()
    event_id = cloud_event["id"]
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    name = data.get("name", "")
    if stages.manifest_run_id(name) is None:
        return  # every other object of the bucket: nothing to read, nothing to log
    try:
        obj = StorageObject.from_resource(data)
    except InvalidEvent as exc:
        log.warning("on_preprocess_output: event %s is not a storage object: %s", event_id, exc)
        return
    _report("on_preprocess_output", event_id,
            stages.start_training(config, platform, obj.bucket, obj.name, event_id))


@functions_framework.cloud_event
def on_training_complete(cloud_event) -> None:
    """messagePublished on the job-events topic: a LogEntry a log sink forwarded."""
    config, platform = _context()
    event_id = cloud_event["id"]
    try:
        delivery = parse_message_published(cloud_event.data)
        terminal = classify(parse_log_entry(delivery.message.data))
    except (InvalidEvent, ValueError) as exc:
        log.warning("on_training_complete: event %s carries no LogEntry: %s", event_id, exc)
        return
    if terminal is None:
        _report("on_training_complete", event_id, stages.Outcome("ignored", detail="not a terminal job line"))
        return
    if terminal.kind == JobKind.VERTEX_CUSTOM_JOB:
        outcome = stages.finish_training(config, platform, terminal, event_id)
    elif terminal.kind == JobKind.VERTEX_DEPLOY_MODEL:
        outcome = stages.finish_deploy(config, platform, terminal.job_id, event_id)
    else:  # dataflow: only failures are routed here; success shows as the manifest
        outcome = stages.fail_preprocess(config, platform, terminal.job_name or terminal.job_id, event_id,
                                         reason=f"Dataflow job {terminal.job_id} failed: {terminal.message}")
    _report("on_training_complete", event_id, outcome)
