"""The report's plots, drawn with matplotlib's SVG backend and returned as inline <svg> markup.

SVG rather than PNG: the plots are lines, bars and a few hundred points, which SVG keeps small
and sharp at any zoom, and its labels stay text a reader can search and copy. Only the
object-oriented API is used (a `Figure` per plot, never pyplot), so no GUI backend is loaded and
the console can draw from several request threads; the rc settings are global, so drawing holds
one lock. Each SVG's ids are prefixed with the plot's name, so that several plots inline in one
page never share an id.

Every function returns None when its data is absent, and the page says "not recorded for this run"
in the plot's place.
"""
from __future__ import annotations

import io
import math
import re
import threading
from collections import defaultdict
from datetime import datetime
from typing import Any, Callable, Mapping

from events.ledger import STAGES
from mlrelay.report.facts import RunFacts, release_time

_LOCK = threading.Lock()
_RC = {
    "svg.fonttype": "none",  # text as <text>, in the page's own sans-serif font
    "svg.hashsalt": "mlrelay-report",  # ids that do not change from one rendering to the next
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
CANDIDATE, CHAMPION, PREVIOUS = "#1f77b4", "#ff7f0e", "#9e9e9e"
STAGE_COLOURS = dict(zip(STAGES, ("#8c564b", "#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e")))
WIDTH_IN = 7.5


def draw(name: str, paint: Callable[[Any], bool | None], height_in: float = 3.0) -> str | None:
    """Run `paint(figure)` and return the figure as inline SVG, or None when paint returns False."""
    import matplotlib
    from matplotlib.figure import Figure

    with _LOCK, matplotlib.rc_context(_RC):
        figure = Figure(figsize=(WIDTH_IN, height_in), layout="constrained")
        if paint(figure) is False:
            return None
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return _inline(buffer.getvalue(), name)


def _inline(svg: str, prefix: str) -> str:
    """The <svg> element alone, its ids prefixed. The XML declaration, the namespace declarations
    (an HTML parser supplies them) and the RDF metadata go: they are the only URLs matplotlib
    writes, and though none is ever fetched, a page without any URL is self-contained at a glance.
    The stroke style matplotlib puts in each figure is the page's own (`figure svg *`)."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s*<defs>\s*<style type="text/css">[^<]*</style>\s*</defs>', "", svg)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', rf'url(#{prefix}-\1)', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    return svg.replace("<svg ", f'<svg role="img" aria-labelledby="{prefix}-title" ', 1).replace(
        ">", f'><title id="{prefix}-title">{prefix.replace("-", " ")}</title>', 1)


# --- the plots ------------------------------------------------------------------------------------


def stage_timeline(facts: RunFacts) -> str | None:
    """A bar per stage from the ledger's times; each record a tick on its stage, the hand-offs
    (where the next stage's first record follows) marked with the seconds they took."""
    status = facts.status
    origin = status.started
    last = status.updated

    def seconds(moment: datetime) -> float:
        return (moment - origin).total_seconds()

    stages = [stage for stage in STAGES if stage in status.stages]

    def paint(figure) -> None:
        axes = figure.add_subplot()
        span = max(seconds(last), 1e-3)
        for row, stage in enumerate(stages):
            timing = status.stages[stage]
            start = seconds(timing.start)
            end = seconds(timing.end) if timing.end is not None else seconds(last)
            open_ended = timing.end is None and not status.terminal
            axes.barh(row, max(end - start, span * 0.004), left=start, height=0.5,
                      color=STAGE_COLOURS[stage], alpha=0.45 if open_ended else 0.85,
                      hatch="//" if open_ended else None, edgecolor=STAGE_COLOURS[stage])
            took = end - start
            axes.text(end + span * 0.01, row, f"{took:.1f} s" + (" (so far)" if open_ended else ""),
                      va="center", fontsize=8)
            for event in facts.records:
                if event.stage == stage:
                    axes.plot(seconds(event.time), row, marker="|", markersize=14, color="black")
        for event in facts.records:
            if event.terminal:
                row = stages.index(event.stage)
                axes.annotate(event.state.value, (seconds(event.time), row), xytext=(0, 11),
                              textcoords="offset points", ha="center", fontsize=8)
                break
        for row in range(1, len(stages)):
            hand_off = seconds(status.stages[stages[row]].start)
            axes.axvline(hand_off, color="grey", linestyle=":", linewidth=0.8)
        axes.set_yticks(range(len(stages)), stages)
        axes.invert_yaxis()
        axes.set_xlabel(f"seconds since the run was requested ({origin:%Y-%m-%d %H:%M:%S} UTC)")
        axes.set_xlim(-span * 0.02, span * 1.15)
        axes.grid(axis="y", visible=False)

    return draw("stage-timeline", paint, height_in=0.7 + 0.45 * max(len(stages), 1))


def data_counts(facts: RunFacts) -> str | None:
    """This run's data counts beside those of the run that served when it was checked."""
    mine = facts.counts
    if not mine or not mine["counts"]:
        return None
    theirs = (facts.previous_counts or {}).get("counts") or {}
    names = list(mine["counts"])

    def paint(figure) -> None:
        axes = figure.add_subplot()
        rows = range(len(names))
        height = 0.38 if theirs else 0.6
        this = [mine["counts"][name] for name in names]
        axes.barh([r - (height / 2 if theirs else 0) for r in rows], this, height=height, color=CANDIDATE,
                  label=f"this run ({facts.run_id})")
        if theirs:
            axes.barh([r + height / 2 for r in rows], [theirs.get(name, 0) for name in names], height=height,
                      color=PREVIOUS, label=f"served before ({facts.previous.run_id})")
        top = max(this + [theirs.get(name, 0) for name in names])
        for row, name in enumerate(names):
            label = f"{mine['counts'][name]:,}"
            if name in theirs and theirs[name]:
                change = (mine["counts"][name] - theirs[name]) / theirs[name] * 100
                label += f" ({change:+.1f} %)"
            axes.text(mine["counts"][name] + top * 0.01, row - (height / 2 if theirs else 0), label,
                      va="center", fontsize=8)
        axes.set_yticks(list(rows), names)
        axes.invert_yaxis()
        axes.set_xlim(0, top * 1.3)
        axes.set_xlabel("rows")
        figure.legend(loc="outside upper right", ncols=2, fontsize=8, frameon=False)
        axes.grid(axis="y", visible=False)

    return draw("data-counts", paint, height_in=0.8 + 0.4 * len(names))


def learning_curves(report: Mapping[str, Any] | None) -> str | None:
    """Train and eval loss at each evaluation, against the training examples seen."""
    points = [e for e in (report or {}).get("evaluations") or [] if isinstance(e, dict)]
    points = [e for e in points if _number(e.get("examples_seen")) is not None]
    if not points:
        return None

    def paint(figure) -> None:
        axes = figure.add_subplot()
        seen = [e["examples_seen"] for e in points]
        for key, colour, label in (("train_loss", CANDIDATE, "train loss"), ("eval_loss", CHAMPION, "eval loss")):
            values = [_number(e.get(key)) for e in points]
            if any(v is not None for v in values):
                axes.plot(seen, [math.nan if v is None else v for v in values], marker="o", color=colour,
                          label=label)
        rmse = [_number(e.get("eval_rmse")) for e in points]
        if any(v is not None for v in rmse):
            right = axes.twinx()
            right.plot(seen, [math.nan if v is None else v for v in rmse], linestyle="--", color="#555555",
                       label="eval RMSE (lb)")
            right.set_ylabel("eval RMSE (lb)")
            right.grid(False)
            right.spines["right"].set_visible(True)
            right.legend(loc="upper center", fontsize=8)
        axes.margins(x=0.08, y=0.15)  # one evaluation is one point: keep it off the frame
        axes.set_xlabel("training examples seen")
        axes.set_ylabel("loss (mean squared error)")
        axes.legend(loc="upper right", fontsize=8)

    return draw("learning-curves", paint)


def predicted_vs_actual(report: Mapping[str, Any] | None) -> str | None:
    """The sample's predictions against the true weights, with the line y = x."""
    pairs = _sample_pairs(report)
    if not pairs:
        return None

    def paint(figure) -> None:
        axes = figure.add_subplot()
        true, predicted = zip(*((t, p) for t, p, _ in pairs))
        axes.scatter(true, predicted, s=9, alpha=0.5, color=CANDIDATE, edgecolors="none",
                     label=f"{len(pairs)} eval rows")
        low, high = min(min(true), min(predicted)), max(max(true), max(predicted))
        pad = (high - low) * 0.05 or 0.5
        low, high = low - pad, high + pad
        axes.plot([low, high], [low, high], color="black", linewidth=1, label="y = x")
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        axes.set_xlabel("actual weight (lb)")
        axes.set_ylabel("predicted weight (lb)")
        axes.set_aspect("equal", adjustable="box")
        axes.legend(loc="upper left", fontsize=8)

    return draw("predicted-vs-actual", paint, height_in=3.6)


def residuals(report: Mapping[str, Any] | None) -> str | None:
    """Residuals (predicted - actual) by gestation week (mean ± sd) and by plurality (box plots)."""
    pairs = _sample_pairs(report)
    if not pairs:
        return None
    by_week: dict[float, list[float]] = defaultdict(list)
    by_plurality: dict[str, list[float]] = defaultdict(list)
    for true, predicted, row in pairs:
        week = _number(row.get("gestation_weeks"))
        if week is not None:
            by_week[week].append(predicted - true)
        if row.get("plurality") is not None:
            by_plurality[str(row["plurality"])].append(predicted - true)
    if not by_week and not by_plurality:
        return None

    def paint(figure) -> None:
        left, right = figure.subplots(1, 2, width_ratios=(3, 2))
        weeks = sorted(by_week)
        means = [_mean(by_week[w]) for w in weeks]
        spread = [_sd(by_week[w]) for w in weeks]
        left.errorbar(weeks, means, yerr=spread, fmt="o", markersize=3, capsize=2, color=CANDIDATE)
        left.axhline(0, color="black", linewidth=0.8)
        left.set_xlabel("gestation weeks")
        left.set_ylabel("predicted - actual (lb), mean ± sd")
        groups = sorted(by_plurality, key=lambda name: -len(by_plurality[name]))
        right.boxplot([by_plurality[name] for name in groups], orientation="vertical", widths=0.5,
                      flierprops={"markersize": 2})
        right.set_xticks(range(1, len(groups) + 1), [f"{name}\n({len(by_plurality[name])})" for name in groups],
                         fontsize=7, rotation=20)
        right.axhline(0, color="black", linewidth=0.8)
        right.set_xlabel("plurality (rows)")

    return draw("residuals", paint, height_in=3.2)


def slice_rmse(comparison: Mapping[str, Any] | None, report: Mapping[str, Any] | None) -> str | None:
    """The candidate's and the champion's RMSE overall and per slice, on the same eval rows."""
    candidate = (comparison or {}).get("candidate") or {}
    champion = (comparison or {}).get("champion") or {}
    mine = _slices(candidate) or {name: value for name, value in ((report or {}).get("slices") or {}).items()
                                  if isinstance(value, dict) and _number(value.get("rmse")) is not None}
    if not mine:
        return None
    theirs = _slices(champion) if "error" not in champion else {}
    names = ["overall"] + sorted(mine)
    rows_of = {name: mine[name].get("rows") for name in mine}
    rows_of["overall"] = (comparison or {}).get("eval_rows")
    mine = {"overall": {"rmse": candidate.get("rmse")}, **mine} if _number(candidate.get("rmse")) is not None \
        else mine
    if "overall" not in mine:
        names.remove("overall")
    if theirs and _number(champion.get("rmse")) is not None:
        theirs = {"overall": {"rmse": champion["rmse"]}, **theirs}

    def paint(figure) -> None:
        axes = figure.add_subplot()
        height = 0.38 if theirs else 0.6
        for row, name in enumerate(names):
            value = _number(mine[name].get("rmse"))
            axes.barh(row - (height / 2 if theirs else 0), value, height=height, color=CANDIDATE,
                      label="candidate" if row == 0 else None)
            axes.text(value, row - (height / 2 if theirs else 0), f" {value:.3f}", va="center", fontsize=7)
            other = _number((theirs.get(name) or {}).get("rmse"))
            if other is not None:
                axes.barh(row + height / 2, other, height=height, color=CHAMPION,
                          label="champion" if row == 0 else None)
                axes.text(other, row + height / 2, f" {other:.3f}", va="center", fontsize=7)
        baseline = _number((comparison or {}).get("mean_baseline_rmse"))
        if baseline is not None:
            axes.axvline(baseline, color="black", linestyle="--", linewidth=0.8, label="predict the mean")
        labels = [f"{name} ({rows_of[name]:,} rows)" if isinstance(rows_of.get(name), int) else name
                  for name in names]
        axes.set_yticks(range(len(names)), labels, fontsize=8)
        axes.invert_yaxis()
        values = [_number(mine[n].get("rmse")) for n in names]
        values += [v for v in (_number((theirs.get(n) or {}).get("rmse")) for n in names) if v is not None]
        axes.set_xlim(0, max(values + [baseline or 0]) * 1.12)
        axes.set_xlabel("RMSE (lb), lower is better")
        figure.legend(loc="outside upper right", ncols=3, fontsize=8, frameon=False)
        axes.grid(axis="y", visible=False)

    return draw("slice-rmse", paint, height_in=0.9 + 0.42 * len(names))


def release_timeline(releases: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> str | None:
    """Each deployed model's share of the endpoint's traffic across this run's traffic changes."""
    changes = [(release_time(r), r) for r in releases]
    changes = [(moment, r) for moment, r in changes if moment is not None]
    if not changes:
        return None
    models = sorted({str(m) for _, r in changes for m in (*(r.get("from") or {}), *(r.get("to") or {}))},
                    key=lambda m: (len(m), m))

    def paint(figure) -> None:
        axes = figure.add_subplot()
        origin = changes[0][0]
        times = [(moment - origin).total_seconds() for moment, _ in changes]
        span = max(times[-1], 1.0)
        xs = [-span * 0.1] + times + [span * 1.1]
        for index, model in enumerate(models):
            share = [float((changes[0][1].get("from") or {}).get(model, 0))]
            share += [float((r.get("to") or {}).get(model, 0)) for _, r in changes]
            share.append(share[-1])
            axes.step(xs, share, where="post", linewidth=2, label=f"deployed model {model}",
                      color=f"C{index % 10}")
        for x, (_, release) in zip(times, changes):
            axes.axvline(x, color="grey", linestyle=":", linewidth=0.8)
            axes.annotate(str(release.get("action", "?")), (x, 104), ha="center", fontsize=8,
                          annotation_clip=False)
        axes.set_ylim(-5, 112)
        axes.set_xlim(xs[0], xs[-1])
        axes.set_ylabel("traffic (%)")
        axes.set_xlabel(f"seconds since {origin:%Y-%m-%d %H:%M:%S} UTC")
        axes.legend(loc="center right", fontsize=8)

    return draw("release-timeline", paint, height_in=2.8)


# --- helpers --------------------------------------------------------------------------------------


def _sample_pairs(report: Mapping[str, Any] | None) -> list[tuple[float, float, Mapping[str, Any]]]:
    pairs = []
    for row in (report or {}).get("sample") or []:
        if isinstance(row, dict):
            true, predicted = _number(row.get("true")), _number(row.get("predicted"))
            if true is not None and predicted is not None:
                pairs.append((true, predicted, row))
    return pairs


def _slices(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    slices = entry.get("slices") if isinstance(entry, Mapping) else None
    if not isinstance(slices, dict):
        return {}
    return {name: value for name, value in slices.items()
            if isinstance(value, dict) and _number(value.get("rmse")) is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sd(values: list[float]) -> float:
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
