"""The gate: hand-checkable numbers at, under and over each bound, slices, the champion's
error, and every way a comparison document can break its format."""
from __future__ import annotations

import copy
import json
import math
import random

import pytest

from events.run_request import parse_run_request
from functions.release.gate import COMPARISON_FORMAT, GateDecision, InvalidComparison, decide_gate
from functions.release.policy import ReleasePolicy

CHAMPION_URI = "gs://mlrelay/runs/run-20261126-050000-0123456789/train/model/"


def document(candidate=1.0, mean=2.0, champion: object = "none", slices=None, champion_slices=None):
    """A comparison.json: candidate RMSE `candidate`, mean baseline `mean`; `champion` an RMSE,
    None (the document's null), "none" (likewise), or {"error": ...}."""
    doc = {"format": COMPARISON_FORMAT, "eval_rows": 1000, "mean_baseline_rmse": mean,
           "candidate": {"rmse": candidate, "slices": _slices(slices or {})}, "champion": None}
    if isinstance(champion, dict):
        doc["champion"] = {"artifact_uri": CHAMPION_URI, **champion}
    elif isinstance(champion, (int, float)):
        doc["champion"] = {"artifact_uri": CHAMPION_URI, "rmse": champion, "slices": _slices(champion_slices or {})}
    return doc


def _slices(spec):
    """{key: rmse} (5,000 rows each: above the default min_slice_rows) or {key: (rmse, rows)}."""
    return {key: {"rmse": v[0], "rows": v[1]} if isinstance(v, tuple) else {"rmse": v, "rows": 5000}
            for key, v in spec.items()}


def decided(doc, **policy) -> GateDecision:
    decision = decide_gate(doc, ReleasePolicy(**policy))
    assert "\n" not in decision.reason and decision.reason.startswith(("blessed: ", "not blessed: "))
    json.dumps(decision.to_dict(), allow_nan=False)  # the ledger stores it as it is
    assert all(set(c) == {"name", "value", "bound", "passed"} for c in decision.checks)
    return decision


def by_name(decision):
    return {c["name"]: c for c in decision.checks}


# --- the value bound: beat predicting the mean by the margin -------------------------------


@pytest.mark.parametrize("mean, margin, candidate, blessed", [
    (2.0, 0.25, 1.49, True),    # bound 2.0 * 0.75 = 1.5
    (2.0, 0.25, 1.5, False),    # equal to the bound is not below it
    (2.0, 0.25, 1.51, False),
    (1.0, 0.05, 0.9499, True),  # the default margin: bound 0.95
    (1.0, 0.05, 0.95, False),
    (1.0, 0.05, 1.2, False),    # worse than the mean itself
    (2.0, 0.0, 1.999, True),    # no margin: anything better than the mean
    (2.0, 0.0, 2.0, False),
])
def test_the_candidate_must_beat_the_mean_by_the_margin(mean, margin, candidate, blessed):
    decision = decided(document(candidate, mean), min_improvement_over_mean=margin)
    assert decision.blessed is blessed
    assert decision.checks == [{"name": "rmse_below_mean_baseline", "value": candidate,
                                "bound": mean * (1 - margin), "passed": blessed}]


def test_the_reasons_name_the_figures():
    assert decided(document(1.5, 2.0)).reason == (
        "blessed: candidate RMSE 1.5 is 25 % below the mean baseline's 2 (at least 5 % required); "
        "no champion to compare with")
    assert decided(document(1.95, 2.0)).reason == (
        "not blessed: candidate RMSE 1.95 is not below 1.9, the mean baseline's 2 less 5 %: it does not "
        "beat predicting the mean by enough (look at the data and the training settings)")


# --- the change bound: no worse than the champion, overall --------------------------------


@pytest.mark.parametrize("champion, tolerance, candidate, blessed", [
    (2.0, 0.25, 2.5, True),      # bound 2.0 * 1.25 = 2.5: equal passes
    (2.0, 0.25, 2.51, False),
    (1.0, 0.0, 1.0, True),       # no tolerance: equal to the champion passes
    (1.0, 0.0, 1.0001, False),
    (1.0, 0.003, 1.003, True),   # the default: bound 1.003 (1.0 * 1.003 in floats)
    (1.0, 0.003, 1.0031, False),
    (1.0, 0.003, 0.8, True),     # better than the champion
])
def test_the_candidate_may_be_at_most_tolerance_worse_than_the_champion(champion, tolerance, candidate, blessed):
    decision = decided(document(candidate, mean=10.0, champion=champion), tolerance=tolerance)
    assert decision.blessed is blessed
    check = by_name(decision)["rmse_vs_champion"]
    assert check["bound"] == pytest.approx(champion * (1 + tolerance)) and check["passed"] is blessed


