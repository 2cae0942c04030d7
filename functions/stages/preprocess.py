"""A preprocessing job's end, as the Dataflow job API confirms it.

Dataflow's failure line reaches on_training_complete through the log sink; a sweep that finds a
run stuck in preprocessing asks the same question. Either way the job API decides: a line is only
a doorbell (a forged or misrouted "Workflow failed." once failed a run whose job had succeeded),
and a run that has ended already is left as it is.
"""
from __future__ import annotations

from functions.config import Config
from functions.platform import NotFound, Platform, PreprocessJob, TransientError
from functions.run_store import RunStore
from functions.stages.result import Action, StageResult, record


def confirm_failure(config: Config, platform: Platform, job_id: str, event_id: str, logged: str) -> StageResult:
    """Dataflow logged that job `job_id` failed: fail its run if the job API agrees."""
    try:
        job = platform.jobs.get_preprocess_job(job_id)
    except NotFound:
        return StageResult(Action.IGNORED, detail=f"Dataflow job {job_id} is not one the job API knows")
    runs = RunStore(platform.storage, config.bucket)
    run_id = _run_of(runs, job)
    if run_id is None:
        return StageResult(Action.IGNORED, detail=f"Dataflow job {job_id} ({job.name}) is not a run of this bucket")
    if not job.terminal:
        # The line can come before the state changes; the API is the truth, so ask again shortly.
        raise TransientError(f"Dataflow job {job_id} logged a failure but its state is {job.state}")
    if job.succeeded:
        return StageResult(Action.IGNORED, run_id,
                           f"Dataflow job {job_id} logged a failure but the job API says {job.state}")
    return end_failed(runs, run_id, job, event_id, logged)


def end_failed(runs: RunStore, run_id: str, job: PreprocessJob, event_id: str, logged: str = "") -> StageResult:
    """Record the run failed by its preprocessing job (confirmed ended, not DONE), unless it has ended."""
    if any(status.terminal for status in runs.statuses(run_id)):
        return StageResult(Action.DUPLICATE, run_id, "the run has ended already")
    reason = f"Dataflow job {job.job_id} ended {job.state}" + (f": {logged}" if logged else "")
    record(runs, run_id, "preprocess", "failed", event_id, job_ids={"preprocess": job.job_id}, reason=reason)
    return StageResult(Action.RECORDED, run_id, reason, job=job.job_id)


def _run_of(runs: RunStore, job: PreprocessJob) -> str | None:
    """The run a Dataflow job preprocesses (its name is the run id), if it is one of this bucket."""
    run_id = job.labels.get("run_id") or job.name
    try:
        return run_id if runs.has_run(run_id) else None
    except ValueError:
        return None  # not even a run id
