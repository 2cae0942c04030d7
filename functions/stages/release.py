"""Releasing: at the bake's end, promote the canary or roll it back; on request, roll back to an
earlier version. Each confirmed with the endpoint API first, each done once per run."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from events.run_request import InvalidRunRequest
from events.timestamps import parse_rfc3339
from functions.claim import Claimed, launch_once
from functions.config import Config
from functions.platform import ModelVersion, NotFound, Platform
from functions.release.bake import judge_bake
from functions.release.rollout import NEW_MODEL, SERVING_ALIASES
from functions.run_store import RunStore, launch_marker_name, rollback_marker_name
from functions.stages.result import Action, StageResult, record
from functions.triggers import BakeEnded, RollbackAsked

# A bake-end message this much before the recorded end is not the scheduled task's (clock skew
# between Cloud Tasks and the function is far less): it is ignored, and the task still comes.
BAKE_END_EARLY_S = 30


def end_bake(config: Config, platform: Platform, bake: BakeEnded) -> StageResult:
    """The bake's end arrived: read the serving figures of both models, then promote or roll back."""
    runs = RunStore(platform.storage, config.bucket)
    run_id = bake.run_id
    deployed = runs.deployed_record(run_id)  # our own record, not the message, says what baked
    if deployed is None or deployed.get("kind") != "canary" or deployed.get("deployed_model_id") != bake.candidate:
        return StageResult(Action.IGNORED, run_id, f"run {run_id} has no canary {bake.candidate} baking")
    if any(status.terminal for status in runs.statuses(run_id)):
        return StageResult(Action.DUPLICATE, run_id, "the release is decided already")
    try:
        policy = config.release_policy().with_overrides(runs.read_request(run_id).release)
    except (NotFound, InvalidRunRequest, ValueError):
        policy = config.release_policy()
    candidate, champion = bake.candidate, deployed.get("champion")
    now = datetime.now(timezone.utc)
    # Our record, not the message, says when the bake started and ends: a message sent early (or
    # with another window) must not cut the bake short or hide the canary's errors.
    started = _recorded_time(deployed.get("bake_started")) or bake.bake_started
    ends = _recorded_time(deployed.get("bake_ends"))
    if ends is not None and now < ends - timedelta(seconds=BAKE_END_EARLY_S):
        return StageResult(Action.IGNORED, run_id, f"the bake of {candidate} ends at {ends.isoformat()}, "
                                                   "not yet: the scheduled task ends it")
    endpoint = platform.models.get_endpoint(config.endpoint_id)
    if endpoint.get(candidate) is None:
        reason = f"the canary {candidate} is no longer deployed on {config.endpoint_id}"
        record(runs, run_id, "release", "failed", bake.event_id, reason=reason)
        runs.free_release_slot(config.endpoint_id, run_id)
        return StageResult(Action.RECORDED, run_id, reason)
    if champion is not None and endpoint.get(champion) is None:
        champion = None  # retired meanwhile: the canary is judged on its own figures
    figures = platform.metrics.figures(config.endpoint_id, [m for m in (candidate, champion) if m], started, now)
    verdict = judge_bake(figures, candidate, champion, policy)

    def act() -> str:
        if verdict.promote:
            if champion is not None:
                platform.models.undeploy(config.endpoint_id, champion, {candidate: 100})
            platform.models.move_aliases(ModelVersion.from_name(deployed["model_version"]), list(SERVING_ALIASES))
            return "promoted"
        split = {champion: 100} if champion else {}
        platform.models.undeploy(config.endpoint_id, candidate, split)
        return "rolled-back"

    claim = launch_once(platform.storage, marker=launch_marker_name(run_id, "release"),
                        find_existing=lambda: None, launch=act)
    if claim.how != Claimed.LAUNCHED:
        return StageResult(Action(claim.how.value), run_id)
    after = platform.models.get_endpoint(config.endpoint_id).traffic_split
    common = dict(model_version=deployed["model_version"], deployed_model_id=candidate, champion=champion,
                  bake=verdict.to_dict(), figures=figures, traffic_split=after)
    if verdict.promote:
        record(runs, run_id, "release", "deployed", bake.event_id, endpoint=config.endpoint_id, **common)
    else:
        record(runs, run_id, "release", "rolled-back", bake.event_id, reason=f"bake: {verdict.reason}", **common)
    runs.record_release(now, run_id, claim.job, {
        "time": now.isoformat(), "by": "on_release_event (bake end)", "model_version": deployed["model_version"],
        "deployed_model_id": candidate, "from": endpoint.traffic_split, "to": after, "why": verdict.reason,
        "retired": [champion] if verdict.promote and champion else ([] if verdict.promote else [candidate])})
    runs.free_release_slot(config.endpoint_id, run_id)
    return StageResult(Action.RECORDED, run_id, claim.job)


