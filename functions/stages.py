"""What each stage of the chain decides and does, apart from how its event arrived.

Each stage takes parsed event values and the platform, acts, records what it did in the run ledger
and returns an `Outcome`. Rules from the design, kept here:
- a function starts work and returns; it never waits on a job;
- every stage is idempotent: a redelivered or duplicated event finds its work done (a create-only
  launch marker, deterministic job names, a job lookup by run label) and does nothing twice;
- bad input is rejected with a reason in the ledger and acknowledged; transient faults raise.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from events.ledger import LedgerEvent
from events.log_entries import JobTerminal
from events.run_id import run_id_for_message, run_id_for_trigger_object
from events.run_request import SOURCE_BIGQUERY, InvalidRunRequest, RunRequest, parse_run_request
from functions.config import Config
from functions.platform import AlreadyExists, NotFound, Platform, TransientError

TRIGGER_PREFIX = "triggers/"
MAX_TRIGGER_BYTES = 64 * 1024
MANIFEST_NAME = re.compile(r"^runs/(?P<run_id>[a-z][a-z0-9-]{0,62})/preprocess/_MANIFEST\.json$")
MANIFEST_FORMAT = "mlrelay.preprocess/v1"
# A launch marker left by a delivery that died between claiming the work and launching it is taken
# over after this long (longer than the functions' 540 s limit, so a live owner is never robbed).
LAUNCH_LEASE_S = 600.0


@dataclass
class Outcome:
    """What a stage did, for the function's log line and for tests."""

    action: str  # launched, duplicate, rejected, ignored, recorded, in-flight
    run_id: str | None = None
    detail: str = ""
    job: str | None = None
    extra: dict = field(default_factory=dict)


# --- the run ledger -----------------------------------------------------------------------------


def record(platform: Platform, run_id: str, stage: str, state: str, cause: str, *,
           job_ids: dict[str, str] | None = None, timings: dict[str, float] | None = None,
           at: datetime | None = None, **details) -> None:
    """Append one record to the run's ledger (runs/<id>/events/<time>-<stage>.json).

    The record's time is now, or `at`: the moment the step was decided, when a racing delivery
    could record the next step between that moment and this write.
    """
    event = LedgerEvent(run_id=run_id, stage=stage, state=state, time=at or datetime.now(timezone.utc),
                        cause_event_id=cause, job_ids=job_ids or {}, details=details,
                        timings=timings or {})
    platform.storage.write(event.object_name, event.to_json())


def _since(started: float) -> dict[str, float]:
    return {"launch_s": round(time.monotonic() - started, 4)}


# --- launch once --------------------------------------------------------------------------------


def launch_once(platform: Platform, marker: str, find_existing: Callable[[], str | None],
                launch: Callable[[], str]) -> tuple[str, str | None]:
    """Run `launch` at most once per marker, however many deliveries race here.

    Returns (how, job): ("launched", job), ("duplicate", job) when the work exists already, or
    ("in-flight", None) when another delivery holds the marker and is launching right now.
    """
    existing = find_existing()
    if existing:
        return "duplicate", existing
    token = uuid.uuid4().hex
    claim = json.dumps({"owner": token, "claimed": time.time()}).encode()
    if not platform.storage.create(marker, claim):
        try:
            held = json.loads(platform.storage.read(marker))
        except (NotFound, ValueError):
            raise TransientError(f"launch marker {marker} is being written; try again") from None
        if held.get("job"):
            return "duplicate", held["job"]
        if held.get("owner") == token:
            pass  # our own claim: the create succeeded but its answer was lost and retried
        elif time.time() - float(held.get("claimed", 0)) < LAUNCH_LEASE_S:
            return "in-flight", None
        else:
            platform.storage.write(marker, claim)  # the owner died: take the work over
    try:
        job = launch()
    except AlreadyExists:
        job = find_existing() or "already-exists"
        platform.storage.write(marker, json.dumps({"owner": token, "job": job}).encode())
        return "duplicate", job
    except Exception:
        platform.storage.delete(marker)  # let the retry claim it again
        raise
    platform.storage.write(marker, json.dumps({"owner": token, "job": job, "claimed": time.time()}).encode())
    return "launched", job


