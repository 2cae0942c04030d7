"""`mlrelay demo`: the whole chain on one machine, from an empty directory to a deployed model.

It makes the sample data when it is missing, starts the local cloud, uploads a trigger file, follows
the run as its ledger grows (file-system events, not polling the chain) and shows its progress as
`mlrelay status --follow` does (mlrelay.progress: a redrawn table on a terminal, a line per change
elsewhere), asks the endpoint for a few predictions, prints a summary and shuts everything down.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from watchdog.events import DirCreatedEvent, DirMovedEvent, FileCreatedEvent, FileMovedEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from events.ledger import LedgerEvent, RunStatus
from events.log_entries import JobKind, classify
from events.timestamps import parse_rfc3339
from functions.local_adapters import LocalStorage, is_staging_name
from functions.platform import NotFound
from functions.run_store import RUNS_PREFIX, RunStore, ledger_prefix, manifest_name, run_prefix
from mlrelay.progress import Follower, LiveDisplay, PlainDisplay
from mlrelay.run_view import run_records

SAMPLE_INSTANCES = [
    {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.0},
    {"is_male": "False", "mother_age": 32.0, "plurality": "Twins(2)", "gestation_weeks": 36.0},
    {"is_male": "Unknown", "mother_age": 29.0, "plurality": "Multiple(2+)", "gestation_weeks": 34.0},
    {"is_male": "True", "mother_age": 41.0, "plurality": "Single(1)", "gestation_weeks": 30.0},
]


class _Changed(FileSystemEventHandler):
    """Sets ``flag`` when an object or directory appears: a file put in place, never one being read.

    (Reading the ledger opens its files; waking on that would wake the reader on its own reads.)
    """

    EVENTS = [FileCreatedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]

    def __init__(self) -> None:
        self.flag = threading.Event()

    def on_any_event(self, event) -> None:
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if not is_staging_name(path):
            self.flag.set()


def ensure_sample(bucket_dir: Path, rows: int, seed: int = 0) -> dict:
    """The sample under data/ of the bucket, made when absent or of another size."""
    from natality_sample import write_sample

    data_dir = bucket_dir / "data"
    sidecar = data_dir / "_SAMPLE.json"
    if sidecar.exists() and (data_dir / "natality.parquet").exists():
        info = json.loads(sidecar.read_text())
        if info.get("rows") == rows and info.get("seed") == seed:
            return info
    return write_sample(data_dir, rows=rows, seed=seed)


class _LedgerWatch:
    """File-system events that may mean a run's ledger changed, watching as little as it can.

    Until the run is known: runs/ and each run directory in it, not their subdirectories (the
    run's request.json is about to appear in one of them). Then only runs/<id>/events/, where
    the ledger records land (runs/<id>/ until that exists), so the run's data, its training
    output and other runs wake nobody. Every watch is on one directory; none is recursive.
    """

    def __init__(self, bucket_dir: Path):
        self.changed = _Changed()
        self._bucket_dir = bucket_dir
        self._runs_dir = bucket_dir / RUNS_PREFIX
        self._observer = InotifyObserver()
        self._watches: dict[Path, object] = {}
        self._narrowed = False
        self._observer.start()
        self._watch(self._runs_dir)
        self.watch_new_runs()

    def _watch(self, directory: Path) -> None:
        if directory not in self._watches:
            try:
                self._watches[directory] = self._observer.schedule(self.changed, str(directory), recursive=False,
                                                                 event_filter=_Changed.EVENTS)
            except OSError:  # gone already: nothing to watch
                return
            self.changed.flag.set()  # read once more: something may have landed before the watch

    def watch_new_runs(self) -> None:
        """Watch the run directories that appeared since the last call (before the run is known)."""
        if self._narrowed:
            return
        for entry in os.scandir(self._runs_dir):
            if entry.is_dir():
                self._watch(Path(entry.path))

    def narrow_to(self, run_id: str) -> None:
        events_dir = self._bucket_dir / ledger_prefix(run_id)
        target = events_dir if events_dir.is_dir() else self._bucket_dir / run_prefix(run_id)
        if self._narrowed and target in self._watches:
            return
        for directory, watch in list(self._watches.items()):
            if directory != target:
                self._observer.unschedule(watch)
                del self._watches[directory]
        self._narrowed = True
        self._watch(target)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


def follow_run(bucket_dir: Path, runs: RunStore, trigger_uri: str, timeout_s: float,
               show) -> RunStatus | None:
    """Wait for the trigger's run to end, redrawing progress whenever its ledger changes."""
    (bucket_dir / RUNS_PREFIX).mkdir(parents=True, exist_ok=True)
    watch = _LedgerWatch(bucket_dir)
    deadline = time.monotonic() + timeout_s
    run_id = None
    status = None
    others: set[str] = set()  # runs already found to be another trigger's
    try:
        while time.monotonic() < deadline:
            watch.changed.flag.clear()
            run_id = run_id or runs.find_run_for_trigger(trigger_uri, others)
            if run_id is None:
                watch.watch_new_runs()
            else:
                watch.narrow_to(run_id)
                statuses = runs.statuses(run_id)
                status = statuses[0] if statuses else None
            show(run_id, status)
            if status is not None and status.terminal:
                return status
            # Woken by the ledger's next record; the timeout only refreshes the elapsed clock.
            watch.changed.flag.wait(timeout=1.0)
    finally:
        watch.stop()
    return status


class PredictRefused(ValueError):
    """The endpoint refused the request: its HTTP status and Google's error message, in one line."""


def predict(endpoint_url: str, instances: list[dict]) -> dict:
    request = urllib.request.Request(f"{endpoint_url}:predict", data=json.dumps({"instances": instances}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the endpoint's own reason, not just "HTTP Error 400"
        body = exc.read()
        try:
            error = json.loads(body)["error"]
            detail = f"{error.get('status', exc.code)}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = body[:300].decode("utf-8", "replace") or str(exc.reason)
        raise PredictRefused(f"the endpoint answered {exc.code} {' '.join(detail.split())}") from None
    except urllib.error.URLError as exc:  # nothing answered: say where, and why
        raise PredictRefused(f"the endpoint at {endpoint_url} did not answer: {exc.reason}") from None


def send_predictions(endpoint_url: str, count: int) -> list[int]:
    """``count`` predictions of one instance each (SAMPLE_INSTANCES in turn): the HTTP status of each.

    For drills and tests that load an endpoint and look at what it answered, errors included.
    """
    statuses = []
    for index in range(count):
        body = json.dumps({"instances": [SAMPLE_INSTANCES[index % len(SAMPLE_INSTANCES)]]}).encode()
        request = urllib.request.Request(f"{endpoint_url}:predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                statuses.append(answer.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    return statuses


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, tz=timezone.utc)
    except FileNotFoundError:
        return None


def state_times(events: list[LedgerEvent]) -> dict[str, datetime]:
    """The first ledger record of each state."""
    firsts: dict[str, datetime] = {}
    for event in sorted(events, key=lambda e: e.time):
        firsts.setdefault(event.state.value, event.time)
    return firsts


def deploy_operation(events: list[LedgerEvent]) -> str | None:
    """The deploy operation the run started (its "deploying" record names it)."""
    return next((e.details.get("operation") for e in events if e.state.value == "deploying"), None)


def deploy_decision(events: list[LedgerEvent]) -> datetime | None:
    """When the deploy stage decided: its first record (deploying, or the release refused)."""
    return next((e.time for e in sorted(events, key=lambda e: e.time) if e.stage == "deploy"), None)


def handoff_latencies(root: Path, bucket_dir: Path, status: RunStatus, events: list[LedgerEvent],
                      trigger_path: Path) -> dict[str, float | None]:
    """Milliseconds from each event's cause existing to the next stage having launched its work."""
    records = state_times(events)
    operation = deploy_operation(events)
    entries = []
    log_file = root / "logs" / "entries.jsonl"
    if log_file.exists():
        entries = [json.loads(line) for line in log_file.read_text().splitlines() if line]
    train_job = status.job_ids.get("train")
    train_end = deploy_end = None
    for entry in entries:
        terminal = classify(entry)
        if terminal is None:
            continue
        if terminal.kind == JobKind.VERTEX_CUSTOM_JOB and terminal.job_id == train_job:
            train_end = parse_rfc3339(terminal.timestamp)
        elif (terminal.kind == JobKind.VERTEX_DEPLOY_MODEL and operation
              and terminal.job_id.rsplit("/", 1)[-1] == operation.rsplit("/", 1)[-1]):
            deploy_end = parse_rfc3339(terminal.timestamp)  # this run's own deploy, not another's
    causes = {
        "trigger_to_preprocess": (_mtime(trigger_path), records.get("preprocessing")),
        "manifest_to_training": (_mtime(bucket_dir / manifest_name(status.run_id)),
                                 records.get("training")),
        "training_to_deploy": (train_end, deploy_decision(events)),
        # a canary's deploy ends in its bake (its promotion waits out the bake, by design)
        "deploy_to_deployed": (deploy_end, records.get("baking") or records.get("deployed")),
    }
    return {name: (round((after - before).total_seconds() * 1000, 1) if before and after else None)
            for name, (before, after) in causes.items()}


def run_demo(root: Path, rows: int, as_json: bool, timeout_s: float = 900.0, request: dict | None = None) -> int:
    from local_cloud.cloud import LocalCloud, LocalCloudSettings

    out = sys.stderr if as_json else sys.stdout
    tty = out.isatty()
    began = time.monotonic()
    settings = LocalCloudSettings(root=root)
    bucket_dir = Path(root).resolve() / "buckets" / settings.config.bucket
    print(f"mlrelay demo: local state in {Path(root).resolve()}", file=out)
    t0 = time.monotonic()
    sample = ensure_sample(bucket_dir, rows)
    sample_s = time.monotonic() - t0
    print(f"  sample: {sample['rows']:,} rows at gs://{settings.config.bucket}/data/natality.parquet "
          f"({sample_s:.1f} s)", file=out)
    cloud = LocalCloud(settings)
    summary: dict = {}
    try:
        cloud.start()
        print(f"  local cloud ready in {cloud.ready_s:.2f} s (functions, broker, jobs, endpoint)", file=out)
        runs = RunStore(LocalStorage(bucket_dir), settings.config.bucket)
        body = {"source": "data/natality.parquet", "limit": rows, **(request or {})}
        trigger_name = f"triggers/demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json"
        runs.storage.write(trigger_name, json.dumps(body).encode())
        trigger_uri = f"gs://{settings.config.bucket}/{trigger_name}"
        print(f"  uploaded {trigger_uri}", file=out)
        display = LiveDisplay(out, began=began) if tty else PlainDisplay(out, prefix="  ", began=began)
        follower = Follower(runs, display)

        def show(run_id, status) -> None:
            if run_id is None:
                display.waiting("waiting for the run to start")
            else:
                follower.update(run_id)

        try:
            status = follow_run(bucket_dir, runs, trigger_uri, timeout_s, show)
        finally:
            display.close()
        summary = summarize(cloud, runs, bucket_dir, status, trigger_name, rows)
        summary["wall_s"] = round(time.monotonic() - began, 2)
        summary["sample_s"] = round(sample_s, 2)
        summary["local_cloud_ready_s"] = round(cloud.ready_s or 0, 3)
    finally:
        cloud.stop()
    if summary.get("run_id"):
        summary["report"] = write_report(runs, summary["run_id"], Path(root).resolve() / "reports")
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary), file=out)
    return 0 if summary.get("state") == "deployed" else 1


def write_report(runs: RunStore, run_id: str, directory: Path) -> str:
    """The run's report (mlrelay report), written beside the local cloud's state: its path.

    After the cloud has stopped, so that drawing the plots (matplotlib) takes nothing from the run.
    """
    from mlrelay.report import render_report

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run_id}.html"
    path.write_text(render_report(runs, run_id), encoding="utf-8")
    return str(path)


