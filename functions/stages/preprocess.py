"""A preprocessing job's failure, logged by Dataflow: the run ends failed."""
from __future__ import annotations

from functions.config import Config
from functions.platform import Platform
from functions.run_store import RunStore
from functions.stages.result import Action, StageResult, record


def fail_preprocess(config: Config, platform: Platform, job_name: str, event_id: str, reason: str) -> StageResult:
    """Dataflow reported a job failed; its job name is the run id."""
    runs = RunStore(platform.storage, config.bucket)
    run_id = job_name
    try:
        ours = runs.has_run(run_id)
    except ValueError:
        ours = False  # not even a run id
    if not ours:
        return StageResult(Action.IGNORED, detail=f"Dataflow job {job_name} is not a run of this bucket")
    record(runs, run_id, "preprocess", "failed", event_id, reason=reason)
    return StageResult(Action.RECORDED, run_id, reason)
