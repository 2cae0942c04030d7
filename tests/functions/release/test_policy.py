"""The release policy: its defaults, its ranges, and a run request's overrides."""
from __future__ import annotations

import dataclasses
import json

import pytest

from events.run_request import RELEASE_KEYS, RELEASE_SCHEMA, ReleaseOverrides, parse_run_request
from functions.release.policy import InvalidReleasePolicy, ReleasePolicy


def test_the_defaults():
    assert ReleasePolicy().to_dict() == {
        "min_improvement_over_mean": 0.05, "tolerance": 0.002, "slice_tolerance": 0.01, "min_slice_rows": 1000,
        "rows_read_tolerance": 0.5, "dropped_share_tolerance": 0.05, "split_share_tolerance": 0.05,
        "max_error_rate": 0.01, "max_error_rate_increase": 0.005, "max_latency_ratio": 2.0,
        "max_latency_p99_ms": 200.0, "min_requests": 0, "promote_on_little_traffic": True,
        "canary_percent": 10, "bake_seconds": 900,
    }
    json.dumps(ReleasePolicy().to_dict(), allow_nan=False)


def test_the_policy_is_frozen_and_ints_become_floats_where_a_fraction_is_meant():
    policy = ReleasePolicy(tolerance=0, max_latency_p99_ms=150)
    assert policy.tolerance == 0.0 and isinstance(policy.tolerance, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.tolerance = 1.0  # type: ignore[misc]


def test_no_overrides_change_nothing():
    policy = ReleasePolicy(tolerance=0.01)
    assert policy.with_overrides(None) is policy
    assert policy.with_overrides(ReleaseOverrides()) == policy


def test_a_requests_overrides_replace_only_what_it_sets():
    request = parse_run_request({"release": {"canaryPercent": 25, "bakeSeconds": 60,
                                             "dataCheck": {"rowsReadTolerance": 2}}})
    policy = ReleasePolicy(tolerance=0.004).with_overrides(request.release)
    assert (policy.canary_percent, policy.bake_seconds, policy.rows_read_tolerance) == (25, 60, 2.0)
    assert policy.tolerance == 0.004 and policy.slice_tolerance == 0.01  # the configured and the default stay
    assert ReleasePolicy().with_overrides(parse_run_request("{}").release) == ReleasePolicy()


def test_every_override_is_a_policy_field():
    policy_fields = {f.name: f.type for f in dataclasses.fields(ReleasePolicy)}
    for field in dataclasses.fields(ReleaseOverrides):
        assert field.name in policy_fields
        assert field.type == f"{policy_fields[field.name]} | None"


def _extremes(schema):
    """The smallest and largest value the schema accepts for a number or integer key."""
    low = schema["minimum"]
    if "maximum" in schema:
        high = schema["maximum"]
    else:
        high = schema["exclusiveMaximum"] - (1 if schema["type"] == "integer" else 1e-9)
    return low, high


def _schema_leaves():
    for field_name, path in RELEASE_KEYS.items():
        node = RELEASE_SCHEMA
        for key in path.split("."):
            node = node["properties"][key]
        yield field_name, path, node


@pytest.mark.parametrize("field_name, path, schema", list(_schema_leaves()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_value_a_request_may_set_makes_a_valid_policy(field_name, path, schema):
    for value in _extremes(schema):
        release: dict = {}
        *parents, key = path.split(".")
        node = release
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
        overrides = parse_run_request({"release": release}).release
        assert getattr(ReleasePolicy().with_overrides(overrides), field_name) == value


@pytest.mark.parametrize("values, words", [
    ({"min_improvement_over_mean": 1.0}, "min_improvement_over_mean must be at least 0 and below 1, not 1.0"),
    ({"min_improvement_over_mean": -0.1}, "min_improvement_over_mean must be at least 0 and below 1"),
    ({"tolerance": -0.001}, "tolerance must be between 0 and 1, not -0.001"),
    ({"tolerance": float("nan")}, "tolerance must be a finite number, not nan"),
    ({"slice_tolerance": "0.02"}, "slice_tolerance must be a finite number, not '0.02'"),
    ({"rows_read_tolerance": float("inf")}, "rows_read_tolerance must be a finite number"),
    ({"dropped_share_tolerance": 1.5}, "dropped_share_tolerance must be between 0 and 1"),
    ({"max_error_rate": True}, "max_error_rate must be a finite number, not True"),
    ({"max_latency_ratio": 0}, "max_latency_ratio must be at least"),
    ({"max_latency_p99_ms": -1}, "max_latency_p99_ms must be at least"),
    ({"min_slice_rows": 0}, "min_slice_rows must be at least 1, not 0"),
    ({"min_slice_rows": 30.0}, "min_slice_rows must be an integer, not 30.0"),
    ({"min_requests": -1}, "min_requests must be at least 0, not -1"),
    ({"canary_percent": 0}, "canary_percent must be between 1 and 99, not 0"),
    ({"canary_percent": 100}, "canary_percent must be between 1 and 99, not 100"),
    ({"bake_seconds": 86_401}, "bake_seconds must be between 1 and 86400, not 86401"),
    ({"bake_seconds": False}, "bake_seconds must be an integer, not False"),
    ({"promote_on_little_traffic": "yes"}, "promote_on_little_traffic must be true or false, not 'yes'"),
])
def test_a_threshold_out_of_range_is_refused(values, words):
    with pytest.raises(InvalidReleasePolicy) as caught:
        ReleasePolicy(**values)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("release policy: ") and words in str(caught.value)
