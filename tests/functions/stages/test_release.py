"""Releasing: at the bake's end the canary is promoted or rolled back, once, on what our own record
and the endpoint API say (never on the message alone); a requested rollback serves an earlier
version again through the deploy path."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from functions.stages.deploy import finish_deploy
from functions.stages.release import end_bake, roll_back
from functions.triggers import BakeEnded, RollbackAsked
from tests.functions.stages.chain import (
    aliases, baking_canary, deploy_ends, endpoint_now, good_figures, last_operation, record_of, releases,
    serving_champion, status, twice, version,
)


@pytest.fixture
def short(env):
    """`env` with a bake shorter than the grace an early bake-end message is allowed, so that the
    scheduled task's message may be delivered at once."""
    config, platform = env
    return replace(config, bake_seconds=5), platform


def promoted(config, platform) -> str:
    """Version 1 served, version 2 canaried and promoted (dm2 serves): the promoted run's id."""
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    good_figures(platform)
    assert end_bake(config, platform, bake).action == "recorded"
    return run


# --- the bake's end ------------------------------------------------------------------------------


def test_good_figures_promote_the_canary_retire_the_champion_and_move_the_aliases(short):
    config, platform = short
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    good_figures(platform)

    assert twice(end_bake, config, platform, bake) == ["recorded", "duplicate"]

    assert platform.models.undeploys == [("dm1", {"dm2": 100})]
    assert endpoint_now(platform) == (["dm2"], {"dm2": 100})
    assert aliases(platform) == {version(2): {"champion", "default"}}
    folded = status(config, platform, run)
    assert folded.state == "deployed" and folded.anomalies == () and "release" in folded.stages
    details = record_of(config, platform, run, "deployed").details
    assert details["bake"]["promote"] and details["figures"]["dm2"]["requests"] == 100
    assert details["traffic_split"] == {"dm2": 100}
    *_, release = releases(config, platform)
    assert (release["action"], release["run_id"], release["model_version"]) == ("promoted", run, version(2))
    assert release["from"] == {"dm1": 90, "dm2": 10} and release["to"] == {"dm2": 100}
    assert release["retired"] == ["dm1"]
    # the figures were read for both models over the whole bake, from its recorded start
    (endpoint_id, models, start, end), = platform.metrics.asked
    assert (endpoint_id, models) == ("babyweight", ["dm2", "dm1"]) and start == bake.bake_started < end


@pytest.mark.parametrize("canary, champion, reason", [
    ({"requests": 100, "errors": 10, "latency_p99_ms": 40.0}, {"requests": 900, "errors": 0, "latency_p99_ms": 35.0},
     "the canary failed 10 of 100 requests"),
    ({"requests": 100, "errors": 0, "latency_p99_ms": 400.0}, {"requests": 900, "errors": 0, "latency_p99_ms": 35.0},
     "p99 latency 400 ms"),
], ids=["errors", "latency"])
def test_failing_figures_roll_the_canary_back_and_the_champion_keeps_all_traffic(short, canary, champion, reason):
    config, platform = short
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    platform.metrics.figures_by_model.update({"dm2": canary, "dm1": champion})

    assert twice(end_bake, config, platform, bake) == ["recorded", "duplicate"]

    assert platform.models.undeploys == [("dm2", {"dm1": 100})]
    assert endpoint_now(platform) == (["dm1"], {"dm1": 100})
    assert aliases(platform) == {version(1): {"champion", "default"}}
    folded = status(config, platform, run)
    assert folded.state == "rolled-back" and folded.terminal and folded.anomalies == ()
    assert folded.reason.startswith("bake: roll back: ") and reason in folded.reason
    *_, release = releases(config, platform)
    assert (release["action"], release["retired"], release["to"]) == ("rolled-back", ["dm2"], {"dm1": 100})