def summarize(cloud, runs: RunStore, bucket_dir: Path, status: RunStatus | None, trigger_name: str,
              rows: int) -> dict:
    if status is None:
        return {"run_id": None, "state": "timeout", "stages": {}, "handoffs_ms": {}, "rows": None,
                "eval_rmse": None, "bayes_floor": None, "best_possible_rmse": None, "model_version": None,
                "endpoint": cloud.endpoint_url, "predictions": []}
    run_id = status.run_id
    events = run_records(runs, run_id)
    manifest = _manifest(runs, run_id)
    metrics = runs.read_metrics(run_id)
    model_version = None
    for event in events:
        model_version = event.details.get("model_version", model_version)
    predictions: dict = {}
    if status.state.value == "deployed":
        predictions = predict(cloud.endpoint_url, SAMPLE_INSTANCES)
    return {
        "run_id": run_id,
        "state": status.state.value,
        "reason": status.reason,
        "stages": {name: {"start": t.start, "end": t.end, "seconds": t.seconds} for name, t in status.stages.items()},
        "handoffs_ms": handoff_latencies(cloud.root, bucket_dir, status, events, bucket_dir / trigger_name),
        "rows": {
            "sample": rows,
            "input_read": (manifest.get("input") or {}).get("rows_read"),
            "dropped": (manifest.get("input") or {}).get("rows_dropped"),
            "train": (manifest.get("splits") or {}).get("train", {}).get("rows"),
            "eval": (manifest.get("splits") or {}).get("eval", {}).get("rows"),
        },
        "eval_rmse": metrics.get("eval_rmse"),
        "bayes_floor": metrics.get("bayes_floor"),
        "best_possible_rmse": metrics.get("best_possible_rmse"),
        "baseline_rmse": metrics.get("baseline_rmse"),
        "model_version": model_version,
        "endpoint": cloud.endpoint_url,
        "predictions": [
            {"instance": inst, "weight_pounds": pred}
            for inst, pred in zip(SAMPLE_INSTANCES, predictions.get("predictions", []))
        ],
        "deployed_model_id": predictions.get("deployedModelId"),
        "gate": _detail(events, "gate"),
        "release": _release(events),
    }


