"""Vertex AI's REST rules on their own: traffic splits, model references, aliases, label filters."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from local_cloud.vertex.rest_rules import (
    ApiError,
    assign_version_aliases,
    choose_deployed_model,
    merge_version_aliases,
    parse_label_filter,
    parse_model_reference,
    resolve_traffic_split,
    split_after_undeploy,
)
from tests.local_cloud.vertex.conftest import LOCATION, PARENT, PROJECT


def test_traffic_split_validation_and_the_new_model_placeholder():
    assert resolve_traffic_split({"0": 80, "11": 20}, deployed_ids=["11"], new_id="12") == {"12": 80, "11": 20}
    for bad, phrase in [
        ({"0": 80}, "add up to 100"),
        ({"0": 50, "99": 50}, "not a model deployed"),
        ({"0": True, "11": 99}, "whole percentage"),
        ({"0": 100.0}, "whole percentage"),
        ([100], "must be an object"),
    ]:
        with pytest.raises(ApiError, match=phrase):
            resolve_traffic_split(bad, deployed_ids=["11"], new_id="12")
    with pytest.raises(ApiError, match='"0"'):
        resolve_traffic_split({"0": 100}, deployed_ids=["11"])


def test_split_after_undeploy():
    assert split_after_undeploy({"1": 100}, "1", {}, []) == {}
    assert split_after_undeploy({"1": 0, "2": 100}, "1", {}, ["2"]) == {"2": 100}
    assert split_after_undeploy({"1": 30, "2": 70}, "1", {"2": 100}, ["2"]) == {"2": 100}
    with pytest.raises(ApiError) as refused:
        split_after_undeploy({"1": 30, "2": 70}, "1", {}, ["2"])
    assert refused.value.status == "FAILED_PRECONDITION"


def test_choose_deployed_model_follows_the_percentages():
    split = {"2": 25, "1": 75, "3": 0}
    assert choose_deployed_model(split, 0.0) == "1"
    assert choose_deployed_model(split, 0.7499) == "1"
    assert choose_deployed_model(split, 0.75) == "2"
    assert choose_deployed_model(split, 0.9999) == "2"
    draws = np.linspace(0, 1, 1000, endpoint=False)
    assert Counter(choose_deployed_model(split, d) for d in draws) == {"1": 750, "2": 250}
    with pytest.raises(ValueError):
        choose_deployed_model({"1": 0}, 0.5)


def test_model_references_and_version_aliases():
    assert parse_model_reference(f"{PARENT}/models/babyweight@2", PROJECT, LOCATION) == ("babyweight", "2")
    assert parse_model_reference(f"{PARENT}/models/babyweight", PROJECT, LOCATION) == ("babyweight", None)
    with pytest.raises(ApiError, match="must be named"):
        parse_model_reference("projects/other/locations/us-central1/models/m", PROJECT, LOCATION)
    assert assign_version_aliases([], []) == (["default"], {})  # the first version is the default one
    versions = [{"versionId": "1", "versionAliases": ["gold"]}, {"versionId": "2", "versionAliases": ["default"]}]
    assert assign_version_aliases(versions, ["gold"]) == (["gold"], {"1": [], "2": ["default"]})
    assert assign_version_aliases(versions, ["default"]) == (["default"], {"1": ["gold"], "2": []})


def test_merging_version_aliases_moves_them_and_keeps_default_on_one_version():
    versions = [{"versionId": "1", "versionAliases": ["default", "champion"]}, {"versionId": "2", "versionAliases": []},
                {"versionId": "3", "versionAliases": ["gold"]}]
    assert merge_version_aliases(versions, "2", ["champion", "default"]) == {
        "1": [], "2": ["champion", "default"], "3": ["gold"]}
    assert merge_version_aliases(versions, "3", ["-gold"]) == {"1": ["default", "champion"], "2": [], "3": []}
    # adding and removing one alias in a request cancel out, as the reference says
    assert merge_version_aliases(versions, "3", ["-gold", "gold"])["3"] == ["gold"]
    for bad, phrase in ((["-default"], "cannot be removed"), ([], "required"), (["Bad"], "must match"),
                        ("champion", "required"), ([7], "must match")):
        with pytest.raises(ApiError, match=phrase):
            merge_version_aliases(versions, "1", bad)


def test_label_filters():
    assert parse_label_filter('labels.run_id="r-1" AND labels.stage=train') == {"run_id": "r-1", "stage": "train"}
    assert parse_label_filter("") == {}
    with pytest.raises(ApiError, match="unsupported filter"):
        parse_label_filter("display_name=babyweight")