def test_a_canary_undeployed_during_its_bake_fails_its_run(short):
    config, platform = short
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    platform.models.undeploy("babyweight", "dm2", {"dm1": 100})
    end_bake(config, platform, bake)
    folded = status(config, platform, run)
    assert folded.state == "failed" and "no longer deployed" in folded.reason
    assert endpoint_now(platform) == (["dm1"], {"dm1": 100})


# --- release events that must change nothing -----------------------------------------------------


def forged(bake: BakeEnded, **change) -> BakeEnded:
    return replace(bake, event_id="e-forged", **change)


@pytest.mark.parametrize("make_event, action, words", [
    (lambda first, bake: forged(bake, run_id=first), "ignored", "has no canary dm2 baking"),  # a run with no canary
    (lambda first, bake: forged(bake, candidate="dm1"), "ignored", "has no canary dm1 baking"),
    (lambda first, bake: forged(bake, run_id="run-20261127-050000-ffffffffff"), "ignored", "has no canary"),
    (lambda first, bake: forged(bake, champion="dm9"), "recorded", ""),  # the champion comes from our record
], ids=["run-without-canary", "forged-candidate", "unknown-run", "forged-champion"])
def test_a_release_event_is_checked_against_our_record_not_trusted(short, make_event, action, words):
    config, platform = short
    first = serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    good_figures(platform)
    before = (endpoint_now(platform), aliases(platform), len(releases(config, platform)))

    result = end_bake(config, platform, make_event(first, bake))

    assert result.action == action and words in result.detail
    if action == "ignored":
        assert (endpoint_now(platform), aliases(platform), len(releases(config, platform))) == before
        assert platform.models.undeploys == [] and platform.metrics.asked == []
        assert status(config, platform, run).state == "baking"
        assert status(config, platform, first).state == "deployed"
    else:
        assert platform.models.undeploys == [("dm1", {"dm2": 100})]


def test_a_bake_end_for_a_run_already_decided_changes_nothing(short):
    config, platform = short
    run = promoted(config, platform)
    after = (endpoint_now(platform), aliases(platform), releases(config, platform), list(platform.models.undeploys))
    result = end_bake(config, platform, BakeEnded("e-late", run, "dm2", "dm1", datetime.now(timezone.utc)))
    assert result.action == "duplicate"
    assert (endpoint_now(platform), aliases(platform), releases(config, platform),
            list(platform.models.undeploys)) == after


def test_a_bake_end_message_long_before_the_recorded_end_is_ignored_and_the_task_still_ends_it(env):
    config, platform = env  # a 900 s bake
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    result = end_bake(config, platform, bake)
    assert result.action == "ignored" and "not yet" in result.detail
    assert platform.models.undeploys == [] and status(config, platform, run).state == "baking"


def test_the_figures_window_is_the_recorded_bake_not_the_messages(short):
    config, platform = short
    serving_champion(config, platform)
    run, bake = baking_canary(config, platform)
    good_figures(platform)
    end_bake(config, platform, forged(bake, bake_started=datetime.now(timezone.utc) + timedelta(hours=1)))
    (_, _, start, _), = platform.metrics.asked
    assert start == bake.bake_started


# --- a requested rollback ------------------------------------------------------------------------


def test_a_rollback_deploys_the_earlier_version_at_100_percent_then_retires_the_current_one(short):
    config, platform = short
    promoted(config, platform)
    asked = RollbackAsked("e-rollback-1", None, "alice")

    assert twice(roll_back, config, platform, asked) == ["launched", "duplicate"]

    (deployed_version, endpoint, split, _), = platform.models.deploys[-1:]
    assert (deployed_version.versioned_name, endpoint, split) == (version(1), "babyweight", {"0": 100})
    assert len(platform.models.deploys) == 3

    platform.models.complete(last_operation(platform))  # up beside the model it retires: two deployed
    assert roll_back(config, platform, asked).action == "duplicate", "a late redelivery is still a duplicate"
    assert deploy_ends(config, platform) == ["recorded", "duplicate"]

    assert platform.models.undeploys[-1] == ("dm2", {"dm3": 100})
    assert endpoint_now(platform) == (["dm3"], {"dm3": 100})
    assert aliases(platform) == {version(1): {"champion", "default"}}
    *_, release = releases(config, platform)
    assert (release["action"], release["model_version"], release["gate"]) == ("rollback", version(1), "skipped")
    assert (release["from"], release["to"], release["retired"]) == ({"dm2": 100}, {"dm3": 100}, ["dm2"])
    assert "alice" in release["by"]


