"""The reconcile sweep: runs with no progress past their deadline are driven on from the APIs.

Events are the chain's only clock, and an event can be lost (a log line the sink never matched, a
deploy's end whose wording is undocumented, a cancelled or drained job that logs no failure line,
a local cloud that crashed). On a Cloud Scheduler schedule this stage looks at every run that has
not ended and has written nothing for `reconcile_after_seconds`, asks the API what happened to the
work of its stage, and, when that work has ended, hands the run to the very stage code the lost
event would have reached, with the same idempotency: a run the sweep drives costs at most one
sweep period, never a second launch, and a redelivered event after the sweep is a duplicate.

A stage whose work is still running is left alone (a long training is not a stuck one); the
sweep only reads until something has ended.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from events.ledger import RunState, RunStatus
from events.log_entries import JobKind, JobOutcome, JobTerminal
from events.timestamps import parse_rfc3339
from functions.config import Config
from functions.platform import NotFound, Platform, PreprocessJob, TransientError
from functions.run_store import RunStore, manifest_name
from functions.stages import deploy, preprocess, release, start, training
from functions.stages.result import Action, StageResult
from functions.triggers import BakeEnded, JobEnded, ManifestWritten

log = logging.getLogger(__name__)

_TRAINING_OUTCOMES = {"JOB_STATE_SUCCEEDED": JobOutcome.SUCCEEDED, "JOB_STATE_CANCELLED": JobOutcome.CANCELLED}


def sweep(config: Config, platform: Platform, event_id: str, now: datetime | None = None) -> StageResult:
    """One pass over the runs that have not ended: what it did to each, in `extra["runs"]`."""
    now = now or datetime.now(timezone.utc)
    runs = RunStore(platform.storage, config.bucket)
    cause = f"reconcile:{event_id}"
    driven: dict[str, str] = {}
    for status in runs.statuses():
        if status.terminal or (now - status.updated).total_seconds() < config.reconcile_after_seconds:
            continue
        try:
            result = redrive(config, platform, runs, status, cause, now)
        except TransientError as exc:  # the API is not sure yet: the next sweep asks again
            result = StageResult(Action.IGNORED, status.run_id, f"not yet: {exc}")
        if result is not None:
            driven[status.run_id] = f"{result.action.value}: {result.detail}".rstrip(": ")
            log.info("reconcile drove %s (%s): %s", status.run_id, status.state.value, driven[status.run_id])
    # Queued runs are started by the event that ends an active run; a start that failed then (or a
    # crash between the end and the start) is made good here.
    for admitted in start.admit_queued(config, platform, cause):
        if admitted.action == Action.LAUNCHED:
            driven[admitted.run_id] = "launched from the queue"
    return StageResult(Action.RECORDED if driven else Action.IGNORED,
                       detail=f"{len(driven)} run(s) driven on" if driven else "no run is stuck",
                       extra={"runs": driven})


def redrive(config: Config, platform: Platform, runs: RunStore, status: RunStatus, cause: str,
            now: datetime) -> StageResult | None:
    """Drive one quiet run on if its stage's work has ended (None: it is still under way)."""
    state = status.state
    if state == RunState.PREPROCESSING:
        return _preprocessing(config, platform, runs, status, cause)
    if state == RunState.TRAINING:
        return _training(config, platform, status, cause)
    if state == RunState.DEPLOYING:
        return _deploying(config, platform, runs, status, cause)
    if state == RunState.BAKING:
        return _baking(config, platform, runs, status, cause, now)
    if state == RunState.REQUESTED:  # its start event gave up (dead-lettered) before the launch
        return start.resume_requested(config, platform, status.run_id, cause)
    return None  # queued: started below, by admission


def _preprocessing(config: Config, platform: Platform, runs: RunStore, status: RunStatus,
                   cause: str) -> StageResult | None:
    job_id = status.job_ids.get("preprocess")
    if not job_id:
        return None
    try:
        job = platform.jobs.get_preprocess_job(job_id)
    except NotFound:
        return preprocess.end_failed(runs, status.run_id, PreprocessJob(job_id, status.run_id, "JOB_STATE_UNKNOWN"),
                                     cause, "the Dataflow job API does not know the job")
    if not job.terminal:
        return None
    if not job.succeeded:  # cancelled or drained jobs log no failure line; the API says it
        return preprocess.end_failed(runs, status.run_id, job, cause)
    manifest = manifest_name(status.run_id)
    if not platform.storage.exists(manifest):
        return preprocess.end_failed(runs, status.run_id, job, cause, "the job ended but wrote no manifest")
    return training.start_training(config, platform, ManifestWritten(cause, config.bucket, manifest, status.run_id))


def _training(config: Config, platform: Platform, status: RunStatus, cause: str) -> StageResult | None:
    job_id = status.job_ids.get("train")
    if not job_id:
        return None
    job = platform.jobs.get_training_job(job_id)
    if not job.terminal:
        return None
    outcome = _TRAINING_OUTCOMES.get(job.state, JobOutcome.FAILED)
    return training.finish_training(config, platform, JobEnded(cause, JobTerminal(
        JobKind.VERTEX_CUSTOM_JOB, job_id, outcome, message=f"the job API says {job.state}")))


def _deploying(config: Config, platform: Platform, runs: RunStore, status: RunStatus,
               cause: str) -> StageResult | None:
    records = runs.ledger(status.run_id).get(status.run_id, [])
    operation = next((r.details.get("operation") for r in records if r.state == RunState.DEPLOYING
                      and r.details.get("operation")), None)
    if not operation:
        return None
    if not platform.models.get_operation(operation).done:
        return None
    return deploy.finish_deploy(config, platform, operation, cause)


def _baking(config: Config, platform: Platform, runs: RunStore, status: RunStatus, cause: str,
            now: datetime) -> StageResult | None:
    deployed = runs.deployed_record(status.run_id)
    if not deployed or not deployed.get("bake_ends") or not deployed.get("bake_started"):
        return None
    # The bake ends by its scheduled task; the sweep steps in once the task is as overdue as a
    # run must be quiet before the sweep looks at it.
    if now < parse_rfc3339(deployed["bake_ends"]) + timedelta(seconds=config.reconcile_after_seconds):
        return None
    return release.end_bake(config, platform, BakeEnded(
        cause, status.run_id, deployed["deployed_model_id"], deployed.get("champion"),
        parse_rfc3339(deployed["bake_started"])))