# --- stage 1: start_pipeline --------------------------------------------------------------------


@dataclass(frozen=True)
class StartTrigger:
    """Where a run request came from, and the identity that makes its run id."""

    origin: str  # "trigger-file" | "message"
    event_id: str
    event_time: datetime
    raw: bytes | None  # the request bytes, or None when a trigger file must be read
    bucket: str = ""
    object_name: str = ""
    generation: int = 0
    object_size: int = 0
    topic: str = ""
    message_id: str = ""


def start_run(config: Config, platform: Platform, trigger: StartTrigger) -> Outcome:
    if trigger.origin == "trigger-file":
        if trigger.bucket != config.bucket or not trigger.object_name.startswith(TRIGGER_PREFIX):
            return Outcome("ignored", detail=f"gs://{trigger.bucket}/{trigger.object_name} is not a trigger file")
        run_id = run_id_for_trigger_object(trigger.bucket, trigger.object_name, trigger.generation, trigger.event_time)
        origin = {"kind": "trigger-file", "object": f"gs://{trigger.bucket}/{trigger.object_name}",
                  "generation": str(trigger.generation)}
    else:
        run_id = run_id_for_message(trigger.topic, trigger.message_id, trigger.event_time)
        origin = {"kind": "message", "topic": trigger.topic, "messageId": trigger.message_id}

    try:
        raw = trigger.raw if trigger.raw is not None else _read_trigger_file(platform, trigger)
        request = parse_run_request(raw)
    except InvalidRunRequest as exc:
        reason = str(exc)
        record(platform, run_id, "request", "rejected", trigger.event_id, reason=reason, origin=origin)
        return Outcome("rejected", run_id, reason)

    request_doc = {"runId": run_id, "origin": origin, "eventId": trigger.event_id,
                   "request": json.loads(request.to_json())}
    # Stamped before request.json exists: once it does, a duplicate delivery may launch and record
    # "preprocessing" before this one writes "requested", and the ledger orders records by time.
    requested_at = datetime.now(timezone.utc)
    if platform.storage.create(f"runs/{run_id}/request.json", json.dumps(request_doc, indent=2).encode()):
        record(platform, run_id, "request", "requested", trigger.event_id, at=requested_at, origin=origin,
               request=request_doc["request"])

    source = _source_uri(config, request)
    out_uri = config.uri(f"runs/{run_id}/preprocess/")
    started = time.monotonic()
    how, job = launch_once(
        platform,
        marker=f"runs/{run_id}/preprocess/_LAUNCHED",
        find_existing=lambda: None,  # Dataflow refuses a second active job of the same name
        launch=lambda: platform.jobs.launch_preprocess(run_id, source, out_uri, request.limit,
                                                       {"run_id": run_id}).job_id,
    )
    if how == "launched":
        record(platform, run_id, "preprocess", "preprocessing", trigger.event_id,
               job_ids={"preprocess": job}, timings=_since(started), source=source, output=out_uri)
    return Outcome(how, run_id, job=job)


def read_run_request(platform: Platform, run_id: str) -> RunRequest:
    """The validated request a run was started with (runs/<id>/request.json)."""
    doc = json.loads(platform.storage.read(f"runs/{run_id}/request.json"))
    return parse_run_request(json.dumps(doc["request"]))


def _read_trigger_file(platform: Platform, trigger: StartTrigger) -> bytes:
    if trigger.object_size > MAX_TRIGGER_BYTES:
        raise InvalidRunRequest(f"trigger file is {trigger.object_size} bytes, larger than the "
                                f"{MAX_TRIGGER_BYTES // 1024} KiB a run request may be")
    try:
        return platform.storage.read(trigger.object_name, max_bytes=MAX_TRIGGER_BYTES)
    except NotFound:
        raise InvalidRunRequest(f"trigger file gs://{trigger.bucket}/{trigger.object_name} no longer exists") from None
    except ValueError:
        raise InvalidRunRequest(f"trigger file is larger than the {MAX_TRIGGER_BYTES // 1024} KiB a run "
                                f"request may be") from None


