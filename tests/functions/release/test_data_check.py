"""The data check: each count against the last good run's, at and just past each band's edge."""
from __future__ import annotations

import json

import pytest

from events.manifest import ManifestSummary, summarize
from events.run_request import parse_run_request
from functions.release.data_check import DataCheckDecision, InvalidSummary, RunData, check_data
from functions.release.policy import ReleasePolicy

SOURCE = "data/natality.parquet"


def summary(read=1000, dropped=100, train=720, eval_=180):
    """The ledger form of a manifest summary (as the training stage records it)."""
    return {"rows": {"train": train, "eval": eval_},
            "input": {"rows_read": read, "rows_dropped": dropped, "rows_valid": read - dropped, "limit": None}}


def run(limit=200_000, source=SOURCE, run_id=None, **counts):
    return RunData(summary(**counts), limit, source, run_id)


PREVIOUS = run(run_id="run-20261126-050000-0123456789")


def checked(current, previous=PREVIOUS, **policy) -> DataCheckDecision:
    decision = check_data(current, previous, ReleasePolicy(**policy))
    assert "\n" not in decision.reason
    json.dumps(decision.to_dict(), allow_nan=False)
    assert all(set(c) == {"name", "value", "bound", "passed"} for c in decision.checks)
    return decision


def by_name(decision):
    return {c["name"]: c for c in decision.checks}


def test_no_earlier_run_passes():
    assert check_data(run(), None) == DataCheckDecision(True, "no earlier run to compare with", [])


def test_the_same_counts_pass_every_check():
    decision = checked(run())
    assert decision.passed
    assert decision.checks == [
        {"name": "rows_read", "value": 1000, "bound": [500.0, 1500.0], "passed": True},
        {"name": "dropped_share", "value": 0.1, "bound": [0.05, 0.15], "passed": True},
        {"name": "split_share[train]", "value": 0.8, "bound": [0.75, 0.85], "passed": True},
        {"name": "split_share[eval]", "value": 0.2, "bound": [0.15, 0.25], "passed": True},
    ]
    assert decision.reason == ("data in line with the last good run run-20261126-050000-0123456789 (4 checks "
                               "passed); rows read unchanged at 1000")
    assert checked(run(read=1200, dropped=120)).reason.endswith("; rows read rose from 1000 to 1200 (+20 %, allowed ±50 %)")


# Previous: 1000 read, 100 dropped (10 %), 720/180 written (80 % / 20 %). Bands: ±50 % of 1000
# read, ±5 points on the dropped share and on each split's share.
@pytest.mark.parametrize("counts, passed, failing", [
    ({"read": 500, "dropped": 50}, True, None),      # rows read at the lower edge
    ({"read": 1500, "dropped": 150}, True, None),    # at the upper edge
    ({"read": 499, "dropped": 50}, False, "rows_read"),
    ({"read": 1501, "dropped": 150}, False, "rows_read"),
    ({"dropped": 150}, True, None),                  # dropped 15 %: at the edge
    ({"dropped": 50}, True, None),                   # 5 %: at the other edge
    ({"dropped": 151}, False, "dropped_share"),
    ({"dropped": 49}, False, "dropped_share"),
    ({"train": 750, "eval_": 250}, True, None),      # train 75 %: at the edge
    ({"train": 850, "eval_": 150}, True, None),      # 85 %
    ({"train": 740, "eval_": 260}, False, "split_share[train]"),
    ({"train": 860, "eval_": 140}, False, "split_share[train]"),
])
def test_each_count_must_stay_inside_its_band(counts, passed, failing):
    decision = checked(run(**counts))
    assert decision.passed is passed
    assert [c["name"] for c in decision.checks if not c["passed"]][:1] == ([failing] if failing else [])


def test_a_failure_says_what_moved_and_what_to_do():
    decision = checked(run(read=400, dropped=40))
    assert decision.reason == (
        "data unlike the last good run run-20261126-050000-0123456789: rows read fell from 1000 to 400 "
        "(-60 %, allowed ±50 %); if the change is meant, run again with wider release.dataCheck tolerances")
    split = checked(run(train=600, eval_=400), previous=run())
    assert split.reason == (
        "data unlike the last good run: the train split holds 60 % of the rows written, against 80 % last "
        "time (allowed ±5 points); 1 more check failed; if the change is meant, run again with wider "
        "release.dataCheck tolerances")
    assert by_name(split)["split_share[eval]"] == {"name": "split_share[eval]", "value": 0.4,
                                                   "bound": [0.15, 0.25], "passed": False}


