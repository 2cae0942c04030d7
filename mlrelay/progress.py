"""Live progress of a run: `mlrelay status --follow` and `mlrelay demo` draw it while the run goes.

A follower reads the run's ledger (and, while it trains, the trainer's progress.json) again and
again, folds it into a small snapshot and tells a display what changed since the last look: a
stage started (a hand-off), the training got further, the gate or the release decided, the run
ended. Reading the bucket every half second is a display's concern, not the pipeline's: nothing
of the chain waits on it.

Three displays, one per kind of output: a redrawn table (rich) on a terminal, one plain line per
change elsewhere (a log, a pipe: no redraw, no escape codes), one JSON object per change for
programs.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TextIO

from events.ledger import STAGES, fold
from events.timestamps import format_rfc3339, parse_rfc3339
from functions.run_store import RunStore
from mlrelay.run_view import read_progress, run_records, stage_view
from mlrelay.status_view import format_split, progress_text

PROGRESS_LINE_FORMAT = "mlrelay.run-progress/v1"


def snapshot(runs: RunStore, run_id: str) -> dict[str, Any]:
    """What a progress display shows of a run now: state, stages, training progress, decisions."""
    events = run_records(runs, run_id)
    if not events:
        return {"run_id": run_id, "state": "starting", "terminal": False, "stages": {}}
    status = fold(events)
    snap: dict[str, Any] = {"run_id": run_id, "state": status.state.value, "terminal": status.terminal,
                            "stages": stage_view(status, events)}
    if status.reason:
        snap["reason"] = " ".join(status.reason.split())
    if "train" in status.job_ids:
        snap["train_job"] = status.job_ids["train"]
    if status.state.value == "training":
        progress = read_progress(runs, run_id)
        if progress:
            snap["training"] = progress
    for event in events:
        details = event.details
        gate = details.get("gate")
        if isinstance(gate, Mapping):
            snap["gate"] = {"blessed": bool(gate.get("blessed")), "reason": gate.get("reason")}
        check = details.get("data_check")
        if isinstance(check, Mapping) and not check.get("passed", True):
            snap["data_check"] = {"passed": False, "reason": check.get("reason")}
        release = snap.get("release", {})
        for key in ("rollout", "bake_ends"):
            if details.get(key) is not None:
                release[key] = details[key]
        if details.get("rollout") is not None and details.get("traffic_split") is not None:
            release["split"] = details["traffic_split"]  # as the rollout set it, before any promotion
        bake = details.get("bake")
        if isinstance(bake, Mapping):
            release["bake"] = {"promote": bool(bake.get("promote")), "reason": bake.get("reason")}
        if release:
            snap["release"] = release
        for key in ("model_version", "traffic_split"):
            if details.get(key) is not None:
                snap[key] = details[key]
    return snap


def changes(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """What happened between two snapshots, one sentence each, in the order it happened."""
    before = before or {}
    said: list[str] = []
    if before.get("run_id") != now.get("run_id"):
        before = {}
    old_stages, new_stages = before.get("stages") or {}, now.get("stages") or {}
    for name in (stage for stage in STAGES if stage in new_stages and stage not in old_stages):
        earlier = [stage for stage in STAGES[:STAGES.index(name)] if stage in new_stages]
        if earlier:  # the first stage's start is the run's first state, said below
            took = new_stages[earlier[-1]].get("seconds")
            said.append(f"hand-off {earlier[-1]} → {name}" + ("" if took is None else f" after {took:.1f} s"))
    if before.get("state") != now.get("state") and not now.get("terminal"):
        if now["state"] == "starting":
            said.append("waiting for the run's first record")
        else:  # a queued run's reason says behind what it waits
            waits = f": {now['reason']}" if now["state"] == "queued" and now.get("reason") else ""
            said.append(f"state {now['state']}{waits}")
    progress = now.get("training")
    if progress and progress != before.get("training") and _progressed(before.get("training"), progress):
        said.append(f"training {progress_text(progress)}")
    check = now.get("data_check")
    if check and check != before.get("data_check"):
        said.append(f"data check refused: {check.get('reason')}")
    gate = now.get("gate")
    if gate and gate != before.get("gate"):
        reason = _strip(gate.get("reason"), "blessed", "not blessed", "rejected")
        said.append(f"gate {'blessed' if gate['blessed'] else 'rejected'}: {reason}")
    release, old_release = now.get("release") or {}, before.get("release") or {}
    if release.get("rollout") and release.get("rollout") != old_release.get("rollout"):
        split = f", traffic {format_split(release['split'])}" if release.get("split") else ""
        said.append(f"release {release['rollout']}{split}"
                    + (f", bakes until {release['bake_ends'][11:19]}" if release.get("bake_ends") else ""))
    bake = release.get("bake")
    if bake and bake != old_release.get("bake"):
        said.append(f"bake verdict {'promote' if bake['promote'] else 'roll back'}: "
                    f"{_strip(bake.get('reason'), 'promote', 'roll back')}")
    if now.get("terminal") and not before.get("terminal"):
        said.append(f"run ended {now['state']}" + (f": {now['reason']}" if now.get("reason") else ""))
    return said


def _progressed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """A new count or evaluation, not only a newer `updated` stamp."""
    keys = ("examples_seen", "evaluations_done", "last_eval_rmse")
    return old is None or any(old.get(key) != new.get(key) for key in keys)


def _strip(reason: Any, *verdicts: str) -> str:
    text = " ".join(str(reason or "").split())
    for verdict in verdicts:
        if text.startswith(verdict + ": "):
            return text[len(verdict) + 2:]
    return text


def stage_elapsed(stage: Mapping[str, Any], now: datetime) -> float | None:
    """A stage's seconds: its span when it ended, else the time since it started."""
    if stage.get("seconds") is not None:
        return stage["seconds"]
    if not stage.get("start"):
        return None
    return max((now - parse_rfc3339(stage["start"])).total_seconds(), 0.0)


