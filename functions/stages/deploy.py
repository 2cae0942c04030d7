"""Deploying: judge the trained model at the gate, register it, deploy it (alone the first time,
else as a canary beside the champion), and record the deploy's end, scheduling the canary's bake."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from events.run_request import RunRequest
from events.timestamps import parse_rfc3339
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import AlreadyExists, ModelVersion, NotFound, Platform, RegisteredVersion, TrainingJob, TransientError
from functions.release.gate import InvalidComparison, decide_gate, parse_comparison
from functions.release.rollout import SERVING_ALIASES, champion_changed, plan_deploy
from functions.run_store import RunStore, launch_marker_name, rollback_marker_name
from functions.stages.result import Action, StageResult, launch_timing, record

BAKE_TASK_PREFIX = "bake-end-"


def champion_of(config: Config, platform: Platform) -> RegisteredVersion | None:
    """The version the endpoint serves most of its traffic with, as the API tells it (None: none)."""
    try:
        champion = platform.models.get_endpoint(config.endpoint_id).champion()
    except NotFound:
        return None
    return None if champion is None else platform.models.get_version(champion.versioned_name)


def deploy_trained_model(config: Config, platform: Platform, runs: RunStore, run_id: str, job: TrainingJob,
                         request: RunRequest | None, event_id: str) -> StageResult:
    """The gate, then register the job's SavedModel and start its deployment, once."""
    model_name = request.model_name if request else config.model_name
    policy = config.release_policy().with_overrides(request.release if request else None)
    metrics = runs.read_metrics(run_id)
    try:
        comparison = runs.read_comparison(run_id)
        gate = decide_gate(comparison, policy)
        compared_uri = parse_comparison(comparison).champion_uri
    except NotFound:
        gate, problem = None, "the trainer wrote no comparison.json, so the gate cannot judge the model"
    except (InvalidComparison, ValueError) as exc:
        gate, problem = None, f"the gate cannot read comparison.json: {exc}"
    if gate is None:
        record(runs, run_id, "deploy", "failed", event_id, job_ids={"train": job.job_id}, reason=problem)
        return StageResult(Action.RECORDED, run_id, problem, job=job.job_id)

    artifact_uri = f"{job.base_output_uri.rstrip('/')}/model/"
    started = time.monotonic()
    outcome: dict = {}

    def register() -> ModelVersion:
        # A rejected candidate is registered too, so that it can be inspected; its label says why.
        labels = {"run_id": run_id, "gate": "blessed" if gate.blessed else "rejected"}
        found = platform.models.find_version(model_name, run_id)
        if found:
            return found
        try:
            return platform.models.upload_version(model_name, artifact_uri, labels)
        except AlreadyExists:
            # Another run created the model between our look and our upload: upload again, now as
            # a new version of the model that exists.
            return platform.models.upload_version(model_name, artifact_uri, labels)

    def start() -> str:
        version = register()
        outcome["version"] = version.versioned_name
        if not gate.blessed:
            return version.versioned_name
        # One release at a time on an endpoint: held from here to the model's promotion (or its
        # end), so that two runs finishing together cannot both deploy beside one champion.
        holder = runs.claim_release_slot(config.endpoint_id, run_id)
        if holder is not None:
            outcome["refused"] = f"{holder}'s release is in progress on {config.endpoint_id}; start the run again after it ends"
            return version.versioned_name
        try:
            refusal = deploy(version)
        except BaseException:
            runs.free_release_slot(config.endpoint_id, run_id)
            raise
        if refusal:
            outcome["refused"] = refusal
            runs.free_release_slot(config.endpoint_id, run_id)
            return version.versioned_name
        return outcome["operation"]

    def deploy(version: ModelVersion) -> str:
        """Start the deployment the endpoint's state calls for; or why not ("" when started)."""
        try:
            endpoint = platform.models.get_endpoint(config.endpoint_id)
        except NotFound:
            return f"endpoint {config.endpoint_id} does not exist"
        plan = plan_deploy(endpoint, policy.canary_percent)
        if plan.refusal:
            return plan.refusal
        if plan.kind == "canary":  # the gate judged it beside one champion: is that one still serving?
            serving = endpoint.get(plan.champion_id).versioned_name
            scored = _scored_champion(runs, run_id)
            if scored is False:  # a run launched before its record named the champion: by artifacts
                changed = champion_changed(compared_uri, platform.models.get_version(serving).artifact_uri)
            else:
                changed = champion_changed(scored, serving)
            if changed:
                return changed
        op = platform.models.start_deploy(version, config.endpoint_id, plan.split, run_id)
        outcome.update(operation=op.name, kind=plan.kind, split=plan.split)
        runs.index_deployment(op.name, run_id, version.versioned_name, kind=plan.kind, champion=plan.champion_id,
                              traffic_before=endpoint.traffic_split, deployed_before=[d.id for d in endpoint.deployed],
                              bake_seconds=policy.bake_seconds)
        return ""

    claim = launch_once(platform.storage, marker=launch_marker_name(run_id, "deploy"),
                        find_existing=lambda: None, launch=start)
    if claim.how != Claimed.LAUNCHED:
        return StageResult(Action(claim.how.value), run_id, job=job.job_id, extra={"operation": claim.job})
    common = dict(job_ids={"train": job.job_id}, timings=launch_timing(started), model_version=outcome["version"],
                  metrics=metrics, gate=gate.to_dict())
    if not gate.blessed:
        reason = f"gate: {gate.reason}"
        record(runs, run_id, "deploy", "rejected", event_id, reason=reason, **common)
        return StageResult(Action.REJECTED, run_id, reason, job=job.job_id)
    if "refused" in outcome:
        reason = f"not deployed: {outcome['refused']}"
        record(runs, run_id, "deploy", "rejected", event_id, reason=reason, **common)
        return StageResult(Action.REJECTED, run_id, reason, job=job.job_id)
    record(runs, run_id, "deploy", "deploying", event_id, operation=claim.job, rollout=outcome["kind"],
           traffic_split=outcome["split"], **common)
    return StageResult(Action.LAUNCHED, run_id, job=job.job_id, extra={"operation": claim.job})