def _source_uri(config: Config, request: RunRequest) -> str:
    source = request.source or config.default_source
    return "bigquery" if source == SOURCE_BIGQUERY else config.uri(source)


# --- stage 2: on_preprocess_output ---------------------------------------------------------------


def manifest_run_id(object_name: str) -> str | None:
    """The run id when the object is a run's preprocessing manifest, else None (cheap: no I/O)."""
    match = MANIFEST_NAME.match(object_name)
    return match.group("run_id") if match else None


def check_manifest(manifest: object, run_id: str) -> str | None:
    """The reason a manifest cannot start training, or None when it can."""
    if not isinstance(manifest, dict):
        return "manifest is not a JSON object"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"manifest format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}"
    if manifest.get("run_id") not in (None, run_id):
        return f"manifest names run {manifest.get('run_id')!r}, not {run_id!r}"
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        return "manifest has no splits"
    for split in ("train", "eval"):
        entry = splits.get(split)
        if not isinstance(entry, dict) or not entry.get("shards"):
            return f"manifest lists no {split} shards"
        if not isinstance(entry.get("rows"), int) or entry["rows"] <= 0:
            return f"manifest has no {split} rows"
    return None


def start_training(config: Config, platform: Platform, bucket: str, object_name: str,
                   event_id: str) -> Outcome:
    run_id = manifest_run_id(object_name)
    if bucket != config.bucket or run_id is None:
        return Outcome("ignored")
    try:
        manifest = json.loads(platform.storage.read(object_name, max_bytes=16 << 20))
        problem = check_manifest(manifest, run_id)
    except NotFound:
        problem = "manifest disappeared before it could be read"
    except ValueError as exc:
        problem = f"manifest is not readable JSON: {exc}"
    request = None
    try:
        request = read_run_request(platform, run_id)
    except NotFound:
        problem = problem or f"run {run_id} has no request.json"
    if problem:
        record(platform, run_id, "train", "failed", event_id, reason=problem)
        return Outcome("rejected", run_id, problem)

    base_output = config.uri(f"runs/{run_id}/train/")
    manifest_uri = config.uri(object_name)
    started = time.monotonic()
    how, job = launch_once(
        platform,
        marker=f"runs/{run_id}/train/_LAUNCHED",
        find_existing=lambda: next((j.job_id for j in platform.jobs.find_training_jobs(run_id)), None),
        launch=lambda: platform.jobs.launch_training(run_id, manifest_uri, base_output,
                                                     request.trainer_args(), {"run_id": run_id}).job_id,
    )
    if how == "launched":
        record(platform, run_id, "train", "training", event_id, job_ids={"train": job},
               timings=_since(started), manifest=manifest_uri, output=base_output,
               rows={k: v.get("rows") for k, v in manifest["splits"].items()},
               input=manifest.get("input", {}))
    return Outcome(how, run_id, job=job)


# --- stage 3: on_training_complete ---------------------------------------------------------------


