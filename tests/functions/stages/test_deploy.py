"""Deploying a trained model: the gate, registering once, the first deployment at 100 %, a canary
beside the champion, the refusals, and the deploy operation's end recorded once."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from functions.run_store import RunStore, comparison_name, metrics_name
from functions.stages.deploy import finish_deploy
from functions.stages.release import end_bake
from tests.functions.stages.chain import (
    aliases, baking_canary, deploy_ends, end_training, endpoint_now, good_figures, last_operation, record_of,
    releases, serving_champion, status, trained, twice, version,
)


# --- the first deployment ------------------------------------------------------------------------


def test_a_first_run_through_the_gate_deploys_at_100_percent_and_on_its_end_takes_the_aliases(env):
    config, platform = env
    run, job_id = trained(config, platform, "m-1")
    platform.storage.write(metrics_name(run), b'{"eval_rmse": 1.01}')

    assert twice(end_training, config, platform, job_id) == ["launched", "duplicate"]

    (model_name, artifact, labels), = platform.models.uploads
    assert artifact == f"gs://b/runs/{run}/train/model/" and labels == {"run_id": run, "gate": "blessed"}
    (deployed_version, endpoint, split, display_name), = platform.models.deploys
    assert (deployed_version.versioned_name, endpoint, split, display_name) == (version(1), "babyweight",
                                                                                 {"0": 100}, run)
    assert status(config, platform, run).state == "deploying"
    deploying = record_of(config, platform, run, "deploying").details
    assert deploying["metrics"] == {"eval_rmse": 1.01} and deploying["rollout"] == "first"
    assert deploying["gate"]["blessed"] and "no champion" in deploying["gate"]["reason"]
    assert aliases(platform) == {} and releases(config, platform) == []

    assert deploy_ends(config, platform) == ["recorded", "duplicate"]

    folded = status(config, platform, run)
    assert folded.state == "deployed" and folded.anomalies == ()
    assert endpoint_now(platform) == (["dm1"], {"dm1": 100})
    assert aliases(platform) == {version(1): {"champion", "default"}}
    (release,) = releases(config, platform)
    assert (release["action"], release["run_id"], release["model_version"]) == ("first", run, version(1))
    assert (release["from"], release["to"], release["retired"]) == ({}, {"dm1": 100}, [])
    assert platform.tasks.scheduled == {}, "a first deployment does not bake"


def test_a_failed_deploy_fails_the_run_and_changes_nothing_served(env):
    config, platform = env
    run, job_id = trained(config, platform, "m-1")
    end_training(config, platform, job_id)
    deploy_ends(config, platform, error="model failed to load")
    folded = status(config, platform, run)
    assert folded.state == "failed" and "model failed to load" in folded.reason
    assert endpoint_now(platform) == ([], {}) and aliases(platform) == {} and releases(config, platform) == []


def test_an_operation_that_is_not_ours_is_ignored(env):
    config, platform = env
    assert finish_deploy(config, platform, "projects/p/locations/r/endpoints/e/operations/9", "e").action == "ignored"


def test_a_model_created_by_another_run_meanwhile_is_uploaded_to_as_a_new_version(env):
    config, platform = env
    run, job_id = trained(config, platform, "m-1")
    platform.models.model_created_concurrently = True
    result = end_training(config, platform, job_id)
    assert result.action == "launched"
    assert len(platform.models.uploads) == 1 and len(platform.models.deploys) == 1
    assert status(config, platform, run).state == "deploying"


@pytest.mark.parametrize("content, reason", [
    (None, "the trainer wrote no comparison.json"),
    (b"{not json", "the gate cannot read comparison.json"),
    (b'{"format": "mlrelay-model-comparison/0"}', "format is"),
], ids=["missing", "not-json", "other-format"])
def test_without_a_readable_comparison_the_run_fails_and_nothing_is_registered(env, content, reason):
    config, platform = env
    run, job_id = trained(config, platform, "m-1")
    if content is None:
        platform.storage.delete(comparison_name(run))
    else:
        platform.storage.write(comparison_name(run), content)
    end_training(config, platform, job_id)
    folded = status(config, platform, run)
    assert folded.state == "failed" and reason in folded.reason
    assert platform.models.uploads == [] and platform.models.deploys == []


# --- the gate ------------------------------------------------------------------------------------

# The mean baseline's RMSE is 2.0, so the value bound is 1.9 (5 % better); the champion scores 1.0
# and may be beaten by nothing or bettered by 0.2 % (tolerance 0.002: bound 1.002).
@pytest.mark.parametrize("candidate, champion, outcome, failed_check", [
    (1.5, None, "first", None),
    (1.9, None, "rejected", "rmse_below_mean_baseline"),  # equal to the value bound is not below it
    (0.9, 1.0, "canary", None),
    (1.002, 1.0, "canary", None),  # within the tolerance: seed noise does not block retraining
    (1.2, 1.0, "rejected", "rmse_vs_champion"),
], ids=["first-blessed", "first-no-better-than-the-mean", "better", "within-tolerance", "worse"])
def test_the_gate_decides_what_is_deployed(env, candidate, champion, outcome, failed_check):
    config, platform = env
    if champion is not None:
        serving_champion(config, platform)
    before = list(platform.models.deploys)
    run, job_id = trained(config, platform, "m-2", candidate=candidate, champion=champion)

    actions = twice(end_training, config, platform, job_id)

    labels = platform.models.uploads[-1][2]
    if outcome == "rejected":
        assert actions == ["rejected", "duplicate"]
        assert labels == {"run_id": run, "gate": "rejected"}, "registered to be inspected, labelled why"
        assert platform.models.deploys == before, "never deployed"
        folded = status(config, platform, run)
        assert folded.state == "rejected" and folded.reason.startswith("gate: not blessed:")
        assert folded.anomalies == ()
        gate = record_of(config, platform, run, "rejected").details["gate"]
        assert not gate["blessed"]
        assert [c["name"] for c in gate["checks"] if not c["passed"]] == [failed_check]
    else:
        assert actions == ["launched", "duplicate"]
        assert labels == {"run_id": run, "gate": "blessed"}
        expected = {"0": 100} if outcome == "first" else {"0": 10, "dm1": 90}
        assert platform.models.deploys[-1][2] == expected
        assert record_of(config, platform, run, "deploying").details["rollout"] == outcome


def test_a_worse_candidate_leaves_the_champion_serving_untouched(env):
    config, platform = env
    serving_champion(config, platform)
    run, job_id = trained(config, platform, "m-2", candidate=1.5, champion=1.0)
    end_training(config, platform, job_id)
    assert endpoint_now(platform) == (["dm1"], {"dm1": 100})
    assert aliases(platform) == {version(1): {"champion", "default"}}
    assert len(releases(config, platform)) == 1 and platform.tasks.scheduled == {}
    assert "candidate RMSE 1.5 is 50 % worse than the champion's 1" in status(config, platform, run).reason


# --- a canary beside the champion ----------------------------------------------------------------


def test_a_blessed_candidate_canaries_beside_the_champion_and_its_bake_end_is_scheduled(env):
    config, platform = env
    serving_champion(config, platform)
    run, job_id = trained(config, platform, "m-2", candidate=0.9, champion=1.0)
    assert end_training(config, platform, job_id).action == "launched"
    assert platform.models.deploys[-1][2] == {"0": 10, "dm1": 90}
    assert status(config, platform, run).state == "deploying"

    before = datetime.now(timezone.utc)
    assert deploy_ends(config, platform) == ["recorded", "duplicate"]
    after = datetime.now(timezone.utc)

    (task_id, (topic, body, due)), = platform.tasks.scheduled.items()
    assert (task_id, topic) == (f"bake-end-{run}", config.release_topic)
    assert {k: body[k] for k in ("run_id", "candidate", "champion", "model_version")} == {
        "run_id": run, "candidate": "dm2", "champion": "dm1", "model_version": version(2)}
    started = datetime.fromisoformat(body["bake_started"])
    assert before <= started <= after and due == started + timedelta(seconds=config.bake_seconds)
    folded = status(config, platform, run)
    assert folded.state == "baking" and folded.anomalies == () and not folded.terminal
    baking = record_of(config, platform, run, "baking").details
    assert baking["bake_ends"] == due.isoformat() and baking["traffic_split"] == {"dm2": 10, "dm1": 90}
    assert endpoint_now(platform) == (["dm1", "dm2"], {"dm1": 90, "dm2": 10})
    assert aliases(platform) == {version(1): {"champion", "default"}}, "the aliases follow the model at 100 %"
    assert [r["action"] for r in releases(config, platform)] == ["first", "canary"]
    assert platform.models.undeploys == []


def test_a_requests_release_overrides_set_its_canary_share_and_bake(env):
    config, platform = env
    serving_champion(config, platform)
    run, job_id = trained(config, platform, "m-2", candidate=0.9,
                          request={"release": {"canaryPercent": 25, "bakeSeconds": 60}})
    end_training(config, platform, job_id)
    assert platform.models.deploys[-1][2] == {"0": 25, "dm1": 75}
    deploy_ends(config, platform)
    _, body, due = platform.tasks.scheduled[f"bake-end-{run}"]
    assert due == datetime.fromisoformat(body["bake_started"]) + timedelta(seconds=60)


def test_a_redelivered_deploy_end_after_a_crash_schedules_the_recorded_bake_end(env):
    config, platform = env
    serving_champion(config, platform)
    run, job_id = trained(config, platform, "m-2", candidate=0.9)
    end_training(config, platform, job_id)
    op_name = last_operation(platform)
    platform.models.complete(op_name)
    scheduled = platform.tasks.schedule_publish
    platform.tasks.schedule_publish = lambda *a: (_ for _ in ()).throw(TimeoutError("tasks: 503"))
    with pytest.raises(TimeoutError):  # the bake's times were recorded; the task was not created
        finish_deploy(config, platform, op_name, "e-1")
    platform.tasks.schedule_publish = scheduled

    assert finish_deploy(config, platform, op_name, "e-1").action == "recorded"

    _, body, due = platform.tasks.scheduled[f"bake-end-{run}"]
    # end_bake judges on the deployed record's times: the task must fall due when that says the bake ends
    deployed = RunStore(platform.storage, config.bucket).deployed_record(run)
    assert (deployed["bake_started"], deployed["bake_ends"]) == (body["bake_started"], due.isoformat())
    assert record_of(config, platform, run, "baking").details["bake_ends"] == due.isoformat()
    assert status(config, platform, run).state == "baking"


# --- refusals ------------------------------------------------------------------------------------


def test_a_third_candidate_while_a_canary_bakes_is_rejected_and_nothing_is_deployed(env):
    config, platform = env
    serving_champion(config, platform)
    baking, _ = baking_canary(config, platform)
    run, job_id = trained(config, platform, "m-3", candidate=0.8)
    deploys, served = list(platform.models.deploys), endpoint_now(platform)

    assert twice(end_training, config, platform, job_id) == ["rejected", "duplicate"]

    folded = status(config, platform, run)
    assert folded.state == "rejected" and f"{baking}'s release is in progress" in folded.reason
    assert folded.anomalies == ()
    assert platform.models.deploys == deploys and endpoint_now(platform) == served
    assert platform.models.uploads[-1][2] == {"run_id": run, "gate": "blessed"}
    assert status(config, platform, baking).state == "baking", "the bake goes on"


def test_two_candidates_finishing_together_deploy_one_canary_beside_the_champion(env):
    """The second reaches the deploy stage while the first's deploy is still in flight (the
    endpoint shows one deployed model to both): the endpoint's release slot stops the second."""
    config, platform = env
    serving_champion(config, platform)
    first, first_job = trained(config, platform, "m-a", candidate=0.9)
    second, second_job = trained(config, platform, "m-b", candidate=0.9)
    assert end_training(config, platform, first_job).action == "launched"
    assert len(endpoint_now(platform)[0]) == 1  # the canary's deploy has not ended yet
    assert twice(end_training, config, platform, second_job) == ["rejected", "duplicate"]
    assert f"{first}'s release is in progress" in status(config, platform, second).reason
    assert len(platform.models.deploys) == 2  # the first run's, and the canary's: no third