def test_a_worse_candidate_says_by_how_much():
    assert decided(document(1.02, mean=10.0, champion=1.0)).reason == (
        "not blessed: candidate RMSE 1.02 is 2 % worse than the champion's 1, more than the 0.2 % allowed")


def test_both_bounds_apply_and_the_value_bound_leads_the_reason():
    decision = decided(document(2.0, mean=2.0, champion=1.0))
    assert [c["passed"] for c in decision.checks] == [False, False]
    assert decision.reason.startswith("not blessed: candidate RMSE 2 is not below 1.9")
    assert decision.reason.endswith("; 1 more check failed")


# --- slices --------------------------------------------------------------------------------


@pytest.mark.parametrize("candidate_slice, champion_slice, blessed", [
    ((1.01, 5000), (1.0, 5000), True),    # the default: bound 1.0 * 1.01, equal passes
    ((1.011, 5000), (1.0, 5000), False),
    ((0.5, 5000), (1.0, 5000), True),
    ((9.0, 999), (1.0, 999), True),       # under 1,000 rows: too small to judge
    ((9.0, 1000), (1.0, 1000), False),    # 1,000 rows: judged
    ((9.0, 5000), (1.0, 999), True),      # the smaller count of the two decides
])
def test_each_slice_scored_for_both_may_be_at_most_slice_tolerance_worse(candidate_slice, champion_slice, blessed):
    doc = document(1.0, mean=10.0, champion=1.0, slices={"gestation_weeks<37": candidate_slice},
                   champion_slices={"gestation_weeks<37": champion_slice})
    decision = decided(doc)
    assert decision.blessed is blessed
    judged = min(candidate_slice[1], champion_slice[1]) >= 1000
    assert ("slice_rmse_vs_champion[gestation_weeks<37]" in by_name(decision)) is judged


def test_slices_scored_for_only_one_model_are_not_compared():
    doc = document(1.0, mean=10.0, champion=1.0,
                   slices={"plurality=Single(1)": 1.0, "is_male=Unknown": 50.0},
                   champion_slices={"plurality=Single(1)": 1.0, "plurality=Twins(2)": 0.01})
    decision = decided(doc)
    assert decision.blessed
    assert [c["name"] for c in decision.checks] == [
        "rmse_below_mean_baseline", "rmse_vs_champion", "slice_rmse_vs_champion[plurality=Single(1)]"]
    assert decision.reason == (
        "blessed: candidate RMSE 1 is 90 % below the mean baseline's 10 (at least 5 % required); within 0.2 % "
        "of the champion's 1 overall and 1 % on 1 slice (2 not scored for both, not compared)")


def test_min_slice_rows_is_a_threshold_and_skipped_slices_are_counted():
    doc = document(1.0, mean=10.0, champion=1.0, slices={"a": (5.0, 1040), "b": (1.0, 5000)},
                   champion_slices={"a": (1.0, 1040), "b": (1.0, 5000)})
    assert not decided(doc).blessed
    relaxed = decided(doc, min_slice_rows=1041)
    assert relaxed.blessed and "(1 under 1,041 rows, not compared)" in relaxed.reason


def test_the_worst_slice_leads_the_reason():
    doc = document(1.0, mean=10.0, champion=1.0,
                   slices={"a": 1.1, "b": 1.5, "c": 1.2}, champion_slices={"a": 1.0, "b": 1.0, "c": 1.0})
    decision = decided(doc)
    assert not decision.blessed
    assert decision.reason == ("not blessed: on slice b (5,000 rows) candidate RMSE 1.5 is 50 % worse than the "
                               "champion's 1, more than the 1 % allowed; 2 more checks failed")


