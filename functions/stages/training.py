"""Training: launched once per run on its manifest; its end confirmed with the job API."""
from __future__ import annotations

import time

from events.manifest import check_manifest, summarize
from events.run_id import is_run_id
from events.run_request import InvalidRunRequest, RunRequest
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import NotFound, Platform, TransientError
from functions.release.data_check import RunData, check_data
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
    except RecursionError:
        problem = "manifest is not readable JSON: nested too deeply"
    request = None
    try:
        request = runs.read_request(run_id)
    except NotFound:
        problem = problem or f"run {run_id} has no request.json"
    if problem:
        record(runs, run_id, "train", "failed", written.event_id, reason=problem)
        return StageResult(Action.REJECTED, run_id, problem)
    if any(status.terminal for status in runs.statuses(run_id)):
        return StageResult(Action.DUPLICATE, run_id, "the run has ended already")

    summary = summarize(manifest)
    policy = config.release_policy().with_overrides(request.release)
    data_check = None
    # Checked before the launch only: a redelivery after it must not reject a run whose job is
    # training (another run may have gone into service meanwhile, changing what it is compared with).
    if not platform.storage.exists(launch_marker_name(run_id, "train")):
        data_check = check_data(RunData(summary, request.limit, request.source or config.default_source, run_id),
                                _last_serving_data(config, runs, run_id), policy)
    if data_check is not None and not data_check.passed:
        reason = f"data check: {data_check.reason}"
        record(runs, run_id, "train", "rejected", written.event_id, reason=reason, data_check=data_check.to_dict(),
               rows=summary.rows, input=summary.input)
        return StageResult(Action.REJECTED, run_id, reason)
    champion = deploy.champion_of(config, platform)

    base_output = runs.uri(train_prefix(run_id))
    manifest_uri = runs.uri(written.object_name)
    trainer_args = request.trainer_args()
    if champion is not None:  # the trainer scores it on this run's own eval rows, for the gate
        trainer_args += ["--champion-model-dir", champion.artifact_uri]
    started = time.monotonic()
    claim = launch_once(
        platform.storage,
        marker=launch_marker_name(run_id, "train"),
        find_existing=lambda: next((j.job_id for j in platform.jobs.find_training_jobs(run_id)), None),
        launch=lambda: platform.jobs.launch_training(run_id, manifest_uri, base_output,
                                                     trainer_args, {"run_id": run_id}).job_id,
    )
    if claim.how == Claimed.LAUNCHED:
        record(runs, run_id, "train", "training", written.event_id, job_ids={"train": claim.job},
               timings=launch_timing(started), manifest=manifest_uri, output=base_output,
               rows=summary.rows, input=summary.input, data_check=data_check.to_dict() if data_check else None,
               champion=champion.versioned_name if champion else None)
    return StageResult.of_claim(claim, run_id)


def _last_serving_data(config: Config, runs: RunStore, run_id: str) -> RunData | None:
    """The counts and request of the latest run whose model went into service, for the data check."""
    previous = runs.last_serving_run(other_than=run_id)
    if previous is None:
        return None
    training = next((e for e in runs.ledger(previous.run_id).get(previous.run_id, []) if e.state == "training"), None)
    if training is None or "rows" not in training.details:
        return None
    try:
        request: RunRequest | None = runs.read_request(previous.run_id)
    except (NotFound, InvalidRunRequest, ValueError):
        request = None
    return RunData({"rows": training.details["rows"], "input": training.details.get("input") or {}},
                   request.limit if request else None,
                   (request.source if request else None) or config.default_source, previous.run_id)


def finish_training(config: Config, platform: Platform, ended: JobEnded) -> StageResult:
    """A training job's terminal log line arrived: confirm with the job API, then deploy or fail."""
    try:
        job = platform.jobs.get_training_job(ended.terminal.job_id)
    except NotFound:  # a line naming a job the API does not know (forged, or of another project)
        return StageResult(Action.IGNORED, detail=f"job {ended.terminal.job_id} is not one the job API knows")
    # Whose job it is comes first: a job of no run of ours is ignored at once, never retried.
    run_id = job.labels.get("run_id")
    if not run_id:
        return StageResult(Action.IGNORED, detail=f"job {job.job_id} has no run_id label")
    if not is_run_id(run_id):
        return StageResult(Action.IGNORED, detail=f"job {job.job_id}'s run_id label {run_id[:80]!r} is not a run id")
    runs = RunStore(platform.storage, config.bucket)
    if not runs.has_run(run_id):
        return StageResult(Action.IGNORED, run_id,
                           f"job {job.job_id}'s run {run_id} is not a run of gs://{config.bucket}")
    if not job.terminal:
        # The log line is only the doorbell; the API is the truth. Try again shortly.
        raise TransientError(f"job {job.job_id} logged an end but its state is {job.state}")
    if any(status.terminal for status in runs.statuses(run_id)):
        return StageResult(Action.DUPLICATE, run_id, "the run has ended already", job=job.job_id)
    if job.state != "JOB_STATE_SUCCEEDED":
        reason = f"training job {job.job_id} ended {job.state}" + (f": {job.error}" if job.error else "")
        record(runs, run_id, "train", "failed", ended.event_id, job_ids={"train": job.job_id}, reason=reason)
        return StageResult(Action.RECORDED, run_id, reason, job=job.job_id)
    try:
        request = runs.read_request(run_id)
    except (NotFound, InvalidRunRequest, ValueError, KeyError):
        request = None
    return deploy.deploy_trained_model(config, platform, runs, run_id, job, request, ended.event_id)
