"""The console's own pages: the runs, the endpoint's traffic now and its serving history, a 404.

A run's page is the run report itself (mlrelay.report), with a link back; these pages use its
style sheet and Content-Security-Policy, so the console serves nothing that is not in the page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from events.ledger import LedgerEvent, RunStatus, fold
from functions.run_store import RunStore
from mlrelay.report.facts import current_split, decision_of, release_time, rmse_of
from mlrelay.report.page import CSP, STYLE, origin_text, split_text

MAX_RUNS = 500  # the newest; each listed run costs a read of its metrics.json


@dataclass(frozen=True)
class RunRow:
    """A line of the runs table."""

    status: RunStatus
    origin: Mapping[str, Any]
    rmse: float | None
    decision: str | None

    @property
    def seconds(self) -> float:
        return (self.status.updated - self.status.started).total_seconds()


def run_rows(runs: RunStore) -> list[RunRow]:
    """Every run of the bucket (the newest MAX_RUNS), newest first."""
    rows = []
    ledgers = runs.ledger()
    for run_id in sorted(ledgers, reverse=True)[:MAX_RUNS]:
        records = sorted(ledgers[run_id], key=lambda event: event.time)
        status = fold(records)
        rows.append(RunRow(status, _origin(records), rmse_of(runs.read_metrics(run_id)), decision_of(records, status)))
    return sorted(rows, key=lambda row: row.status.started, reverse=True)


def _origin(records: list[LedgerEvent]) -> Mapping[str, Any]:
    """The first record keeps where the request came from (request.json too, but one read fewer)."""
    for event in records:
        if isinstance(event.details.get("origin"), dict):
            return event.details["origin"]
    return {}


def runs_page(runs: RunStore, bucket_label: str, dead_letters: list[dict] | None = None) -> str:
    rows = run_rows(runs)
    releases = runs.releases()
    split = current_split(releases)
    body = [f"<h1>mlrelay console</h1><p>Runs of <code>{_e(bucket_label)}</code>, newest first "
            f"({len(rows)}). Read-only: it writes nothing to the bucket.</p>",
            "<h2>Endpoint</h2>",
            f'<p id="traffic">Traffic now: <strong>{_e(split_text(split))}</strong>'
            + (f" (since {_e(_when(release_time(releases[-1])))}, {_e(releases[-1].get('action', '?'))} of "
               f"{_e(str(releases[-1].get('model_version', '?')).rsplit('/', 1)[-1])})" if releases else
               " (no model has been deployed yet)") + "</p>",
            "<h2>Runs</h2>", _runs_table(rows),
            "<h2>Serving history</h2>", _history_table(releases),
            dead_letters_section(dead_letters)]
    return page("mlrelay console", body)


def dead_letters_section(letters: list[dict] | None) -> str:
    """The dead-letter queue, when the console can read it without changing it (the local cloud)."""
    if letters is None:
        return ("<p><small>Dead letters of a deployed chain are not listed here: a pull leases them, which "
                "is not read-only; use <code>mlrelay dead-letters list --project P</code>.</small></p>")
    if not letters:
        return '<h2>Dead letters</h2><p id="dead-letters">None: every event was delivered.</p>'
    out = ['<h2>Dead letters</h2><table id="dead-letters"><tr><th>id</th><th>function</th><th>attempts</th>'
           '<th>published</th><th>last error</th><th>event</th></tr>']
    for letter in letters:
        event = json.dumps(letter["event"], sort_keys=True)
        out.append(f"<tr><td>{_e(letter['id'])}</td><td>{_e(letter['function'])}</td>"
                   f"<td>{_e(str(letter['attempts'] or '?'))}</td><td>{_e(letter['publish_time'])}</td>"
                   f"<td>{_e(letter['last_error'] or 'not kept')}</td><td><code>{_e(event[:300])}</code></td></tr>")
    out.append("</table><p><small>Replay one with <code>mlrelay dead-letters replay ID</code>.</small></p>")
    return "".join(out)


def _runs_table(rows: list[RunRow]) -> str:
    if not rows:
        return "<p>No runs yet.</p>"
    out = ['<table id="runs"><tr><th>run</th><th>state</th><th>origin</th><th>started (UTC)</th>'
           '<th>duration</th><th>RMSE</th><th>decision</th></tr>']
    for row in rows:
        status = row.status
        out.append(
            f'<tr data-run="{_e(status.run_id)}"><td><a href="/runs/{_e(status.run_id)}">{_e(status.run_id)}</a></td>'
            f'<td><span class="state {_e(status.state.value)}">{_e(status.state.value)}</span></td>'
            f"<td>{_e(origin_text(row.origin))}</td><td>{status.started:%Y-%m-%d %H:%M:%S}</td>"
            f'<td class="num">{row.seconds:.1f} s</td>'
            f'<td class="num">{"-" if row.rmse is None else f"{row.rmse:.3f}"}</td>'
            f"<td>{_e(row.decision or '')}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _history_table(releases: list[dict[str, Any]]) -> str:
    if not releases:
        return "<p>No traffic change yet.</p>"
    out = ['<table id="history"><tr><th>time (UTC)</th><th>action</th><th>version</th><th>traffic</th>'
           "<th>run</th><th>by</th><th>why</th></tr>"]
    for release in reversed(releases):
        run_id = str(release.get("run_id", "?"))
        link = f'<a href="/runs/{_e(run_id)}">{_e(run_id)}</a>' if run_id.startswith("run-") else _e(run_id)
        out.append(f"<tr><td>{_e(_when(release_time(release)))}</td><td>{_e(release.get('action', '?'))}</td>"
                   f"<td>{_e(str(release.get('model_version', '?')).rsplit('/', 1)[-1])}</td>"
                   f"<td>{_e(split_text(release.get('from')))} → {_e(split_text(release.get('to')))}</td>"
                   f"<td>{link}</td><td>{_e(release.get('by', '?'))}</td><td>{_e(release.get('why', ''))}</td></tr>")
    out.append("</table>")
    return "".join(out)


def not_found_page(what: str) -> str:
    return page("not found", [NAV, f"<h1>Not found</h1><p>{_e(what)}</p>"])


def error_page(status: int, what: str) -> str:
    return page(str(status), [NAV, f"<h1>{status}</h1><p>{_e(what)}</p>"])


NAV = '<nav><a href="/">← all runs</a></nav>'


def page(title: str, body: Iterable[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
                      '<link rel="icon" href="data:,">', f"<title>{_e(title)}</title>",
                      f"<style>{STYLE}</style>", "</head>", "<body>", *body, "</body>", "</html>", ""])


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _e(text: Any) -> str:
    import html

    return html.escape(str(text), quote=True)
