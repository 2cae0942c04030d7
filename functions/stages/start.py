"""start_pipeline's stage: validate a run request, record the run, admit it, launch preprocessing once.

A run is admitted (functions.stages.admission) before anything is launched: it takes an active slot
and launches, or waits queued, or is refused with the reason. A queued run is started by
`admit_queued`, which the events that end runs call, through the same launch as a new one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from events.ledger import RunState, RunStatus
from events.run_id import is_run_id, run_id_for_message, run_id_for_trigger_object
from events.run_request import SOURCE_BIGQUERY, InvalidRunRequest, RunRequest, parse_run_request
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import NotFound, Platform, TooLarge
from functions.run_store import RunStore, is_trigger_name, launch_marker_name, preprocess_prefix
from functions.stages import admission
from functions.stages.result import Action, StageResult, launch_timing, record
from functions.triggers import StartMessage, StartTrigger, TriggerFile

MAX_TRIGGER_BYTES = 64 * 1024

log = logging.getLogger(__name__)


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

    repeated, held = _debounced(config, runs, run_id, trigger, origin, request)
    if repeated and _stranded(runs, held):
        # The run this repeats was recorded but not launched: its start event gave up (a replayed
        # dead letter is such a repeat), or is launching it this moment. The repeat carries that
        # run on (its launch claim keeps it to one launch) and is recorded as a duplicate of it.
        carried = resume_requested(config, platform, held, trigger.event_id)
        reason = f"{repeated}; that run had not launched, and this repeat carried it on ({carried.action.value})"
        record(runs, run_id, "request", "rejected", trigger.event_id, reason=reason, origin=origin)
        return carried
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

    result = _launch_preprocessing(config, platform, runs, run_id, request, trigger.event_id,
                                   admit=lambda: _admit_request(config, runs, run_id, trigger, origin))
    if result.action != Action.QUEUED:
        return result
    # A run that ended between this admission's look at the slots and the ticket's creation found
    # no ticket to start; looking again now that the ticket exists leaves no run waiting beside a
    # free slot. It may start this very run.
    started = admit_queued(config, platform, trigger.event_id)
    ours = next((r for r in started if r.run_id == run_id), result)
    others = [r.run_id for r in started if r.run_id != run_id and r.action == Action.LAUNCHED]
    return replace(ours, extra={**ours.extra, "admitted": others}) if others else ours


@dataclass(frozen=True)
class _Resumed:
    """What admission reads of a start event, for a run resumed without one (its time, its cause)."""

    event_id: str
    event_time: datetime


def resume_requested(config: Config, platform: Platform, run_id: str, cause: str) -> StageResult:
    """Admit and launch a run left `requested`, from its request.json, as its start event would have.

    Its start event failed every delivery after the run was recorded (it waits in the dead-letter
    topic), so nothing else would ever launch it: the reconcile sweep calls this. Admission uses
    the time the run was requested, and the launch claim and ledger make it once, whatever else
    (a late redelivery, a replay) comes.
    """
    runs = RunStore(platform.storage, config.bucket)
    try:
        origin = runs.request_origin(run_id)
        request = runs.read_request(run_id)
    except (NotFound, InvalidRunRequest, ValueError) as exc:
        return StageResult(Action.IGNORED, run_id, f"no request to start it from: {exc}")
    records = runs.ledger(run_id).get(run_id, [])
    at = min((r.time for r in records if r.state == RunState.REQUESTED), default=datetime.now(timezone.utc))
    resumed = _Resumed(cause, at)
    return _launch_preprocessing(config, platform, runs, run_id, request, cause,
                                 admit=lambda: _admit_request(config, runs, run_id, resumed, origin))


def admit_queued(config: Config, platform: Platform, cause_event_id: str = "admission") -> list[StageResult]:
    """Start the oldest queued runs while a slot is free: what each start did, oldest first.

    Called after every stage that may have ended a run (functions.main, `cause_event_id` being the
    event that stage handled), and by the reconcile sweep as a backstop. With nothing queued it
    costs one listing; with runs queued and every slot held by a live run, a listing of the slots,
    one read per slot, a look at each holder's ledger and the oldest ticket's read.

    It never raises. Its caller's own work is done by the time it runs: raising would make the
    platform deliver that event again, repeating an idempotent stage only to retry the queue, and,
    for a lasting fault (a queued run whose launch keeps failing), would push an event whose work
    was done into the dead-letter topic while retries crowd the subscription. A failure is logged
    instead; the queue keeps its tickets, and a run that took a slot before its launch failed keeps
    the slot, so the next event that ends a run, or the sweep, starts it.
    """
    runs = RunStore(platform.storage, config.bucket)
    started: list[StageResult] = []
    try:
        tickets = runs.queue_tickets()
        if not tickets:
            return started
        slots = admission.Slots.read(config, runs)
        for ticket in tickets:
            entry = runs.queued_entry(ticket)
            run_id = (entry or {}).get("run_id")
            if not isinstance(run_id, str) or not is_run_id(run_id):
                runs.dequeue(ticket)  # started and dequeued since the listing, or not a ticket at all
                continue
            # a queued run may hold a slot already: one taken before its launch failed
            if slots.held_by(run_id) is None and not slots.has_free():
                break
            result = _start_queued(config, platform, runs, slots, ticket, run_id, cause_event_id)
            if result.action == Action.QUEUED:
                break  # another admission took the slot this view saw free
            started.append(result)
    except Exception:
        log.warning("starting queued runs failed; the next run's end, or the reconcile sweep, tries again",
                    exc_info=True)
    return started


class NotLaunched(Exception):
    """Raised under a run's launch claim to launch nothing: launch_once then removes the claim, so a
    later delivery decides afresh (and finds the run queued, or ended). `result` is what was done."""

    def __init__(self, result: StageResult):
        super().__init__(result.detail)
        self.result = result


def _launch_preprocessing(config: Config, platform: Platform, runs: RunStore, run_id: str, request: RunRequest,
                          cause: str, admit: Callable[[], None]) -> StageResult:
    """Launch the run's preprocessing once, if `admit` (called under the launch claim) lets it.

    The one launch of both a new run and a queued one, so both record `preprocessing` alike.
    """
    source = _source_uri(config, request)
    out_uri = runs.uri(preprocess_prefix(run_id))
    started = [time.monotonic()]

    def launch() -> str:
        admit()
        started[0] = time.monotonic()
        return platform.jobs.launch_preprocess(run_id, source, out_uri, request.limit, {"run_id": run_id}).job_id

    try:
        claim = launch_once(
            platform.storage,
            marker=launch_marker_name(run_id, "preprocess"),
            find_existing=lambda: None,  # Dataflow refuses a second active job of the same name
            launch=launch,
        )
    except NotLaunched as declined:
        return declined.result
    if claim.how == Claimed.LAUNCHED:
        record(runs, run_id, "preprocess", "preprocessing", cause, job_ids={"preprocess": claim.job},
               timings=launch_timing(started[0]), source=source, output=out_uri)
    return StageResult.of_claim(claim, run_id)


def _admit_request(config: Config, runs: RunStore, run_id: str, trigger: StartTrigger | _Resumed,
                   origin: dict) -> None:
    """Admit a new run, under its launch claim: return to launch it, or raise NotLaunched.

    Its ledger is read first, under the claim, so that a redelivery of a run that is queued or has
    ended (a refusal is an end) neither queues it twice nor admits it after all.
    """
    status = _status(runs, run_id)
    if status is not None and status.terminal:
        raise NotLaunched(StageResult(Action.DUPLICATE, run_id, f"the run has ended already ({status.state.value})"))
    if status is not None and status.state == RunState.QUEUED:
        raise NotLaunched(StageResult(Action.DUPLICATE, run_id, f"the run is queued already: {status.reason}"))
    if status is not None and status.state != RunState.REQUESTED:
        return  # launched before its claim was lost: the job API refuses a second job of its name
    decision = admission.admit_request(config, runs, run_id, trigger.event_time)
    if decision.outcome == admission.Admitted.SLOT:
        return
    state = decision.outcome.value  # "queued" or "rejected"
    record(runs, run_id, "request", state, trigger.event_id, reason=decision.reason, origin=origin,
           **decision.details)
    raise NotLaunched(StageResult(Action(state), run_id, decision.reason, extra=decision.details))


def _start_queued(config: Config, platform: Platform, runs: RunStore, slots: admission.Slots, ticket: int,
                  run_id: str, cause: str) -> StageResult:
    """Start one queued run in a free slot; its ticket goes once the run is launched or has ended.

    Action.QUEUED: no slot was free after all (the ticket stays); IN_FLIGHT: another delivery is
    deciding for the run right now (it keeps the ticket until that one's pass over the queue).
    """
    try:
        request = runs.read_request(run_id)
    except (NotFound, InvalidRunRequest, ValueError, KeyError, TypeError):
        reason = f"queued run {run_id} has no readable request.json, so it cannot be started"
        record(runs, run_id, "request", "failed", cause, reason=reason)
        runs.dequeue(ticket)
        return StageResult(Action.REJECTED, run_id, reason)

    def admit() -> None:
        status = _status(runs, run_id)
        if status is not None and status.terminal:
            ended = f"the run ended while queued ({status.state.value})"
            raise NotLaunched(StageResult(Action.DUPLICATE, run_id, ended))
        if slots.hold(run_id) is None:
            raise NotLaunched(StageResult(Action.QUEUED, run_id, "no active slot is free"))

    result = _launch_preprocessing(config, platform, runs, run_id, request, cause, admit)
    if result.action in (Action.LAUNCHED, Action.DUPLICATE):
        runs.dequeue(ticket)
    return result


def _status(runs: RunStore, run_id: str) -> RunStatus | None:
    statuses = runs.statuses(run_id)
    return statuses[0] if statuses else None


def _stranded(runs: RunStore, run_id: str) -> bool:
    """Whether a run was recorded `requested` and nothing since: not launched, queued or ended."""
    status = _status(runs, run_id)
    return status is not None and status.state == RunState.REQUESTED


def _debounced(config: Config, runs: RunStore, run_id: str, trigger: StartTrigger, origin: dict,
               request: RunRequest) -> tuple[str, str]:
    """Why this request repeats one that started a run moments ago, and that run ("", "" when it does not).

    Keyed on the origin (the trigger file's name, or the topic) and the request as validated, so
    re-uploading one file or publishing one body in a burst starts one run; the time is the
    event's own (its object's finalize time, or its publish time), so a redelivery is the same run.
    """
    if config.debounce_seconds <= 0:
        return "", ""
    where = origin.get("object") or origin.get("topic")
    key = hashlib.sha256(json.dumps([origin["kind"], where, json.loads(request.to_json())],
                                    sort_keys=True).encode()).hexdigest()
    held = runs.debounce(key, run_id, trigger.event_time, config.debounce_seconds)
    if held is None:
        return "", ""
    other, since = held
    return (f"the same request from {where} started run {other} {since:.0f} s before this one; a repeat within "
            f"{config.debounce_seconds} s is not run again (change the request, or wait)"), other


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
    except TooLarge:
        raise InvalidRunRequest(f"trigger file is larger than {limit}") from None
    except ValueError as exc:  # a name no object of the bucket can have
        raise InvalidRunRequest(f"trigger file {trigger.uri} cannot be read: {exc}") from None


def _source_uri(config: Config, request: RunRequest) -> str:
    source = request.source or config.default_source
    return "bigquery" if source == SOURCE_BIGQUERY else config.uri(source)