def finish_deploy(config: Config, platform: Platform, operation_name: str, event_id: str) -> StageResult:
    """The deploy operation's end was logged: confirm it, then either put the model in service
    (first deployment, rollback) or start the canary's bake."""
    runs = RunStore(platform.storage, config.bucket)
    index = runs.deployment(operation_name)
    if index is None:
        return StageResult(Action.IGNORED, detail=f"operation {operation_name} is not one of ours")
    run_id = index["run_id"]
    # The operation as we recorded it when it started, not as the log entry spells it.
    op = platform.models.get_operation(index.get("operation") or operation_name)
    if not op.done:
        raise TransientError(f"operation {operation_name} logged an end but is not done")
    if op.error:
        if index.get("kind") == "rollback":  # no run of the ledger: the release history says it
            result = _rollback_failed(platform, runs, index, op.error)
        else:
            record(runs, run_id, "deploy", "failed", event_id, operation=operation_name,
                   reason=f"deployment failed: {op.error}")
            result = StageResult(Action.RECORDED, run_id, op.error)
        runs.free_release_slot(config.endpoint_id, run_id)
        return result
    deployed_id = op.deployed_model_id
    if index.get("kind") == "canary":
        return _start_bake(config, platform, runs, index, deployed_id, event_id)
    if index.get("kind") == "rollback":
        return _finish_rollback(config, platform, runs, index, deployed_id)
    return _put_in_service(config, platform, runs, index, deployed_id, event_id)


def _finish_rollback(config: Config, platform: Platform, runs: RunStore, index: dict,
                     deployed_id: str) -> StageResult:
    """A rollback's deploy ended: the earlier version takes all traffic, the current one retires."""
    retired = retire_others(config, platform, deployed_id, index)
    platform.models.move_aliases(ModelVersion.from_name(index["model_version"]), list(SERVING_ALIASES))
    now = datetime.now(timezone.utc)
    if not platform.storage.create(rollback_marker_name(index["run_id"], "done"), b"{}"):
        return StageResult(Action.DUPLICATE, detail=index["model_version"])
    runs.record_release(now, index["run_id"], "rollback", {
        "time": now.isoformat(), "by": f"mlrelay rollback ({index.get('requested_by', 'unknown')})",
        "model_version": index["model_version"], "deployed_model_id": deployed_id,
        "from": index.get("traffic_before", {}), "to": {deployed_id: 100}, "retired": retired,
        "why": index.get("why", "rollback requested"), "gate": "skipped"})
    runs.free_release_slot(config.endpoint_id, index["run_id"])
    return StageResult(Action.RECORDED, detail=index["model_version"])


def _rollback_failed(platform: Platform, runs: RunStore, index: dict, error: str) -> StageResult:
    """A rollback's deploy failed: nothing changed on the endpoint; the release history says so, once."""
    if not platform.storage.create(rollback_marker_name(index["run_id"], "done"), b"{}"):
        return StageResult(Action.DUPLICATE, detail=index["model_version"])
    now = datetime.now(timezone.utc)
    before = index.get("traffic_before", {})
    runs.record_release(now, index["run_id"], "rollback-failed", {
        "time": now.isoformat(), "by": f"mlrelay rollback ({index.get('requested_by', 'unknown')})",
        "model_version": index["model_version"], "from": before, "to": before, "retired": [],
        "why": f"the rollback's deploy failed: {error}", "gate": "skipped"})
    return StageResult(Action.RECORDED, detail=f"rollback to {index['model_version']} failed: {error}")


