"""The gate: is a trained candidate fit to be deployed? Decided from the trainer's comparison.json.

The trainer scores the candidate and the serving champion on the candidate's own eval rows,
overall and per slice (e.g. `plurality=Single(1)`, `gestation_weeks<37`, `is_male=Unknown`), and
writes one document:

    {"format": "mlrelay-model-comparison/1", "eval_rows": int, "mean_baseline_rmse": float,
     "candidate": {"rmse": float, "slices": {slice: {"rmse": float, "rows": int}}},
     "champion": null | {"artifact_uri": str, "rmse": float, "slices": {...}}
                      | {"artifact_uri": str, "error": str}}

The candidate is blessed when it passes every check:
- the value bound: its RMSE is below the mean baseline's less `min_improvement_over_mean` (a
  model must beat predicting the training mean by a margin), always;
- the change bound, when there is a champion: its RMSE is at most the champion's plus
  `tolerance`, and on every slice scored for both with at least `min_slice_rows` rows, at most the
  champion's plus `slice_tolerance` (a model better on average may still fail a group of births).
  A slice scored for only one of them is not compared (the slices changed, not the model), and a
  smaller one is too noisy to judge.

A champion that could not be scored ("error") blocks the candidate: the gate fails safe rather
than release a model it could not compare. A document that breaks the format raises
`InvalidComparison`, whose text is one line for the run ledger.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.release.checks import check, failed, is_at_most, is_below, number, percent
from functions.release.policy import ReleasePolicy

COMPARISON_FORMAT = "mlrelay-model-comparison/1"
COMPARISON_NAME = "comparison.json"


class InvalidComparison(ValueError):
    """comparison.json does not follow its format; str() is one line naming the faulty key."""


@dataclass(frozen=True)
class SliceScore:
    rmse: float
    rows: int


@dataclass(frozen=True)
class Scores:
    """One model's RMSE on the eval rows, overall and per slice."""

    rmse: float
    slices: dict[str, SliceScore]