def test_a_candidate_judged_beside_a_champion_that_has_since_been_replaced_is_not_deployed(env):
    config, platform = env
    config = replace(config, bake_seconds=1)
    serving_champion(config, platform)
    stale, stale_job = trained(config, platform, "m-stale", candidate=0.95)  # scored beside version 1
    run, bake = baking_canary(config, platform, "m-promoted", candidate=0.9)
    good_figures(platform)
    assert end_bake(config, platform, bake).action == "recorded"  # version 2 is the champion now
    deploys = list(platform.models.deploys)

    assert twice(end_training, config, platform, stale_job) == ["rejected", "duplicate"]

    folded = status(config, platform, stale)
    assert folded.state == "rejected" and "the endpoint's champion is now" in folded.reason
    assert platform.models.deploys == deploys


def test_a_candidate_the_trainer_scored_with_no_champion_is_not_put_beside_one(env):
    config, platform = env
    early, early_job = trained(config, platform, "m-early", candidate=1.0)  # no champion when it trained
    serving_champion(config, platform, "m-first")
    end_training(config, platform, early_job)
    folded = status(config, platform, early)
    assert folded.state == "rejected" and "compared the candidate with no champion" in folded.reason
    assert len(platform.models.deploys) == 1


def test_a_missing_endpoint_rejects_the_blessed_candidate(env):
    config, platform = env
    run, job_id = trained(config, platform, "m-1")
    platform.models.endpoint_exists = False
    end_training(config, platform, job_id)
    folded = status(config, platform, run)
    assert folded.state == "rejected" and "endpoint babyweight does not exist" in folded.reason
