"""start_pipeline's stage: validate a run request, record the run, launch preprocessing once."""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

from events.run_id import run_id_for_message, run_id_for_trigger_object
from events.run_request import SOURCE_BIGQUERY, InvalidRunRequest, RunRequest, parse_run_request
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import NotFound, Platform
from functions.run_store import RunStore, is_trigger_name, launch_marker_name, preprocess_prefix
from functions.stages.result import Action, StageResult, launch_timing, record
from functions.triggers import StartMessage, StartTrigger, TriggerFile

MAX_TRIGGER_BYTES = 64 * 1024


def start_run(config: Config, platform: Platform, trigger: StartTrigger) -> StageResult:
    runs = RunStore(platform.storage, config.bucket)
    if isinstance(trigger, TriggerFile):
        if trigger.bucket != config.bucket or not is_trigger_name(trigger.object_name):
            return StageResult(Action.IGNORED, detail=f"{trigger.uri} is not a trigger file")
        run_id = run_id_for_trigger_object(trigger.bucket, trigger.object_name, trigger.generation,
                                           trigger.event_time)
        origin = {"kind": "trigger-file", "object": trigger.uri, "generation": str(trigger.generation)}
    else:
        run_id = run_id_for_message(trigger.topic, trigger.message_id, trigger.event_time)
        origin = {"kind": "message", "topic": trigger.topic, "messageId": trigger.message_id}

    try:
        request = parse_run_request(_request_bytes(runs, trigger))
    except InvalidRunRequest as exc:
        reason = str(exc)
        record(runs, run_id, "request", "rejected", trigger.event_id, reason=reason, origin=origin)
        return StageResult(Action.REJECTED, run_id, reason)

    repeated = _debounced(config, runs, run_id, trigger, origin, request)
    if repeated:
        record(runs, run_id, "request", "rejected", trigger.event_id, reason=repeated, origin=origin)
        return StageResult(Action.REJECTED, run_id, repeated)

    request_doc = {"runId": run_id, "origin": origin, "eventId": trigger.event_id,
                   "request": json.loads(request.to_json())}
    # Stamped before request.json exists: once it does, a duplicate delivery may launch and record
    # "preprocessing" before this one writes "requested", and the ledger orders records by time.
    requested_at = datetime.now(timezone.utc)
    if runs.create_request(run_id, request_doc):
        record(runs, run_id, "request", "requested", trigger.event_id, at=requested_at, origin=origin,
               request=request_doc["request"])

    source = _source_uri(config, request)
    out_uri = runs.uri(preprocess_prefix(run_id))
    started = time.monotonic()
    claim = launch_once(
        platform.storage,
        marker=launch_marker_name(run_id, "preprocess"),
        find_existing=lambda: None,  # Dataflow refuses a second active job of the same name
        launch=lambda: platform.jobs.launch_preprocess(run_id, source, out_uri, request.limit,
                                                       {"run_id": run_id}).job_id,
    )
    if claim.how == Claimed.LAUNCHED:
        record(runs, run_id, "preprocess", "preprocessing", trigger.event_id,
               job_ids={"preprocess": claim.job}, timings=launch_timing(started), source=source,
               output=out_uri)
    return StageResult.of_claim(claim, run_id)


def _debounced(config: Config, runs: RunStore, run_id: str, trigger: StartTrigger, origin: dict,
               request: RunRequest) -> str:
    """Why this request repeats one that started a run moments ago ("" when it does not).

    Keyed on the origin (the trigger file's name, or the topic) and the request as validated, so
    re-uploading one file or publishing one body in a burst starts one run; the time is the
    event's own (its object's finalize time, or its publish time), so a redelivery is the same run.
    """
    if config.debounce_seconds <= 0:
        return ""
    where = origin.get("object") or origin.get("topic")
    key = hashlib.sha256(json.dumps([origin["kind"], where, json.loads(request.to_json())],
                                    sort_keys=True).encode()).hexdigest()
    held = runs.debounce(key, run_id, trigger.event_time, config.debounce_seconds)
    if held is None:
        return ""
    other, since = held
    return (f"the same request from {where} started run {other} {since:.0f} s before this one; a repeat within "
            f"{config.debounce_seconds} s is not run again (change the request, or wait)")


def _request_bytes(runs: RunStore, trigger: StartTrigger) -> bytes:
    """The run request: a message's data, or the trigger file's content (bounded in size)."""
    if isinstance(trigger, StartMessage):
        return trigger.data
    limit = f"the {MAX_TRIGGER_BYTES // 1024} KiB a run request may be"
    if trigger.size > MAX_TRIGGER_BYTES:
        raise InvalidRunRequest(f"trigger file is {trigger.size} bytes, larger than {limit}")
    try:
        return runs.read_trigger(trigger.object_name, max_bytes=MAX_TRIGGER_BYTES)
    except NotFound:
        raise InvalidRunRequest(f"trigger file {trigger.uri} no longer exists") from None
    except ValueError:
        raise InvalidRunRequest(f"trigger file is larger than {limit}") from None


def _source_uri(config: Config, request: RunRequest) -> str:
    source = request.source or config.default_source
    return "bigquery" if source == SOURCE_BIGQUERY else config.uri(source)
