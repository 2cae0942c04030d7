"""Deploying: register the trained model, start its deployment, and record the deploy's end."""
from __future__ import annotations

import time

from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import AlreadyExists, Platform, TrainingJob, TransientError
from functions.run_store import RunStore, launch_marker_name
from functions.stages.result import Action, StageResult, launch_timing, record


def deploy_trained_model(config: Config, platform: Platform, runs: RunStore, run_id: str, job: TrainingJob,
                         model_name: str, event_id: str) -> StageResult:
    """Register the job's SavedModel as a version of `model_name` and start deploying it, once."""
    metrics = runs.read_metrics(run_id)
    artifact_uri = f"{job.base_output_uri.rstrip('/')}/model/"
    started = time.monotonic()
    deployed: dict = {}

    def upload():
        try:
            return platform.models.upload_version(model_name, artifact_uri, {"run_id": run_id})
        except AlreadyExists:
            # Another run created the model between our look and our upload: upload again, now as
            # a new version of the model that exists.
            return platform.models.upload_version(model_name, artifact_uri, {"run_id": run_id})

    def start_deploy() -> str:
        version = platform.models.find_version(model_name, run_id) or upload()
        op = platform.models.start_deploy(version, config.endpoint_id, config.traffic_percent, run_id)
        deployed.update(version=version.versioned_name, operation=op.name)
        runs.index_deployment(op.name, run_id, version.versioned_name)
        return op.name

    claim = launch_once(platform.storage, marker=launch_marker_name(run_id, "deploy"),
                        find_existing=lambda: None, launch=start_deploy)
    if claim.how == Claimed.LAUNCHED:
        record(runs, run_id, "deploy", "deploying", event_id, job_ids={"train": job.job_id},
               timings=launch_timing(started), model_version=deployed["version"],
               operation=claim.job, metrics=metrics)
    return StageResult(Action(claim.how.value), run_id, job=job.job_id, extra={"operation": claim.job})


def finish_deploy(config: Config, platform: Platform, operation_name: str, event_id: str) -> StageResult:
    """The deploy operation's end was logged: confirm it and record the run deployed (or failed)."""
    runs = RunStore(platform.storage, config.bucket)
    index = runs.deployment(operation_name)
    if index is None:
        return StageResult(Action.IGNORED, detail=f"operation {operation_name} is not one of ours")
    run_id = index["run_id"]
    op = platform.models.get_operation(operation_name)
    if not op.done:
        raise TransientError(f"operation {operation_name} logged an end but is not done")
    if op.error:
        record(runs, run_id, "deploy", "failed", event_id, operation=operation_name,
               reason=f"deployment failed: {op.error}")
        return StageResult(Action.RECORDED, run_id, op.error)
    if runs.mark_deployed(run_id, index):
        record(runs, run_id, "deploy", "deployed", event_id, operation=operation_name,
               model_version=index["model_version"], deployed_model_id=op.deployed_model_id,
               endpoint=config.endpoint_id)
        return StageResult(Action.RECORDED, run_id)
    return StageResult(Action.DUPLICATE, run_id)