def _put_in_service(config: Config, platform: Platform, runs: RunStore, index: dict, deployed_id: str,
                    event_id: str) -> StageResult:
    """The new model takes all traffic: every other deployed model is retired, the aliases move."""
    run_id = index["run_id"]
    retired = retire_others(config, platform, deployed_id, index)
    platform.models.move_aliases(ModelVersion.from_name(index["model_version"]), list(SERVING_ALIASES))
    now = datetime.now(timezone.utc)
    if not runs.mark_deployed(run_id, {**index, "deployed_model_id": deployed_id}):
        return StageResult(Action.DUPLICATE, run_id)
    record(runs, run_id, "deploy", "deployed", event_id, operation=index["operation"],
           model_version=index["model_version"], deployed_model_id=deployed_id, endpoint=config.endpoint_id)
    runs.record_release(now, run_id, index.get("kind", "first"), {
        "time": now.isoformat(), "by": "on_training_complete", "model_version": index["model_version"],
        "deployed_model_id": deployed_id, "from": index.get("traffic_before", {}), "to": {deployed_id: 100},
        "retired": retired, "why": "the first model on the endpoint, through the gate" if not index.get("traffic_before")
        else "it replaces the models that served"})
    runs.free_release_slot(config.endpoint_id, run_id)
    return StageResult(Action.RECORDED, run_id)


def _start_bake(config: Config, platform: Platform, runs: RunStore, index: dict, deployed_id: str,
                event_id: str) -> StageResult:
    """The canary is up: schedule the bake's end (a task, not a wait), then record the canary.

    The bake's times are recorded first (create-only), and the task is scheduled from that record
    (once, by its id): a redelivery after a crash at any point schedules the same end and records
    what is missing, so the task, the record and end_bake agree on when the bake ends."""
    run_id = index["run_id"]
    now = datetime.now(timezone.utc)
    ends = now + timedelta(seconds=int(index.get("bake_seconds") or config.bake_seconds))
    first = runs.mark_deployed(run_id, {**index, "deployed_model_id": deployed_id, "bake_started": now.isoformat(),
                                        "bake_ends": ends.isoformat()})
    recorded = None if first else runs.deployed_record(run_id)
    if recorded and recorded.get("bake_started") and recorded.get("bake_ends"):
        now, ends = parse_rfc3339(recorded["bake_started"]), parse_rfc3339(recorded["bake_ends"])
    message = {"run_id": run_id, "candidate": deployed_id, "champion": index.get("champion"),
               "bake_started": now.isoformat(), "model_version": index["model_version"]}
    platform.tasks.schedule_publish(BAKE_TASK_PREFIX + run_id, config.release_topic, message, ends)
    if not first and any(status.state.value != "deploying" for status in runs.statuses(run_id)):
        return StageResult(Action.DUPLICATE, run_id)
    endpoint = platform.models.get_endpoint(config.endpoint_id)
    record(runs, run_id, "release", "baking", event_id, operation=index["operation"],
           model_version=index["model_version"], deployed_model_id=deployed_id, champion=index.get("champion"),
           traffic_split=endpoint.traffic_split, bake_ends=ends.isoformat())
    runs.record_release(now, run_id, "canary", {
        "time": now.isoformat(), "by": "on_training_complete", "model_version": index["model_version"],
        "deployed_model_id": deployed_id, "from": index.get("traffic_before", {}), "to": endpoint.traffic_split,
        "why": f"passed the gate; bakes until {ends.isoformat()}"})
    return StageResult(Action.RECORDED, run_id, extra={"bake_ends": ends.isoformat()})


def _scored_champion(runs: RunStore, run_id: str) -> str | None | bool:
    """The champion version the training stage passed to the trainer (None: none), as its ledger
    record names it; False when the record does not say. Names, not artifact paths: the job may see
    its arguments as local paths (the local cloud's stand-in for the /gcs/ mount)."""
    for event in runs.ledger(run_id).get(run_id, []):
        if event.state.value == "training" and "champion" in event.details:
            return event.details["champion"]
    return False


def retire_others(config: Config, platform: Platform, keep: str, index: dict) -> list[str]:
    """Undeploy every deployed model but `keep` (billed while deployed), `keep` taking all traffic.

    Returns what the deployment retires: the models the endpoint held when it started (its
    index says), so that every delivery of the deploy's end records the same list, whichever of
    them undeployed each model (the undeploying itself is done from the endpoint as it is now)."""
    endpoint = platform.models.get_endpoint(config.endpoint_id)
    undeployed = []
    for deployed in endpoint.deployed:
        if deployed.id == keep:
            continue
        try:
            platform.models.undeploy(config.endpoint_id, deployed.id, {keep: 100})
        except NotFound:  # retired by a redelivery a moment ago
            pass
        undeployed.append(deployed.id)
    before = index.get("deployed_before")
    return undeployed if before is None else [d for d in before if d != keep]