def roll_back(config: Config, platform: Platform, asked: RollbackAsked) -> StageResult:
    """Deploy an earlier registered version at 100 % through the deploy path (no gate: said so in
    the record); when its deploy ends, the current model is retired (deploy._finish_rollback)."""
    runs = RunStore(platform.storage, config.bucket)
    try:
        endpoint = platform.models.get_endpoint(config.endpoint_id)
    except NotFound:
        return StageResult(Action.REJECTED, detail=f"endpoint {config.endpoint_id} does not exist")
    subject = "rollback-" + "".join(c if c.isalnum() else "-" for c in asked.event_id)[:64]
    marker = rollback_marker_name(subject, "launched")
    launched = _launched_operation(platform, marker)
    if launched:  # a redelivery: judged by what was launched, not by the endpoint it has changed since
        return StageResult(Action.DUPLICATE, detail=f"{subject} launched already", extra={"operation": launched})
    if len(endpoint.deployed) > 1:  # at most two deployed models: a rollback would be a third
        ids = ", ".join(d.id for d in endpoint.deployed)
        return StageResult(Action.REJECTED, detail=f"a canary is baking ({ids} deployed): roll back after its "
                                                   "release decides")
    target = asked.to_version or _previous_champion(runs, endpoint)
    if target is None:
        return StageResult(Action.REJECTED, detail="no earlier version has served: name one with --to")
    try:
        version = platform.models.get_version(target)
    except NotFound:
        return StageResult(Action.REJECTED, detail=f"no registered version {target}")
    serving = {d.versioned_name for d in endpoint.deployed if endpoint.traffic_split.get(d.id, 0) > 0}
    if version.versioned_name in serving and len(endpoint.deployed) == 1:
        return StageResult(Action.DUPLICATE, detail=f"{version.versioned_name} serves already")

    def start() -> str:
        holder = runs.claim_release_slot(config.endpoint_id, subject)
        if holder is not None:
            raise ReleaseBusy(f"{holder}'s release is in progress on {config.endpoint_id}: roll back after it ends")
        try:
            op = platform.models.start_deploy(version, config.endpoint_id,
                                              {NEW_MODEL: 100}, subject)
            runs.index_deployment(op.name, subject, version.versioned_name, kind="rollback",
                                  traffic_before=endpoint.traffic_split,
                                  deployed_before=[d.id for d in endpoint.deployed], requested_by=asked.requested_by,
                                  why="rollback requested; the gate is skipped for a version that served before")
        except BaseException:
            runs.free_release_slot(config.endpoint_id, subject)
            raise
        return op.name

    try:
        claim = launch_once(platform.storage, marker=marker, find_existing=lambda: None, launch=start)
    except ReleaseBusy as busy:  # the claim is removed again: a later request may roll back
        return StageResult(Action.REJECTED, detail=str(busy))
    return StageResult(Action(claim.how.value), detail=version.versioned_name, extra={"operation": claim.job})


class ReleaseBusy(RuntimeError):
    """Another release holds the endpoint's slot."""


def _launched_operation(platform: Platform, marker: str) -> str | None:
    """The deploy operation a rollback's launch marker names, if its deploy was launched."""
    try:
        held = json.loads(platform.storage.read(marker))
    except (NotFound, ValueError):
        return None
    return held.get("job") if isinstance(held, dict) else None


def _previous_champion(runs: RunStore, endpoint) -> str | None:
    """The newest version that was put in service before the one serving now."""
    serving = {d.versioned_name for d in endpoint.deployed}
    for release in reversed(runs.releases()):
        if release.get("action") in ("first", "promoted", "rollback") and release.get("model_version") not in serving:
            return release["model_version"]
    return None


def _recorded_time(text: object) -> datetime | None:
    try:
        return parse_rfc3339(text)  # type: ignore[arg-type]
    except ValueError:
        return None
