"""The bake verdict: error rate and p99 latency at and just past each bound, little traffic,
and serving figures that are not figures."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from functions.release.bake import BakeVerdict, InvalidServingFigures, bake_ends_at, judge_bake
from functions.release.policy import ReleasePolicy

CANARY, CHAMPION = "8", "7"


def figures(requests, errors, p99):
    return {"requests": requests, "errors": errors, "latency_p99_ms": p99}


def judged(served, champion_id=CHAMPION, **policy) -> BakeVerdict:
    verdict = judge_bake(served, CANARY, champion_id, ReleasePolicy(**policy))
    assert "\n" not in verdict.reason and verdict.reason.startswith(("promote: ", "roll back: "))
    json.dumps(verdict.to_dict(), allow_nan=False)
    assert all(set(c) == {"name", "value", "bound", "passed"} for c in verdict.checks)
    return verdict


def failing(verdict):
    return [c["name"] for c in verdict.checks if not c["passed"]]


# Default thresholds: at most 1 % errors and at most the champion's + 0.5 points; p99 at most
# 2 x the champion's, or 200 ms with no champion figure.
@pytest.mark.parametrize("canary, champion, promote, failed", [
    (figures(1000, 10, 100.0), None, True, []),                          # 1 %: at the bound
    (figures(1000, 11, 100.0), None, False, ["error_rate"]),
    (figures(1000, 0, 200.0), None, True, []),                           # 200 ms: at the bound
    (figures(1000, 0, 200.1), None, False, ["latency_p99_ms"]),
    (figures(1000, 7, 100.0), figures(1000, 2, 100.0), True, []),        # 0.7 % = 0.2 % + 0.5
    (figures(1000, 8, 100.0), figures(1000, 2, 100.0), False, ["error_rate_vs_champion"]),
    (figures(1000, 11, 100.0), figures(1000, 9, 100.0), False, ["error_rate"]),  # the absolute cap holds
    (figures(1000, 0, 240.0), figures(1000, 0, 120.0), True, []),        # 2 x 120 ms
    (figures(1000, 0, 241.0), figures(1000, 0, 120.0), False, ["latency_p99_vs_champion"]),
    (figures(1000, 0, 150.0), figures(1000, 0, 50.0), False, ["latency_p99_vs_champion"]),  # under 200, over 2x
    (figures(1000, 0, 300.0), figures(1000, 0, None), False, ["latency_p99_ms"]),  # no champion p99: 200 ms
    (figures(1000, 5, 300.0), figures(0, 0, 10.0), False, ["latency_p99_ms"]),  # champion served nothing
    (figures(1000, 5, None), None, True, []),                            # no p99: errors alone
    (figures(1000, 50, 900.0), figures(1000, 0, 100.0), False,
     ["error_rate", "error_rate_vs_champion", "latency_p99_vs_champion"]),
])
def test_errors_and_latency_against_their_bounds(canary, champion, promote, failed):
    served = {CANARY: canary} | ({CHAMPION: champion} if champion else {})
    verdict = judged(served)
    assert verdict.promote is promote
    assert failing(verdict) == failed


def test_the_checks_name_value_and_bound():
    verdict = judged({CANARY: figures(1000, 7, 240.0), CHAMPION: figures(2000, 4, 120.0)})
    assert verdict.checks == [
        {"name": "requests", "value": 1000, "bound": 0, "passed": True},
        {"name": "error_rate", "value": 0.007, "bound": 0.01, "passed": True},
        {"name": "error_rate_vs_champion", "value": 0.007, "bound": 0.007, "passed": True},
        {"name": "latency_p99_vs_champion", "value": 240.0, "bound": 240.0, "passed": True},
    ]
    assert verdict.reason == ("promote: the canary served 1000 requests with 0.7 % errors (at most 1 %) and "
                              "p99 latency 240 ms (at most 240 ms)")


def test_a_roll_back_says_why():
    assert judged({CANARY: figures(1200, 36, 100.0)}, champion_id=None).reason == (
        "roll back: the canary failed 36 of 1200 requests (3 %), more than the 1 % allowed")
    assert judged({CANARY: figures(1000, 8, 100.0), CHAMPION: figures(1000, 2, 100.0)}).reason == (
        "roll back: the canary's error rate 0.8 % is more than the champion's 0.2 % plus 0.5 %")
    assert judged({CANARY: figures(1000, 0, 450.0), CHAMPION: figures(1000, 0, 120.0)}).reason == (
        "roll back: the canary's p99 latency 450 ms is more than 240 ms, 2 × the champion's 120 ms")
    assert judged({CANARY: figures(10, 1, 450.0)}, champion_id=None).reason == (
        "roll back: the canary failed 1 of 10 requests (10 %), more than the 1 % allowed; 1 more check failed")


@pytest.mark.parametrize("requests, min_requests, allow, promote, words", [
    (99, 100, True, True, "promote: too little traffic to judge (99 requests, at least 100 wanted)"),
    (99, 100, False, False, "roll back: too little traffic to judge (99 requests, at least 100 wanted)"),
    (100, 100, False, True, "promote: the canary served 100 requests"),      # enough: judged
    (0, 0, False, True, "promote: the canary served no requests during its bake"),  # the default asks for none
    (0, 1, True, True, "promote: too little traffic to judge (0 requests, at least 1 wanted)"),
])
def test_too_little_traffic_is_the_policys_call(requests, min_requests, allow, promote, words):
    served = {CANARY: figures(requests, 0, None)}
    verdict = judged(served, min_requests=min_requests, promote_on_little_traffic=allow)
    assert verdict.promote is promote and verdict.reason.startswith(words)


def test_little_traffic_is_not_judged_on_its_errors():
    verdict = judged({CANARY: figures(5, 5, 900.0)}, min_requests=100)
    assert verdict.promote and [c["name"] for c in verdict.checks] == ["requests"]
    assert failing(verdict) == ["requests"]


def test_a_canary_missing_from_the_figures_served_nothing():
    verdict = judged({CHAMPION: figures(1000, 0, 100.0)}, min_requests=1, promote_on_little_traffic=False)
    assert not verdict.promote and "(0 requests, at least 1 wanted)" in verdict.reason


def test_other_deployed_models_are_not_read():
    verdict = judged({CANARY: figures(1000, 0, 100.0), "9": "garbage", "10": figures(1, 5, math.nan)})
    assert verdict.promote


def test_thresholds_are_the_policys():
    served = {CANARY: figures(1000, 30, 500.0), CHAMPION: figures(1000, 20, 300.0)}
    assert not judged(served).promote
    assert judged(served, max_error_rate=0.05, max_error_rate_increase=0.01).promote


@pytest.mark.parametrize("entry, words", [
    ("x", "serving figures of '8' must be an object, not str"),
    ({"errors": 0, "latency_p99_ms": 1.0}, "serving figures of '8': requests is missing"),
    ({"requests": 5, "latency_p99_ms": 1.0}, "serving figures of '8': errors is missing"),
    (figures(-1, 0, 1.0), "requests must be an integer of at least 0, got -1"),
    (figures(10.0, 0, 1.0), "requests must be an integer of at least 0, got 10.0"),
    (figures(True, 0, 1.0), "requests must be an integer of at least 0, got True"),
    (figures(10, "1", 1.0), "errors must be an integer of at least 0, got '1'"),
    (figures(10, 11, 1.0), "11 errors out of only 10 requests"),
    (figures(10, 0, math.nan), "latency_p99_ms must be a finite number of at least 0 or null, got nan"),
    (figures(10, 0, -5.0), "latency_p99_ms must be a finite number of at least 0 or null, got -5.0"),
    (figures(10, 0, "fast"), "latency_p99_ms must be a finite number"),
])
def test_figures_that_are_not_figures_are_refused(entry, words):
    for served in ({CANARY: entry}, {CANARY: figures(10, 0, 1.0), CHAMPION: entry}):
        with pytest.raises(InvalidServingFigures) as caught:
            judge_bake(served, CANARY, CHAMPION)
        assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
        assert words in str(caught.value).replace(f"'{CHAMPION}'", f"'{CANARY}'")


@pytest.mark.parametrize("served, canary, champion, words", [
    ([], CANARY, CHAMPION, "serving figures must be an object per deployed model, not list"),
    ({}, "", CHAMPION, "the canary's deployed model id must be a non-empty string"),
    ({}, None, CHAMPION, "the canary's deployed model id must be a non-empty string"),
    ({}, CANARY, CANARY, "the canary and the champion are the same deployed model '8'"),
])
def test_ids_and_figures_must_make_sense(served, canary, champion, words):
    with pytest.raises(InvalidServingFigures, match=words):
        judge_bake(served, canary, champion)


def test_the_bake_ends_bake_seconds_after_the_deploy():
    deployed = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
    assert bake_ends_at(deployed) == deployed + timedelta(minutes=15)
    assert bake_ends_at(deployed, ReleasePolicy(bake_seconds=60)) == datetime(2026, 11, 27, 5, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="timezone-aware"):
        bake_ends_at(datetime(2026, 11, 27, 5, 0))