# --- displays -------------------------------------------------------------------------------------


class PlainDisplay:
    """One line per change, nothing redrawn: for a log file or a pipe."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic, prefix: str = "",
                 began: float | None = None):
        self.out, self.clock, self.prefix = out, clock, prefix
        self.began = clock() if began is None else began
        self._waiting = False

    def waiting(self, what: str) -> None:
        if not self._waiting:
            self._line(what)
            self._waiting = True

    def show(self, snap: Mapping[str, Any], said: list[str]) -> None:
        for sentence in said:
            self._line(f"{snap['run_id']}: {sentence}")

    def _line(self, text: str) -> None:
        print(f"{self.prefix}[{self.clock() - self.began:6.1f} s] {text}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class JsonDisplay:
    """One JSON object per change (JSON lines): the snapshot, what changed, and when."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self.out, self.clock = out, clock
        self.began = clock()

    def waiting(self, what: str) -> None:
        pass

    def show(self, snap: Mapping[str, Any], said: list[str]) -> None:
        if said:
            line = {"format": PROGRESS_LINE_FORMAT, "time": format_rfc3339(datetime.now(timezone.utc), digits=3),
                    "elapsed_s": round(self.clock() - self.began, 2), "changes": said, **snap}
            print(json.dumps(line, sort_keys=True), file=self.out, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A table redrawn in place on a terminal (rich): each stage, its state and time, then the news."""

    def __init__(self, out: TextIO | None = None, recent: int = 8, began: float | None = None,
                 width: int | None = None):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, width=width)
        self.snap: Mapping[str, Any] | None = None
        self.what = "waiting for the run to start"
        self.news: list[str] = []
        self.training: Mapping[str, Any] | None = None
        self.recent = recent
        self.began = time.monotonic() if began is None else began
        # The display is an object rendered anew on every refresh, so the clocks move between changes.
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def waiting(self, what: str) -> None:
        self.what = what

    def show(self, snap: Mapping[str, Any], said: list[str]) -> None:
        self.snap = snap
        if snap.get("training"):  # kept for the train row once the run has moved on
            self.training = snap["training"]
        stamp = f"{time.monotonic() - self.began:6.1f} s"
        self.news = (self.news + [f"[{stamp}] {sentence}" for sentence in said])[-self.recent:]
        self.live.refresh()

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        snap = self.snap
        if snap is None:
            return Text(f"{self.what} ({time.monotonic() - self.began:.1f} s)")
        now = datetime.now(timezone.utc)
        table = Table(expand=False)
        for column, justify in (("stage", "left"), ("state", "left"), ("elapsed", "right"), ("progress", "left")):
            table.add_column(column, justify=justify)
        for name, stage in (snap.get("stages") or {}).items():
            elapsed = stage_elapsed(stage, now)
            detail = ""
            if name == "train" and self.training:
                detail = _progress_cell(self.training)
            elif name == "deploy" and snap.get("gate"):
                detail = "gate blessed" if snap["gate"]["blessed"] else "gate rejected"
            elif name == "release" and snap.get("release", {}).get("rollout"):
                detail = f"{snap['release']['rollout']} {format_split(snap.get('traffic_split'))}"
            running = stage.get("end") is None and not snap.get("terminal")
            table.add_row(name, stage.get("state") or "-", _duration(elapsed),
                          detail, style="bold" if running else None)
        parts: list[Any] = [Text(f"run {snap['run_id']}: {snap['state']}", style="bold"), table]
        parts.extend(Text(line) for line in self.news)
        return Group(*parts)

    def close(self) -> None:
        self.live.stop()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _progress_cell(progress: Mapping[str, Any]) -> str:
    """A table cell's worth of training progress: '155,648/466,944 (33%) · eval 2/6 · RMSE 1.0375'."""
    seen = f"{progress['examples_seen']:,}"
    if progress.get("examples_total"):
        seen += f"/{progress['examples_total']:,} examples"
        if "fraction" in progress:
            seen += f" ({progress['fraction']:.0%})"
    parts = [seen]
    if progress.get("evaluations_total"):
        parts.append(f"eval {progress.get('evaluations_done', 0)}/{progress['evaluations_total']}")
    if "last_eval_rmse" in progress:
        parts.append(f"RMSE {progress['last_eval_rmse']:.4f}")
    return " · ".join(parts)


def display_for(out: TextIO, as_json: bool):
    """JSON lines with --json; a redrawn table on a terminal; else plain lines."""
    if as_json:
        return JsonDisplay(out)
    if out.isatty():
        return LiveDisplay(out)
    return PlainDisplay(out)


# --- following ------------------------------------------------------------------------------------


class Follower:
    """Turns repeated looks at a run into a display's updates: only what changed is news."""

    def __init__(self, runs: RunStore, display):
        self.runs = runs
        self.display = display
        self.last: dict[str, Any] | None = None

    def update(self, run_id: str) -> dict[str, Any]:
        snap = snapshot(self.runs, run_id)
        said = changes(self.last, snap)
        self.display.show(snap, said)
        self.last = snap
        return snap


def newest_open_run(runs: RunStore) -> str | None:
    """The newest run that has not ended, or None (run ids sort by time)."""
    ids = runs.run_ids()
    if not ids:
        return None
    statuses = runs.statuses(ids[-1])
    return None if statuses and statuses[0].terminal else ids[-1]


def follow(runs: RunStore, run_id: str | None, display, *, poll_s: float = 0.5,
           timeout_s: float | None = None, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> dict[str, Any] | None:
    """Show a run's progress until it ends; the last snapshot, or None when the time ran out first.

    Without a run id: the newest run still going, or else the next run to appear.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    known: set[str] | None = None
    follower = Follower(runs, display)
    snap = None
    try:
        while True:
            if run_id is None:
                if known is None:
                    run_id = newest_open_run(runs)
                    known = set(runs.run_ids())
                else:
                    run_id = next((new for new in reversed(runs.run_ids()) if new not in known), None)
                if run_id is None:
                    display.waiting("waiting for the next run to start")
            if run_id is not None:
                snap = follower.update(run_id)
                if snap.get("terminal"):
                    return snap
            if deadline is not None and clock() >= deadline:
                return None
            sleep(poll_s)
    finally:
        display.close()
