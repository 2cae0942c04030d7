"""Training: launched once per run on its manifest; its end confirmed with the job API."""
from __future__ import annotations

import time

from events.manifest import check_manifest, summarize
from events.run_request import InvalidRunRequest
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import NotFound, Platform, TransientError
from functions.run_store import RunStore, launch_marker_name, train_prefix
from functions.stages import deploy
from functions.stages.result import Action, StageResult, launch_timing, record
from functions.triggers import JobEnded, ManifestWritten


def start_training(config: Config, platform: Platform, written: ManifestWritten) -> StageResult:
    """A run's manifest was written: check it, then launch the training job once."""
    if written.bucket != config.bucket:
        return StageResult(Action.IGNORED, detail=f"gs://{written.bucket} is not the pipeline bucket")
    runs = RunStore(platform.storage, config.bucket)
    run_id = written.run_id
    manifest = None
    try:
        manifest = runs.read_manifest(run_id)
        problem = check_manifest(manifest, run_id)
    except NotFound:
        problem = "manifest disappeared before it could be read"
    except ValueError as exc:
        problem = f"manifest is not readable JSON: {exc}"
    request = None
    try:
        request = runs.read_request(run_id)
    except NotFound:
        problem = problem or f"run {run_id} has no request.json"
    if problem:
        record(runs, run_id, "train", "failed", written.event_id, reason=problem)
        return StageResult(Action.REJECTED, run_id, problem)

    base_output = runs.uri(train_prefix(run_id))
    manifest_uri = runs.uri(written.object_name)
    started = time.monotonic()
    claim = launch_once(
        platform.storage,
        marker=launch_marker_name(run_id, "train"),
        find_existing=lambda: next((j.job_id for j in platform.jobs.find_training_jobs(run_id)), None),
        launch=lambda: platform.jobs.launch_training(run_id, manifest_uri, base_output,
                                                     request.trainer_args(), {"run_id": run_id}).job_id,
    )
    if claim.how == Claimed.LAUNCHED:
        summary = summarize(manifest)
        record(runs, run_id, "train", "training", written.event_id, job_ids={"train": claim.job},
               timings=launch_timing(started), manifest=manifest_uri, output=base_output,
               rows=summary.rows, input=summary.input)
    return StageResult.of_claim(claim, run_id)


def finish_training(config: Config, platform: Platform, ended: JobEnded) -> StageResult:
    """A training job's terminal log line arrived: confirm with the job API, then deploy or fail."""
    job = platform.jobs.get_training_job(ended.terminal.job_id)
    if not job.terminal:
        # The log line is only the doorbell; the API is the truth. Try again shortly.
        raise TransientError(f"job {job.job_id} logged an end but its state is {job.state}")
    run_id = job.labels.get("run_id")
    if not run_id:
        return StageResult(Action.IGNORED, detail=f"job {job.job_id} has no run_id label")
    runs = RunStore(platform.storage, config.bucket)
    if job.state != "JOB_STATE_SUCCEEDED":
        reason = f"training job {job.job_id} ended {job.state}" + (f": {job.error}" if job.error else "")
        record(runs, run_id, "train", "failed", ended.event_id, job_ids={"train": job.job_id}, reason=reason)
        return StageResult(Action.RECORDED, run_id, reason, job=job.job_id)
    try:
        model_name = runs.read_request(run_id).model_name
    except (NotFound, InvalidRunRequest, ValueError, KeyError):
        model_name = config.model_name
    return deploy.deploy_trained_model(config, platform, runs, run_id, job, model_name, ended.event_id)