def finish_training(config: Config, platform: Platform, terminal: JobTerminal, event_id: str) -> Outcome:
    """A training job's terminal log line arrived: confirm with the job API, then deploy or fail."""
    job = platform.jobs.get_training_job(terminal.job_id)
    if not job.terminal:
        # The log line is only the doorbell; the API is the truth. Try again shortly.
        raise TransientError(f"job {job.job_id} logged an end but its state is {job.state}")
    run_id = job.labels.get("run_id")
    if not run_id:
        return Outcome("ignored", detail=f"job {job.job_id} has no run_id label")
    if job.state != "JOB_STATE_SUCCEEDED":
        reason = f"training job {job.job_id} ended {job.state}" + (f": {job.error}" if job.error else "")
        record(platform, run_id, "train", "failed", event_id, job_ids={"train": job.job_id}, reason=reason)
        return Outcome("recorded", run_id, reason, job=job.job_id)

    try:
        model_name = read_run_request(platform, run_id).model_name
    except (NotFound, InvalidRunRequest, ValueError, KeyError):
        model_name = config.model_name
    base = job.base_output_uri.rstrip("/")
    prefix = config.uri("")
    metrics = {}
    if base.startswith(prefix):
        try:
            metrics = json.loads(platform.storage.read(base[len(prefix):] + "/metrics.json", max_bytes=1 << 20))
        except (NotFound, ValueError):
            metrics = {}
    artifact_uri = f"{base}/model/"
    started = time.monotonic()
    operation_holder: dict = {}

    def upload():
        try:
            return platform.models.upload_version(model_name, artifact_uri, {"run_id": run_id})
        except AlreadyExists:
            # Another run created the model between our look and our upload: upload again, now as
            # a new version of the model that exists.
            return platform.models.upload_version(model_name, artifact_uri, {"run_id": run_id})

    def deploy() -> str:
        version = platform.models.find_version(model_name, run_id) or upload()
        op = platform.models.start_deploy(version, config.endpoint_id, config.traffic_percent, run_id)
        operation_holder.update(version=version.versioned_name, operation=op.name)
        platform.storage.write(f"deployments/{_operation_key(op.name)}.json",
                               json.dumps({"run_id": run_id, "operation": op.name,
                                           "model_version": version.versioned_name}).encode())
        return op.name

    how, operation = launch_once(platform, marker=f"runs/{run_id}/deploy/_LAUNCHED",
                                 find_existing=lambda: None, launch=deploy)
    if how == "launched":
        record(platform, run_id, "deploy", "deploying", event_id, job_ids={"train": job.job_id},
               timings=_since(started), model_version=operation_holder["version"],
               operation=operation, metrics=metrics)
    return Outcome(how, run_id, job=job.job_id, extra={"operation": operation})


def _operation_key(operation_name: str) -> str:
    return operation_name.rsplit("/", 1)[-1]


def finish_deploy(config: Config, platform: Platform, operation_name: str, event_id: str) -> Outcome:
    """The deploy operation's end was logged: confirm it and record the run deployed (or failed)."""
    try:
        index = json.loads(platform.storage.read(f"deployments/{_operation_key(operation_name)}.json"))
    except NotFound:
        return Outcome("ignored", detail=f"operation {operation_name} is not one of ours")
    run_id = index["run_id"]
    op = platform.models.get_operation(operation_name)
    if not op.done:
        raise TransientError(f"operation {operation_name} logged an end but is not done")
    if op.error:
        record(platform, run_id, "deploy", "failed", event_id, operation=operation_name,
               reason=f"deployment failed: {op.error}")
        return Outcome("recorded", run_id, op.error)
    if platform.storage.create(f"runs/{run_id}/deploy/_DEPLOYED", json.dumps(index).encode()):
        record(platform, run_id, "deploy", "deployed", event_id, operation=operation_name,
               model_version=index["model_version"], deployed_model_id=op.deployed_model_id,
               endpoint=config.endpoint_id)
        return Outcome("recorded", run_id)
    return Outcome("duplicate", run_id)


def fail_preprocess(config: Config, platform: Platform, job_name: str, event_id: str, reason: str) -> Outcome:
    """A Dataflow job failed (its job name is the run id): the run ends failed."""
    run_id = job_name
    if not platform.storage.exists(f"runs/{run_id}/request.json"):
        return Outcome("ignored", detail=f"Dataflow job {job_name} is not a run of this bucket")
    record(platform, run_id, "preprocess", "failed", event_id, reason=reason)
    return Outcome("recorded", run_id, reason)
