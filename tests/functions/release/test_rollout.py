"""How a blessed candidate goes onto the endpoint: from what the endpoint serves, and only beside
the champion the gate compared it with."""
from __future__ import annotations

import pytest

from functions.platform import DeployedModel, EndpointState
from functions.release.rollout import NEW_MODEL, champion_changed, plan_deploy

M = "projects/p/locations/r/models/babyweight"


def endpoint(split: dict[str, int]) -> EndpointState:
    return EndpointState(tuple(DeployedModel(i, M, str(n)) for n, i in enumerate(split, 1)), dict(split))


@pytest.mark.parametrize("split, percent, kind, expected, champion", [
    ({}, 10, "first", {NEW_MODEL: 100}, None),
    ({"7": 100}, 10, "canary", {NEW_MODEL: 10, "7": 90}, "7"),
    ({"7": 100}, 50, "canary", {NEW_MODEL: 50, "7": 50}, "7"),
    ({"7": 90, "8": 10}, 10, "", {}, None),
], ids=["nothing-deployed", "beside-the-champion", "half", "a-canary-bakes"])
def test_the_plan_follows_what_the_endpoint_serves(split, percent, kind, expected, champion):
    plan = plan_deploy(endpoint(split), percent)
    assert (plan.kind, plan.split, plan.champion_id) == (kind, expected, champion)
    if kind:
        assert sum(plan.split.values()) == 100 and not plan.refusal
    else:
        assert "already holds two deployed models (7, 8)" in plan.refusal


@pytest.mark.parametrize("compared, serving, changed", [
    ("gs://b/runs/r1/train/model/", "gs://b/runs/r1/train/model/", False),
    ("gs://b/runs/r1/train/model", "gs://b/runs/r1/train/model/", False),  # a trailing slash is the same place
    ("gs://b/runs/r1/train/model/", "gs://b/runs/r2/train/model/", True),
    (None, "gs://b/runs/r2/train/model/", True),
], ids=["same", "trailing-slash", "replaced", "none-then"])
def test_a_candidate_is_put_only_beside_the_champion_it_was_compared_with(compared, serving, changed):
    reason = champion_changed(compared, serving)
    assert bool(reason) == changed
    if changed:
        assert serving in reason and "start the run again" in reason
