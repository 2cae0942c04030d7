"""The text `mlrelay status RUN` prints: the run view (mlrelay.run_view) in readable sections."""
from __future__ import annotations

from typing import Any, Mapping



def format_split(split: Any) -> str:
    """{"1": 90, "2": 10} as '1:90% 2:10%'; Vertex's "0" (the model a deploy request brings) as 'new'."""
    if not isinstance(split, Mapping) or not split:
        return "(nothing)"
    return " ".join(f"{'new' if model == '0' else model}:{percent}%" for model, percent in sorted(split.items()))


def _clock(text: str | None) -> str:
    """HH:MM:SS.mmm of an RFC 3339 time (the date is in the header)."""
    return "-" if not text else text[11:23]


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.2f} s" if value < 120 else f"{int(value) // 60} min {value % 60:02.0f} s"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-" if value is None else str(value)


def _figure(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _bound(bound: Any) -> str:
    if isinstance(bound, (list, tuple)) and len(bound) == 2:
        return f"{_figure(bound[0])}..{_figure(bound[1])}"
    return _figure(bound)


def _checks(checks: Any) -> list[str]:
    lines = []
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, Mapping):
            continue
        mark = "ok" if check.get("passed") else "NO"
        lines.append(f"    {mark}  {check.get('name', '?'):<44} {_figure(check.get('value')):>10}"
                     f"  (bound {_bound(check.get('bound'))})")
    return lines


def format_run_view(view: Mapping[str, Any]) -> str:
    """Sections: the run and its outcome, stages, rows, data check, evaluation, gate, release, model."""
    lines = [f"run {view['run_id']}: {view['state']}"]
    if view.get("reason") and view["state"] in ("failed", "rejected", "rolled-back", "queued"):
        lines.append(f"  reason: {view['reason']}")
    origin = view.get("origin") or {}
    request = view.get("request") or {}
    if origin or request:
        where = origin.get("object") or origin.get("subscription") or origin.get("kind") or "?"
        asked = ", ".join(f"{key}={value}" for key, value in sorted(request.items()))
        lines.append(f"  from {origin.get('kind', 'request')} {where}" if where != origin.get("kind")
                     else f"  from {where}")
        if asked:
            lines.append(f"  request: {asked}")
    if view.get("started"):
        lines.append(f"  started {view['started'][:19].replace('T', ' ')}Z, last record "
                     f"{_clock(view.get('updated'))} ({view.get('records', 0)} records)")

    stages = view.get("stages") or {}
    if stages:
        lines.append("stages:")
        jobs = view.get("job_ids") or {}
        for name, stage in stages.items():
            job = f"  job {jobs[name]}" if name in jobs else ""
            lines.append(f"  {name:<11} {stage.get('state') or '-':<14} {_clock(stage.get('start'))} → "
                         f"{_clock(stage.get('end')):<12} {_seconds(stage.get('seconds')):>10}{job}")
    progress = view.get("training_progress")
    if progress:
        lines.append("training: " + progress_text(progress))
    for anomaly in view.get("anomalies") or []:
        lines.append(f"  ! {anomaly}")

    rows = view.get("rows") or {}
    if rows:
        splits = rows.get("splits") or {}
        text = ", ".join(f"{label} {_count(rows[key])}" for key, label in
                         (("read", "read"), ("dropped", "dropped"), ("valid", "valid")) if key in rows)
        if splits:
            text += ("; " if text else "") + ", ".join(f"{name} {_count(n)}" for name, n in sorted(
                splits.items(), key=lambda item: item[0] != "train"))
        lines.append(f"rows: {text}")

    check = view.get("data_check")
    if isinstance(check, Mapping):
        verdict = "passed" if check.get("passed") else "REFUSED"
        lines.append(f"data check: {verdict}: {check['reason']}" if check.get("reason") else f"data check: {verdict}")
        lines.extend(_checks(check.get("checks")))

    figures = view.get("eval") or {}
    if figures:
        lines.extend(_eval_lines(figures))

    gate = view.get("gate")
    if isinstance(gate, Mapping):
        verdict = "blessed" if gate.get("blessed") else "rejected"
        reason = str(gate.get("reason") or verdict)
        said = reason.startswith(verdict) or reason.startswith("not blessed")
        lines.append(f"gate: {reason if said else f'{verdict}: {reason}'}")
        lines.extend(_checks(gate.get("checks")))

    release = view.get("release") or {}
    if release:
        lines.extend(_release_lines(release))
    if view.get("model_version") or view.get("traffic_split"):
        lines.append(f"model version {view.get('model_version', '-')}; endpoint traffic "
                     f"{format_split(view.get('traffic_split'))}")
    return "\n".join(lines)


def progress_text(progress: Mapping[str, Any]) -> str:
    """'12,288 of 466,944 examples (3 %), evaluation 1 of 6, last eval RMSE 1.0380'."""
    parts = [f"{_count(progress.get('examples_seen'))}"
             + (f" of {_count(progress['examples_total'])}" if progress.get("examples_total") else "")
             + " examples"
             + (f" ({progress['fraction']:.0%})" if isinstance(progress.get("fraction"), float) else "")]
    if progress.get("evaluations_total"):
        parts.append(f"evaluation {progress.get('evaluations_done', 0)} of {progress['evaluations_total']}")
    if isinstance(progress.get("last_eval_rmse"), float):
        parts.append(f"last eval RMSE {progress['last_eval_rmse']:.4f}")
    return ", ".join(parts)


def _eval_lines(figures: Mapping[str, Any]) -> list[str]:
    lines = ["evaluation" + (f" ({_count(figures['rows'])} eval rows):" if "rows" in figures else ":")]
    rmse = figures.get("rmse")
    if rmse is not None:
        lines.append(f"  candidate RMSE       {rmse:.4f} lb")
    champion = figures.get("champion") or {}
    if champion.get("rmse") is not None:
        change = f" (candidate {100 * (rmse / champion['rmse'] - 1):+.1f} %)" if rmse and champion["rmse"] else ""
        version = f"  [{str(champion['version']).rsplit('/', 1)[-1]}]" if champion.get("version") else ""
        lines.append(f"  champion RMSE        {champion['rmse']:.4f} lb{change}{version}")
    elif champion.get("error"):
        lines.append(f"  champion not scored: {champion['error']}")
    if figures.get("baseline_rmse") is not None:
        lines.append(f"  predicting the mean  {figures['baseline_rmse']:.4f} lb")
    if figures.get("bayes_floor") is not None:
        ratio = f" (candidate {rmse / figures['bayes_floor']:.3f} × floor)" if rmse else ""
        lines.append(f"  Bayes floor          {figures['bayes_floor']:.4f} lb{ratio}")
    if figures.get("best_possible_rmse") is not None:
        ratio = f" (candidate {rmse / figures['best_possible_rmse']:.4f} ×)" if rmse else ""
        lines.append(f"  best possible        {figures['best_possible_rmse']:.4f} lb on these rows{ratio}")
    if figures.get("train_examples_seen") is not None:
        lines.append(f"  trained on {_count(int(figures['train_examples_seen']))} examples"
                     + (f" in {_seconds(figures['train_seconds'])}" if "train_seconds" in figures else ""))
    return lines


def _release_lines(release: Mapping[str, Any]) -> list[str]:
    lines = []
    rollout = release.get("rollout")
    if rollout == "first":
        lines.append("release: the endpoint's first model, straight to 100 % of traffic")
    elif rollout:
        lines.append(f"release: {rollout}" + (f", baking until {release['bake_ends'][:19].replace('T', ' ')}"
                                              if release.get("bake_ends") else ""))
    else:
        lines.append("release:")
    bake = release.get("bake")
    if isinstance(bake, Mapping):
        verdict = "promote" if bake.get("promote") else "roll back"
        reason = str(bake.get("reason") or verdict)
        lines.append(f"  bake verdict: {reason if reason.startswith(verdict) else f'{verdict}: {reason}'}")
        lines.extend(_checks(bake.get("checks")))
    figures = release.get("figures")
    if isinstance(figures, Mapping):
        for model, served in sorted(figures.items()):
            if isinstance(served, Mapping):
                p99 = served.get("latency_p99_ms")
                lines.append(f"  deployed model {model}: {_count(served.get('requests'))} requests, "
                             f"{_count(served.get('errors'))} errors, p99 "
                             f"{'-' if p99 is None else f'{p99:.1f} ms'}")
    for change in release.get("changes") or []:
        lines.append(f"  {str(change.get('time', '?'))[:19].replace('T', ' ')}  {change.get('action', '?'):<10} "
                     f"{format_split(change.get('from'))} → {format_split(change.get('to'))}")
    return lines