def _detail(events: list[LedgerEvent], key: str):
    """The last value a run's ledger records for `key` (None when no record has it)."""
    found = None
    for event in events:
        found = event.details.get(key, found)
    return found


def _release(events: list[LedgerEvent]) -> dict | None:
    """How the model went into service, or why not: the rollout, the bake's verdict, the split."""
    rollout = _detail(events, "rollout")
    if rollout is None:
        return None
    return {"rollout": rollout, "bake": _detail(events, "bake"), "traffic_split": _detail(events, "traffic_split"),
            "bake_ends": _detail(events, "bake_ends")}


def _manifest(runs: RunStore, run_id: str) -> dict:
    """The run's manifest, or {} when the run ended before it had a readable one."""
    try:
        manifest = runs.read_manifest(run_id)
    except (NotFound, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def format_summary(summary: dict) -> str:
    lines = ["", f"run {summary['run_id']}: {summary['state']}" +
             (f" ({summary['reason']})" if summary.get("reason") else "")]
    for name, stage in summary.get("stages", {}).items():
        took = "" if stage["seconds"] is None else f"{stage['seconds']:7.2f} s"
        lines.append(f"  {name:<11} {stage['start']:%H:%M:%S.%f}"[:-3] + f"  {took}")
    lines.append("hand-offs (cause exists → next stage launched):")
    for name, ms in summary.get("handoffs_ms", {}).items():
        lines.append(f"  {name:<24} {'-' if ms is None else f'{ms:8.1f} ms'}")
    rows = summary.get("rows") or {}
    if rows:
        lines.append(f"rows: sample {rows.get('sample')}, read {rows.get('input_read')}, dropped "
                     f"{rows.get('dropped')}, train {rows.get('train')}, eval {rows.get('eval')}")
    if summary.get("eval_rmse") is not None:
        floor = summary.get("bayes_floor")
        ratio = f" ({summary['eval_rmse'] / floor:.3f} × floor)" if floor else ""
        floor_text = "unknown" if floor is None else f"{floor:.4f} lb"
        best = summary.get("best_possible_rmse")
        best_text = "" if not best else (f"; the best possible on these rows {best:.4f} lb "
                                         f"({summary['eval_rmse'] / best:.4f} × it)")
        baseline = summary.get("baseline_rmse")
        baseline_text = "" if baseline is None else f"; predicting the mean {baseline:.4f} lb"
        lines.append(f"eval RMSE {summary['eval_rmse']:.4f} lb; Bayes floor {floor_text}{ratio}{best_text}"
                     f"{baseline_text}")
    gate = summary.get("gate")
    if gate:
        lines.append(f"gate: {gate['reason']}")
        for check in gate.get("checks", []):
            lines.append(f"  {'ok ' if check['passed'] else 'NO '} {check['name']:<34} {check['value']:.4f}"
                         f" (bound {check['bound']:.4f})" if isinstance(check.get("value"), (int, float))
                         and isinstance(check.get("bound"), (int, float)) else f"  {check['name']}")
    release = summary.get("release")
    if release:
        if release["rollout"] == "first":
            lines.append("release: the endpoint's first model, straight to 100 % of traffic")
        else:
            verdict = release.get("bake") or {}
            outcome = ("promoted" if verdict.get("promote") else "rolled back") if verdict else "baking"
            lines.append(f"release: canary beside the champion until {release.get('bake_ends')}, then {outcome}"
                         + (f": {verdict['reason']}" if verdict.get("reason") else ""))
            lines.append(f"  traffic split now {release.get('traffic_split')}")
    lines.append(f"model version {summary.get('model_version')} at {summary.get('endpoint')}")
    for p in summary.get("predictions", []):
        inst = p["instance"]
        lines.append(f"  {inst['is_male']:<7} {inst['plurality']:<12} age {inst['mother_age']:>4} "
                     f"{inst['gestation_weeks']:>4} wk → {p['weight_pounds']:.2f} lb")
    lines.append(f"wall time {summary.get('wall_s')} s")
    if summary.get("report"):
        lines.append(f"the run's report: {summary['report']} (open it in a browser; mlrelay console serves every run)")
    return "\n".join(lines)