def test_a_slice_where_the_champion_scored_zero():
    doc = document(1.0, mean=10.0, champion=1.0, slices={"a": 0.1}, champion_slices={"a": 0.0})
    decision = decided(doc)
    assert not decision.blessed and "candidate RMSE 0.1 is worse than the champion's 0" in decision.reason
    same = document(1.0, mean=10.0, champion=1.0, slices={"a": 0.0}, champion_slices={"a": 0.0})
    assert decided(same).blessed


# --- the champion could not be scored: fail safe -----------------------------------------


def test_a_champion_that_could_not_be_scored_blocks_even_a_fine_candidate():
    doc = document(0.5, mean=2.0, champion={"error": "SavedModel not found at gs://...\nTraceback"})
    decision = decided(doc)
    assert not decision.blessed
    assert by_name(decision)["champion_scored"] == {"name": "champion_scored", "value": None, "bound": None,
                                                    "passed": False}
    assert by_name(decision)["rmse_below_mean_baseline"]["passed"]
    assert decision.reason == (
        f"not blessed: the champion {CHAMPION_URI} could not be scored on this run's eval rows "
        "(SavedModel not found at gs://... Traceback), so the candidate cannot be compared with it: fix or "
        "roll back the champion, then run again")


def test_the_champions_error_leads_even_when_the_candidate_also_fails():
    decision = decided(document(3.0, mean=2.0, champion={"error": "timeout"}))
    assert decision.reason.startswith("not blessed: the champion ") and "(timeout)" in decision.reason
    assert decision.reason.endswith("; 1 more check failed")


def test_an_error_wins_over_scores_in_the_same_champion():
    doc = document(1.0, mean=2.0, champion={"error": "", "rmse": 1.0, "slices": {}})
    decision = decided(doc)
    assert not decision.blessed and "(no reason given)" in decision.reason


# --- overrides from the request ------------------------------------------------------------


def test_a_requests_overrides_change_the_bounds():
    doc = document(1.01, mean=10.0, champion=1.0)
    assert not decided(doc).blessed
    release = parse_run_request({"release": {"tolerance": 0.01}}).release
    assert decide_gate(doc, ReleasePolicy().with_overrides(release)).blessed


# --- a document that breaks the format -----------------------------------------------------