def test_every_delivery_of_a_deploys_end_records_what_it_retired_even_if_another_undeployed_it(short):
    """Two deliveries of one end race: one undeploys the old model, the other records the release."""
    config, platform = short
    promoted(config, platform)
    asked = RollbackAsked("e-rollback-2", None, "alice")
    assert roll_back(config, platform, asked).action == "launched"
    operation = last_operation(platform)
    platform.models.complete(operation)
    platform.models.undeploy("babyweight", "dm2", {"dm3": 100})  # the racing delivery's undeploy

    assert finish_deploy(config, platform, operation, "e-late").action == "recorded"

    *_, release = releases(config, platform)
    assert release["action"] == "rollback" and release["retired"] == ["dm2"]


def test_a_rollback_to_a_named_version(short):
    config, platform = short
    promoted(config, platform)
    assert roll_back(config, platform, RollbackAsked("e-rb", version(1), "bob")).action == "launched"
    assert platform.models.deploys[-1][0].versioned_name == version(1)


@pytest.mark.parametrize("to, words", [
    (version(9), "no registered version"),
    (version(2), "serves already"),
], ids=["unknown-version", "the-serving-one"])
def test_a_rollback_that_cannot_or_need_not_be_done_deploys_nothing(short, to, words):
    config, platform = short
    promoted(config, platform)
    deploys = len(platform.models.deploys)
    result = roll_back(config, platform, RollbackAsked("e-rb", to, "bob"))
    assert result.action in ("rejected", "duplicate") and words in result.detail
    assert len(platform.models.deploys) == deploys


def test_a_rollback_with_nothing_earlier_served_or_while_a_canary_bakes_is_refused(short):
    config, platform = short
    serving_champion(config, platform)
    result = roll_back(config, platform, RollbackAsked("e-rb-1", None, "bob"))
    assert result.action == "rejected" and "no earlier version has served" in result.detail
    baking, _ = baking_canary(config, platform)
    deploys = len(platform.models.deploys)
    result = roll_back(config, platform, RollbackAsked("e-rb-2", version(1), "bob"))
    assert result.action == "rejected" and "a canary is baking" in result.detail
    assert len(platform.models.deploys) == deploys and endpoint_now(platform)[0] == ["dm1", "dm2"]
    assert status(config, platform, baking).state == "baking"


def test_a_failed_rollback_deploy_is_recorded_once_and_changes_nothing(short):
    config, platform = short
    promoted(config, platform)
    roll_back(config, platform, RollbackAsked("e-rb", None, "alice"))
    served = endpoint_now(platform)

    assert deploy_ends(config, platform, error="model failed to load") == ["recorded", "duplicate"]

    assert endpoint_now(platform) == served and aliases(platform) == {version(2): {"champion", "default"}}
    *_, release = releases(config, platform)
    assert release["action"] == "rollback-failed" and "model failed to load" in release["why"]
    assert [r["action"] for r in releases(config, platform)].count("rollback-failed") == 1


def test_an_operation_end_for_a_rollback_is_confirmed_with_the_api(short):
    from functions.platform import TransientError

    config, platform = short
    promoted(config, platform)
    roll_back(config, platform, RollbackAsked("e-rb", None, "alice"))
    with pytest.raises(TransientError):  # logged as ended, but the operation is not done
        finish_deploy(config, platform, last_operation(platform), "e")
    assert endpoint_now(platform) == (["dm2"], {"dm2": 100})