@dataclass(frozen=True)
class Comparison:
    """A comparison.json that follows its format. With a champion, exactly one of
    `champion` (its scores) and `champion_error` (why it could not be scored) is set."""

    eval_rows: int
    mean_baseline_rmse: float
    candidate: Scores
    champion_uri: str | None = None
    champion: Scores | None = None
    champion_error: str | None = None


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be deployed, why (one line), and every check made.

    `checks` holds JSON-ready records {"name", "value", "bound", "passed"}, in the order made.
    """

    blessed: bool
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"blessed": self.blessed, "reason": self.reason, "checks": [dict(c) for c in self.checks]}


def decide_gate(document: object, policy: ReleasePolicy = ReleasePolicy()) -> GateDecision:
    """The gate's decision on a comparison document (decoded JSON), under `policy`'s thresholds.

    Raises InvalidComparison when the document breaks its format (the stage records that as a
    failure of the run, not as a rejected model).
    """
    comparison = parse_comparison(document)
    candidate = comparison.candidate
    checks: list[dict[str, Any]] = []
    problems: list[tuple[float, str]] = []  # (order, message): the first one leads the reason

    mean = comparison.mean_baseline_rmse
    value_bound = mean * (1 - policy.min_improvement_over_mean)
    checks.append(check("rmse_below_mean_baseline", candidate.rmse, value_bound,
                        is_below(candidate.rmse, value_bound)))
    if not checks[-1]["passed"]:
        problems.append((0, f"candidate RMSE {number(candidate.rmse)} is not below {number(value_bound)}, the "
                            f"mean baseline's {number(mean)} less {percent(policy.min_improvement_over_mean)}: "
                            "it does not beat predicting the mean by enough (look at the data and the "
                            "training settings)"))

    if comparison.champion_error is not None:
        checks.append(check("champion_scored", None, None, False))
        problems.append((-1, f"the champion {comparison.champion_uri} could not be scored on this run's "
                             f"eval rows ({comparison.champion_error or 'no reason given'}), so the "
                             "candidate cannot be compared with it: fix or roll back the champion, "
                             "then run again"))
        return _decision(checks, problems, lambda: "")

    if comparison.champion is None:
        return _decision(checks, problems,
                         lambda: _value_praise(candidate.rmse, mean, policy) + "; no champion to compare with")

    champion = comparison.champion
    overall_bound = champion.rmse * (1 + policy.tolerance)
    checks.append(check("rmse_vs_champion", candidate.rmse, overall_bound,
                        is_at_most(candidate.rmse, overall_bound)))
    if not checks[-1]["passed"]:
        problems.append((1, f"candidate RMSE {number(candidate.rmse)} is {_worse_by(candidate.rmse, champion.rmse)} "
                            f"the champion's {number(champion.rmse)}, more than the {percent(policy.tolerance)} "
                            "allowed"))

    compared, too_small = 0, 0
    slice_failures: list[tuple[float, str]] = []
    for key in sorted(candidate.slices.keys() & champion.slices.keys()):
        ours, theirs = candidate.slices[key], champion.slices[key]
        rows = min(ours.rows, theirs.rows)
        if rows < policy.min_slice_rows:
            too_small += 1
            continue
        compared += 1
        bound = theirs.rmse * (1 + policy.slice_tolerance)
        checks.append(check(f"slice_rmse_vs_champion[{key}]", ours.rmse, bound, is_at_most(ours.rmse, bound)))
        if not checks[-1]["passed"]:
            excess = ours.rmse / theirs.rmse if theirs.rmse else math.inf
            slice_failures.append((-excess, f"on slice {key} ({rows:,} rows) candidate RMSE {number(ours.rmse)} is "
                                            f"{_worse_by(ours.rmse, theirs.rmse)} the champion's "
                                            f"{number(theirs.rmse)}, more than the "
                                            f"{percent(policy.slice_tolerance)} allowed"))
    # The slice that got worst leads, after the overall checks.
    problems += [(2, message) for _, message in sorted(slice_failures)]
    unmatched = len(candidate.slices.keys() ^ champion.slices.keys())
    skipped = [text for count, text in ((too_small, f"{too_small} under {policy.min_slice_rows:,} rows"),
                                        (unmatched, f"{unmatched} not scored for both")) if count]
    return _decision(checks, problems, lambda: (
        _value_praise(candidate.rmse, mean, policy)
        + f"; within {percent(policy.tolerance)} of the champion's {number(champion.rmse)} overall and "
          f"{percent(policy.slice_tolerance)} on {compared} slice{'s' if compared != 1 else ''}"
        + (f" ({', '.join(skipped)}, not compared)" if skipped else "")))


def _decision(checks: list[dict[str, Any]], problems: list[tuple[float, str]],
              praise: Callable[[], str]) -> GateDecision:
    """Blessed when nothing failed (`praise` says why; built only then, as it divides by the
    baseline), else the first problem in order and how many checks failed besides."""
    if not problems:
        return GateDecision(True, f"blessed: {praise()}", checks)
    ordered = [message for _, message in sorted(problems, key=lambda item: item[0])]
    others = len(failed(checks)) - 1
    more = f"; {others} more check{'s' if others != 1 else ''} failed" if others > 0 else ""
    return GateDecision(False, f"not blessed: {ordered[0]}{more}", checks)


def _value_praise(rmse: float, mean: float, policy: ReleasePolicy) -> str:
    return (f"candidate RMSE {number(rmse)} is {percent(1 - rmse / mean)} below the mean baseline's "
            f"{number(mean)} (at least {percent(policy.min_improvement_over_mean)} required)")


def _worse_by(value: float, reference: float) -> str:
    return f"{percent(value / reference - 1)} worse than" if reference else "worse than"


# --- the document's format ------------------------------------------------------------------


def parse_comparison(document: object) -> Comparison:
    """The comparison document checked against its format; InvalidComparison names what is wrong.

    Unknown keys are allowed (a later trainer may add figures); every number must be finite.
    """
    if not isinstance(document, Mapping):
        raise InvalidComparison(f"comparison document is not a JSON object (got {_kind(document)})")
    if document.get("format") != COMPARISON_FORMAT:
        raise InvalidComparison(f"comparison document: format is {_short(document.get('format'))}, "
                                f"expected {_short(COMPARISON_FORMAT)}")
    eval_rows = _count(_get(document, "eval_rows", ""), "eval_rows", minimum=1)
    mean = _rmse(_get(document, "mean_baseline_rmse", ""), "mean_baseline_rmse")
    candidate = _scores(_object(_get(document, "candidate", ""), "candidate"), "candidate")
    if "champion" not in document:
        raise InvalidComparison("comparison document: champion is missing (null when there is none)")
    raw = document["champion"]
    if raw is None:
        return Comparison(eval_rows, mean, candidate)
    raw = _object(raw, "champion")
    uri = _get(raw, "artifact_uri", "champion.")
    if not isinstance(uri, str):
        raise InvalidComparison(f"comparison document: champion.artifact_uri must be a string, got {_short(uri)}")
    if "error" in raw:
        error = raw["error"]
        if not isinstance(error, str):
            raise InvalidComparison(f"comparison document: champion.error must be a string, got {_short(error)}")
        return Comparison(eval_rows, mean, candidate, uri, champion_error=_one_line(error))
    return Comparison(eval_rows, mean, candidate, uri, champion=_scores(raw, "champion"))


def _scores(raw: Mapping[str, Any], where: str) -> Scores:
    rmse = _rmse(_get(raw, "rmse", f"{where}."), f"{where}.rmse")
    slices_raw = _object(_get(raw, "slices", f"{where}."), f"{where}.slices")
    slices = {}
    for key, entry in slices_raw.items():
        path = f"{where}.slices[{_short(key)}]"
        entry = _object(entry, path)
        slices[str(key)] = SliceScore(_rmse(_get(entry, "rmse", path + "."), f"{path}.rmse"),
                                      _count(_get(entry, "rows", path + "."), f"{path}.rows", minimum=0))
    return Scores(rmse, slices)


def _get(raw: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in raw:
        raise InvalidComparison(f"comparison document: {prefix}{key} is missing")
    return raw[key]


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidComparison(f"comparison document: {where} must be an object, got {_kind(value)} {_short(value)}")
    return value


def _rmse(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidComparison(f"comparison document: {where} must be a finite number of at least 0, "
                                f"got {_short(value)}")
    return float(value)


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidComparison(f"comparison document: {where} must be an integer of at least {minimum}, "
                                f"got {_short(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """A value as it reads in a message, JSON's names for the non-finite floats, cut short."""
    if isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    else:
        text = repr(value)
    return _one_line(text, limit)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