def _without(path):
    def change(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _set(path, value):
    def change(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return change


SLICE = ("candidate", "slices", "plurality=Single(1)")


@pytest.mark.parametrize("change, words", [
    (_set(("format",), "mlrelay-model-comparison/2"), "format is 'mlrelay-model-comparison/2', expected"),
    (_without(("format",)), "format is None, expected 'mlrelay-model-comparison/1'"),
    (_without(("eval_rows",)), "eval_rows is missing"),
    (_set(("eval_rows",), "1000"), "eval_rows must be an integer of at least 1, got '1000'"),
    (_set(("eval_rows",), True), "eval_rows must be an integer of at least 1, got True"),
    (_set(("eval_rows",), 0), "eval_rows must be an integer of at least 1, got 0"),
    (_set(("eval_rows",), 10.0), "eval_rows must be an integer of at least 1, got 10.0"),
    (_without(("mean_baseline_rmse",)), "mean_baseline_rmse is missing"),
    (_set(("mean_baseline_rmse",), math.nan), "mean_baseline_rmse must be a finite number of at least 0, got NaN"),
    (_set(("mean_baseline_rmse",), math.inf), "got Infinity"),
    (_set(("mean_baseline_rmse",), -1.0), "mean_baseline_rmse must be a finite number of at least 0, got -1.0"),
    (_set(("mean_baseline_rmse",), "1.2"), "got '1.2'"),
    (_set(("mean_baseline_rmse",), None), "got None"),
    (_without(("candidate",)), "candidate is missing"),
    (_set(("candidate",), [1.0]), "candidate must be an object, got array [1.0]"),
    (_without(("candidate", "rmse")), "candidate.rmse is missing"),
    (_set(("candidate", "rmse"), math.nan), "candidate.rmse must be a finite number of at least 0, got NaN"),
    (_set(("candidate", "rmse"), -math.inf), "candidate.rmse must be a finite number of at least 0, got -Infinity"),
    (_without(("candidate", "slices")), "candidate.slices is missing"),
    (_set(("candidate", "slices"), []), "candidate.slices must be an object, got array []"),
    (_set(SLICE, 1.0), "candidate.slices['plurality=Single(1)'] must be an object, got number 1.0"),
    (_set(SLICE + ("rmse",), math.nan), "candidate.slices['plurality=Single(1)'].rmse must be a finite number"),
    (_without(SLICE + ("rows",)), "candidate.slices['plurality=Single(1)'].rows is missing"),
    (_set(SLICE + ("rows",), 1.5), "candidate.slices['plurality=Single(1)'].rows must be an integer of at least 0"),
    (_set(SLICE + ("rows",), -1), "rows must be an integer of at least 0, got -1"),
    (_without(("champion",)), "champion is missing (null when there is none)"),
    (_set(("champion",), "gs://x"), "champion must be an object, got string 'gs://x'"),
    (_without(("champion", "artifact_uri")), "champion.artifact_uri is missing"),
    (_set(("champion", "artifact_uri"), 5), "champion.artifact_uri must be a string, got 5"),
    (_without(("champion", "rmse")), "champion.rmse is missing"),
    (_set(("champion", "rmse"), math.nan), "champion.rmse must be a finite number of at least 0, got NaN"),
    (_set(("champion", "slices", "gestation_weeks<37", "rmse"), math.inf),
     "champion.slices['gestation_weeks<37'].rmse must be a finite number of at least 0, got Infinity"),
    (_set(("champion", "error"), {"code": 5}), "champion.error must be a string, got {'code': 5}"),
])
def test_a_malformed_document_is_refused_with_its_fault(change, words):
    doc = document(1.0, mean=2.0, champion=1.0, slices={"plurality=Single(1)": 1.0},
                   champion_slices={"gestation_weeks<37": 1.0})
    decide_gate(copy.deepcopy(doc))  # the document before the change is fine
    change(doc)
    with pytest.raises(InvalidComparison) as caught:
        decide_gate(doc)
    text = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert text.startswith("comparison document") and words in text and "\n" not in text, text


@pytest.mark.parametrize("doc, words", [
    ([], "not a JSON object (got array)"),
    (None, "not a JSON object (got null)"),
    ("{}", "not a JSON object (got string)"),
    ({}, "format is None"),
])
def test_anything_but_an_object_is_refused(doc, words):
    with pytest.raises(InvalidComparison, match=words.replace("(", r"\(").replace(")", r"\)")):
        decide_gate(doc)


def test_nan_in_the_json_text_is_refused():
    text = json.dumps(document(1.0, champion=1.0)).replace('"rmse": 1.0', '"rmse": NaN', 1)
    with pytest.raises(InvalidComparison, match="candidate.rmse .* got NaN"):
        decide_gate(json.loads(text))  # Python's json reads NaN; the gate does not accept it


def test_unknown_keys_are_allowed():
    doc = document(1.0, champion=1.0)
    doc["trainer_version"] = "2"
    doc["candidate"]["mae"] = 0.8
    assert decide_gate(doc).blessed


def test_fuzzed_documents_end_in_a_decision_or_invalid_comparison():
    rng = random.Random(20261127)
    base = document(1.0, mean=2.0, champion=1.0, slices={"a": 1.0, "b": (1.0, 10)},
                    champion_slices={"a": 1.0})
    junk = [None, True, 0, -1, 1.5, math.nan, math.inf, "x", [], {}, {"rmse": 1.0}]

    def paths(node, prefix=()):
        if isinstance(node, dict):
            for key, value in node.items():
                yield prefix + (key,)
                yield from paths(value, prefix + (key,))

    all_paths = list(paths(base))
    outcomes = {"decided": 0, "invalid": 0}
    for _ in range(2000):
        doc = copy.deepcopy(base)
        for path in rng.sample(all_paths, rng.randrange(1, 3)):
            try:
                (_without(path) if rng.random() < 0.3 else _set(path, rng.choice(junk)))(doc)
            except (KeyError, TypeError):
                pass  # an earlier change removed or replaced the parent
        try:
            decision = decide_gate(doc)
        except InvalidComparison as err:
            assert "\n" not in str(err) and len(str(err)) <= 400
            outcomes["invalid"] += 1
        else:
            json.dumps(decision.to_dict(), allow_nan=False)
            outcomes["decided"] += 1
    assert outcomes["invalid"] > 500 and outcomes["decided"] > 50