@pytest.mark.parametrize("current, words", [
    (run(limit=5000, read=100, dropped=10), "rows read not compared: the requests differ (limit 5000 against 200000)"),
    (run(limit=None, read=9000, dropped=900), "rows read not compared: the requests differ (limit None against 200000)"),
    (run(source="bigquery", read=9000, dropped=900),
     "rows read not compared: the requests differ (source bigquery against data/natality.parquet)"),
])
def test_rows_read_are_compared_only_for_the_same_limit_and_source(current, words):
    decision = checked(current)
    assert decision.passed and words in decision.reason
    assert "rows_read" not in by_name(decision)


def test_a_changed_source_still_has_its_shares_checked():
    decision = checked(run(source="bigquery", read=9000, dropped=4500))
    assert not decision.passed and by_name(decision)["dropped_share"]["value"] == 0.5


def test_the_tolerances_are_the_policys():
    current = run(read=400, dropped=200, train=600, eval_=400)  # -60 %, 50 % dropped, 60/40
    assert not checked(current).passed
    assert checked(current, rows_read_tolerance=0.6, dropped_share_tolerance=0.4, split_share_tolerance=0.2).passed
    release = parse_run_request({"release": {"dataCheck": {
        "rowsReadTolerance": 0.6, "droppedShareTolerance": 0.4, "splitShareTolerance": 0.2}}}).release
    assert check_data(current, PREVIOUS, ReleasePolicy().with_overrides(release)).passed


def test_bands_are_clamped_to_shares():
    decision = checked(run(dropped=0), previous=run(dropped=10), dropped_share_tolerance=0.5)
    assert by_name(decision)["dropped_share"]["bound"] == [0.0, 0.51]


def test_a_manifest_summary_and_its_ledger_form_are_the_same():
    manifest = {"splits": {"train": {"rows": 720}, "eval": {"rows": 180}},
                "input": {"rows_read": 1000, "rows_dropped": 100, "rows_valid": 900, "limit": None}}
    as_summary = summarize(manifest)
    assert isinstance(as_summary, ManifestSummary)
    assert checked(RunData(as_summary, 200_000, SOURCE)).checks == checked(run()).checks


@pytest.mark.parametrize("previous_summary, words", [
    ({"rows": {"train": 720, "eval": 180}},
     "rows read not compared: the earlier run has no figure; dropped share not compared: the earlier run has no "
     "figure"),
    ({"rows": {"train": 720, "eval": 180}, "input": {"rows_read": 1000}},
     "dropped share not compared: the earlier run has no figure"),
    ({"rows": {"train": 720}, "input": {"rows_read": 1000, "rows_dropped": 100}},
     "split shares not compared: the earlier run has no figure"),
    ({"rows": {"train": 0, "eval": 0}, "input": {"rows_read": 0, "rows_dropped": 0}},
     "rows read not compared: the earlier run has no figure; dropped share not compared: the earlier run has no "
     "figure; split shares not compared: the earlier run has no figure"),
])
def test_counts_an_earlier_run_did_not_record_are_not_compared(previous_summary, words):
    decision = checked(run(), previous=RunData(previous_summary, 200_000, SOURCE))
    assert decision.passed and words in decision.reason


def test_counts_this_run_did_not_record_are_not_compared_either():
    decision = checked(RunData({"rows": {"train": 720, "eval": 180}}, 200_000, SOURCE))
    assert decision.passed and [c["name"] for c in decision.checks] == ["split_share[train]", "split_share[eval]"]
    assert "rows read not compared: this run has no figure" in decision.reason


@pytest.mark.parametrize("bad, words", [
    ({"rows": {"train": "720", "eval": 180}}, "this run's train rows must be a count"),
    ({"rows": {"train": -1, "eval": 180}}, "this run's train rows must be a count"),
    ({"rows": {"train": True, "eval": 180}}, "must be a count"),
    ({"rows": {"train": 720, "eval": 180}, "input": {"rows_read": 1.5}}, "this run's rows_read must be a count"),
    ({"rows": {"train": 720, "eval": 180}, "input": []}, "input is not an object"),
    ({"input": {}}, "has no rows per split"),
    ([1, 2], "is not an object"),
])
def test_counts_that_are_not_counts_are_refused(bad, words):
    with pytest.raises(InvalidSummary, match=words):
        check_data(RunData(bad, None, None), PREVIOUS)
    with pytest.raises(ValueError, match=words.replace("this run's", "the earlier run's")):
        check_data(run(), RunData(bad, None, None))
