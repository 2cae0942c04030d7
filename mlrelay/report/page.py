"""The run report as one self-contained HTML page: the facts, a table or two, and seven plots.

Self-contained means that the file opened from disk, mailed, or attached to a ticket shows the
same thing with no network: the plots are inline SVG, the style sheet is in the page, the fonts
are the reader's own sans-serif, and a Content-Security-Policy in the page forbids fetching
anything, so a reference that crept in would be refused, not loaded. Every text that comes from
the bucket (reasons, origins, requests) is escaped: a trigger file's content is anyone's.
"""
from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any, Iterable, Mapping

from events.timestamps import format_rfc3339
from functions.run_store import RunStore
from mlrelay.report import plots
from mlrelay.report.facts import RunFacts, read_facts, release_time

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
NOT_RECORDED = "not recorded for this run"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 62rem; padding: 0 1rem;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.35rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { text-align: left; padding: .15rem .6rem .15rem 0; vertical-align: top; }
th { color: #555; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, monospace; font-size: .8rem; }
pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; }
.state { display: inline-block; padding: .05rem .5rem; border-radius: .7rem; color: white;
         background: #777; font-size: .85rem; }
.state.deployed { background: #2e7d32; } .state.rejected, .state.failed, .state.rolled-back { background: #c62828; }
.state.baking, .state.training, .state.preprocessing, .state.deploying { background: #1565c0; }
.reason { border-left: 4px solid #c62828; background: #fdecea; padding: .5rem .8rem; }
.reason.ok { border-color: #2e7d32; background: #edf7ed; }
figure.plot { margin: .8rem 0; } figure.plot svg { max-width: 100%; height: auto; }
figure.plot svg * { stroke-linejoin: round; stroke-linecap: butt; }
figcaption { font-size: .85rem; color: #555; }
.not-recorded { color: #777; font-style: italic; border: 1px dashed #bbb; padding: 1rem; }
.passed { color: #2e7d32; } .failed-check { color: #c62828; }
nav { font-size: .9rem; margin-bottom: 1rem; }
"""
PLOTS = ("stage-timeline", "data-counts", "learning-curves", "predicted-vs-actual", "residuals", "slice-rmse",
         "release-timeline")


def render_report(runs: RunStore, run_id: str, *, nav: str = "") -> str:
    """The run's report, one HTML document; NoSuchRun (a ValueError) when the bucket has no such run.

    `nav` is HTML put first in the body (the console's links back); the report itself has none.
    """
    return render_facts(read_facts(runs, run_id), nav=nav)


def render_facts(facts: RunFacts, *, nav: str = "") -> str:
    report = facts.training_report
    no_report = f"{NOT_RECORDED}: it has no training_report.json (the trainer that wrote this run predates it)"
    sections = [
        _summary(facts),
        _section("Stage timeline", _figure(
            "stage-timeline", plots.stage_timeline(facts),
            "Each stage from its first ledger record to the next stage's (or the run's end); a tick per "
            "record, dotted lines at the hand-offs.", NOT_RECORDED), _stage_table(facts)),
        _section("Data", _figure(
            "data-counts", plots.data_counts(facts),
            "Rows read, kept and split, beside the run that served when this one's data was checked"
            + (f" ({facts.previous.run_id})." if facts.previous else " (none had served yet)."),
            f"{NOT_RECORDED}: the run did not reach training"), _data_check(facts)),
        _section("Learning curves", _figure(
            "learning-curves", plots.learning_curves(report),
            "Train and eval loss at each evaluation, against the training examples seen.", no_report)),
        _section("Predicted against actual", _figure(
            "predicted-vs-actual", plots.predicted_vs_actual(report),
            "A sample of eval rows: predicted weight against the true one; on the line y = x a prediction "
            "is exact.", no_report)),
        _section("Residuals", _figure(
            "residuals", plots.residuals(report),
            "Predicted minus actual on the sample: mean ± sd per gestation week (left), and per plurality "
            "(right, box plots).", no_report)),
        _section("Candidate against champion", _figure(
            "slice-rmse", plots.slice_rmse(facts.comparison, report),
            "RMSE overall and per slice on the candidate's own eval rows, for the candidate and the champion "
            "(comparison.json, the gate's input); the dashed line predicts the mean." + _champion_note(facts),
            f"{NOT_RECORDED}: it has no comparison.json (training did not finish)"), _gate(facts)),
        _section("Releases", _figure(
            "release-timeline", plots.release_timeline(facts.releases),
            "The endpoint's traffic split at each change this run's model took part in (releases/).",
            "no traffic change for this run: its model never went on the endpoint"), _release_table(facts)),
    ]
    title = f"mlrelay run {facts.run_id}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # else a browser asks the server for /favicon.ico
        f"<title>{_e(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", nav,
        *sections,
        f'<p><small>Report made {format_rfc3339(datetime.now().astimezone(), digits=0)} from gs://'
        f'{_e(facts.bucket)}/runs/{_e(facts.run_id)}/ by mlrelay report.</small></p>',
        "</body>", "</html>", ""])


# --- sections -------------------------------------------------------------------------------------


def _summary(facts: RunFacts) -> str:
    status = facts.status
    ended = next((e.time for e in facts.records if e.terminal), None)
    took = ((ended or status.updated) - status.started).total_seconds()
    decision = facts.decision
    metrics = facts.metrics
    deploying = facts.record("deploying")
    rows = [
        ("state", f'<span class="state {_e(status.state.value)}">{_e(status.state.value)}</span>'
                  + ("" if status.terminal else " (still running)")),
        ("origin", _e(origin_text(facts.origin))),
        ("requested", _e(_when(status.started))),
        ("duration", f"{took:.1f} s" + ("" if ended else " so far")),
        ("eval RMSE", "-" if facts.rmse is None else f"{facts.rmse:.4f} lb"
         + (f" (predicting the mean: {metrics['baseline_rmse']:.4f})"
            if isinstance(metrics.get("baseline_rmse"), (int, float)) else "")),
        ("model version", _e(str(deploying.details.get("model_version"))) if deploying else "-"),
        ("jobs", ", ".join(f"{_e(k)} <code>{_e(v)}</code>" for k, v in status.job_ids.items()) or "-"),
    ]
    parts = [f"<h1>Run <code>{_e(facts.run_id)}</code></h1>", _table(None, rows, raw=True)]
    if decision:
        ok = status.state.value in ("deployed",) or (not status.terminal)
        parts.append(f'<p class="reason{" ok" if ok else ""}"><strong>'
                     f'{"Decision" if ok else "Why it " + status.state.value.replace("-", " ")}:</strong> '
                     f"{_e(decision)}</p>")
    elif status.state.value == "failed":
        parts.append('<p class="reason"><strong>Why it failed:</strong> the ledger gives no reason</p>')
    for anomaly in status.anomalies:
        parts.append(f'<p class="reason">ledger anomaly: {_e(anomaly)}</p>')
    for note in facts.notes:
        parts.append(f'<p class="reason">{_e(note)}</p>')
    if facts.request is not None:
        parts.append("<details><summary>request.json</summary><pre>"
                     f"{_e(json.dumps(facts.request.get('request', facts.request), indent=2))}</pre></details>")
    return "\n".join(parts)


def _stage_table(facts: RunFacts) -> str:
    rows = []
    for stage, timing in facts.status.stages.items():
        seconds = timing.seconds
        rows.append((stage, _clock(timing.start), _clock(timing.end), "-" if seconds is None else f"{seconds:.2f}"))
    records = [(_clock(e.time), e.stage, e.state.value, ", ".join(f"{k}={v}" for k, v in e.job_ids.items()))
               for e in facts.records]
    return (_table(("stage", "start", "end", "seconds"), rows)
            + "<details><summary>ledger records</summary>"
            + _table(("time", "stage", "state", "jobs"), records) + "</details>")


def _data_check(facts: RunFacts) -> str:
    check = (facts.counts or {}).get("data_check")
    if not check:
        return ""
    return _decision("Data check", check.get("passed"), check.get("reason", ""), check.get("checks"))


def _gate(facts: RunFacts) -> str:
    gate = next((e.details["gate"] for e in facts.records if isinstance(e.details.get("gate"), dict)), None)
    if gate is None:
        return ""
    return _decision("Gate", gate.get("blessed"), gate.get("reason", ""), gate.get("checks"))


def _decision(title: str, passed, reason, checks) -> str:
    """A decision of the release policy: its verdict and reason, then a row per check behind it."""
    rows = [(c.get("name", "?"), _fmt(c.get("value")), _fmt(c.get("bound")), _passed(c.get("passed")))
            for c in checks or [] if isinstance(c, dict)]
    return (f"<p>{title}: {_passed(passed)} {_e(str(reason))}</p>"
            + (_table(("check", "value", "bound", ""), rows, raw_last=True) if rows else ""))


def _champion_note(facts: RunFacts) -> str:
    champion = (facts.comparison or {}).get("champion")
    if facts.comparison is None:
        return ""
    if champion is None:
        return " There was no champion to compare with."
    if isinstance(champion, dict) and champion.get("error"):
        return f" The champion could not be scored: {champion['error']}"
    return ""


def _release_table(facts: RunFacts) -> str:
    if not facts.releases:
        return ""
    rows = [(_when(release_time(r)), r.get("action", "?"), str(r.get("model_version", "?")).rsplit("/", 1)[-1],
             f"{split_text(r.get('from'))} → {split_text(r.get('to'))}", r.get("by", "?"), r.get("why", ""))
            for r in facts.releases]
    return _table(("time", "action", "version", "traffic", "by", "why"), rows)


# --- pieces ---------------------------------------------------------------------------------------


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>\n" + "\n".join(part for part in parts if part) + "\n</section>"


def _figure(name: str, svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return (f'<figure class="plot missing" data-plot="{name}"><p class="not-recorded">{_e(missing)}</p>'
                f"<figcaption>{_e(caption)}</figcaption></figure>")
    return f'<figure class="plot" data-plot="{name}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _table(header: Iterable[str] | None, rows: Iterable[Iterable[Any]], raw: bool = False,
           raw_last: bool = False) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = list(row)
        if raw:  # (label, html) pairs
            out.append(f"<tr><th>{_e(cells[0])}</th><td>{cells[1]}</td></tr>")
            continue
        rendered = [_e(str(c)) for c in cells[:-1]] + [cells[-1] if raw_last else _e(str(cells[-1]))]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in rendered) + "</tr>")
    out.append("</table>")
    return "".join(out)


def origin_text(origin: Mapping[str, Any]) -> str:
    kind = origin.get("kind", "?") if origin else "?"
    where = origin.get("object") or origin.get("topic") or origin.get("schedule") or ""
    message = f" message {origin['messageId']}" if origin.get("messageId") else ""
    return f"{kind} {where}{message}".strip()


def split_text(split: Mapping[str, Any] | None) -> str:
    if not split:
        return "(nothing)"
    return " ".join(f"{model}:{percent}%" for model, percent in sorted(split.items()))


def _passed(value: Any) -> str:
    if value is True:
        return '<span class="passed">passed</span>'
    if value is False:
        return '<span class="failed-check">failed</span>'
    return "-"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "-" if value is None else str(value)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%H:%M:%S.%f")[:-3]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
