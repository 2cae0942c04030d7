"""``recovery``: how long a run takes to end after the local cloud is killed, and after an event is lost.

Crash drills: `mlrelay up` runs on one state directory; a small run is started from a trigger file and
the cloud is killed with SIGKILL at one of five moments (during preprocessing, during training, just
after the training job ended, during the deploy, during the canary's bake); `mlrelay up` is started
again on the directory, and the figure is the time from that restart to the run's terminal ledger
record; beside them, the time a run takes from its trigger to its end with no crash. The runs go one after another on the same directory, so each one after the first bakes as
a canary beside the one before (a gate loosened by the request lets each through).

Lost event: on a local cloud of this process, the storage event of one run's manifest is dropped
(as a notification the cloud never delivered), and the figure is the time from the manifest's
write to the training launch the reconcile sweep makes instead: at most the sweep's quiet time
plus one tick.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Callable

from bench.report import format_table
from local_cloud.child_processes import alive
from bench.settings import BenchSettings

NAME = "recovery"
REQUEST = {"source": "data/natality.parquet", "numTrainExamples": 3000, "numEvalExamples": 1000, "numEvals": 1,
           "batchSize": 256, "release": {"tolerance": 0.5, "sliceTolerance": 0.5}}
SAMPLE_ROWS = 4000
RUN_TIMEOUT_S = 300.0
BUCKET = "mlrelay"
TERMINAL = ("deployed", "rolled-back", "rejected", "failed")


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def mlrelay_command() -> list[str]:
    script = Path(sys.executable).with_name("mlrelay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlrelay.cli"]


class CloudProcess:
    """`mlrelay up` on a state directory, as a user runs it, to be killed without warning."""

    def __init__(self, root: Path, duplicate_deliveries: int = 1):
        self.root = Path(root)
        self.duplicate_deliveries = duplicate_deliveries
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> "CloudProcess":
        from local_cloud.cloud import read_state

        self.started_at = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f"{self.root.name}-up.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*mlrelay_command(), "up", "--root", str(self.root), "--rows", str(SAMPLE_ROWS),
                 "--duplicate-deliveries", str(self.duplicate_deliveries)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: (read_state(self.root) or {}).get("pid") == self.proc.pid, 60, "the local cloud's start")
        return self

    def state(self) -> dict:
        from local_cloud.cloud import read_state

        return read_state(self.root) or {}

    def kill9(self) -> list[int]:
        """SIGKILL the cloud alone (not its process group): the pids of what it had started."""
        from local_cloud.child_processes import stale_processes

        children = stale_processes(self.root)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return children

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    # -- what the cloud's state says ----------------------------------------------------------

    def runs(self):
        from functions.local_adapters import LocalStorage
        from functions.run_store import RunStore

        return RunStore(LocalStorage(self.root / "buckets" / BUCKET), BUCKET)

    def trigger(self, name: str, **request) -> str:
        """Upload a trigger file; the id of the run it starts."""
        path = self.root / "buckets" / BUCKET / "triggers" / f"{name}.json"
        path.write_text(json.dumps({**REQUEST, **request}))
        uri = f"gs://{BUCKET}/triggers/{name}.json"
        return wait_for(lambda: self.runs().find_run_for_trigger(uri), 60, f"the run of {uri}")

    def state_of(self, run_id: str) -> str | None:
        statuses = self.runs().statuses(run_id)
        return statuses[0].state.value if statuses else None

    def job_records(self, run_id: str) -> list[dict]:
        records = []
        for path in (self.root / "jobs").glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except ValueError:
                continue  # being replaced this instant
        return [r for r in records if r["labels"].get("run_id") == run_id or r["display_name"] == run_id]

    def endpoint(self) -> dict:
        with urllib.request.urlopen(self.state()["endpoint"], timeout=10) as answer:
            return json.loads(answer.read())

    def predict(self, count: int) -> int:
        """Send `count` one-instance predictions to the endpoint; how many were answered 200."""
        from mlrelay.demo import send_predictions

        return sum(status == 200 for status in send_predictions(self.state()["endpoint"], count))

    def wait_ended(self, run_id: str) -> str:
        return wait_for(lambda: (state := self.state_of(run_id)) in TERMINAL and state, RUN_TIMEOUT_S,
                        f"{run_id} to end")


MOMENTS: dict[str, Callable[[CloudProcess, str], bool]] = {
    "during-preprocessing": lambda cloud, run: cloud.state_of(run) == "preprocessing",
    "during-training": lambda cloud, run: cloud.state_of(run) == "training" and any(
        r["kind"] == "vertex" for r in cloud.job_records(run)),
    "after-training-ended": lambda cloud, run: any(
        r["kind"] == "vertex" and r["state"] == "JOB_STATE_SUCCEEDED" for r in cloud.job_records(run)),
    "during-the-deploy": lambda cloud, run: cloud.state_of(run) == "deploying",
    "during-the-bake": lambda cloud, run: cloud.state_of(run) == "baking",
}


# During the bake, this many predictions are served before the kill; the bake's verdict after the
# restart must count them (the endpoint's figures are on disk, as Cloud Monitoring's outlive it).
PREDICTIONS_BEFORE_CRASH = 40
# A second's figures are written just after it ends; the kill comes this long after the last.
FIGURES_WRITTEN_S = 1.5


def crash_and_recover(cloud: CloudProcess, moment: str, examples: int) -> dict:
    """Start a run, kill the cloud at `moment`, start it again: what happened, and how long it took."""
    if moment == "during-the-bake" and not cloud.endpoint().get("deployedModels"):
        cloud.wait_ended(cloud.trigger("champion", numTrainExamples=examples - 1))
    run = cloud.trigger(moment, numTrainExamples=examples)
    wait_for(lambda: MOMENTS[moment](cloud, run), RUN_TIMEOUT_S, f"{run} {moment}")
    served = 0
    if moment == "during-the-bake":
        served = cloud.predict(PREDICTIONS_BEFORE_CRASH)
        time.sleep(FIGURES_WRITTEN_S)
    orphans = cloud.kill9()
    cloud.start()
    final = cloud.wait_ended(run)
    return {"run_id": run, "state": final, "recovery_s": round(time.monotonic() - cloud.started_at, 2),
            "orphans_left": [pid for pid in orphans if alive(pid)], "served_before_crash": served}


def lost_manifest_event(root: Path) -> dict:
    """A local cloud that drops one manifest's storage event: how long the sweep takes to make it good."""
    from functions.config import Config
    from local_cloud.cloud import LocalCloud, LocalCloudSettings
    from mlrelay.demo import ensure_sample

    dropped: list[str] = []

    class DroppingCloud(LocalCloud):
        def _on_finalize(self, obj) -> None:
            if obj.name.endswith("/_MANIFEST.json") and not dropped:
                dropped.append(obj.name)  # lost: the functions never hear of it
                return
            super()._on_finalize(obj)

    config = Config(debounce_seconds=0)
    ensure_sample(root / "buckets" / config.bucket, rows=SAMPLE_ROWS, seed=3)
    cloud = DroppingCloud(LocalCloudSettings(root=root, config=config)).start()
    try:
        runs = CloudProcess(root).runs()
        (root / "buckets" / config.bucket / "triggers" / "lost.json").write_text(json.dumps(REQUEST))
        uri = f"gs://{config.bucket}/triggers/lost.json"
        run = wait_for(lambda: runs.find_run_for_trigger(uri), 60, f"the run of {uri}")
        wait_for(lambda: dropped, RUN_TIMEOUT_S, "the manifest")
        manifest_written = (root / "buckets" / config.bucket / dropped[0]).stat().st_mtime
        training = wait_for(lambda: next((e for e in runs.ledger(run).get(run, []) if e.state.value == "training"), None),
                            RUN_TIMEOUT_S, "the sweep's training launch")
        return {"run_id": run, "catch_up_s": round(training.time.timestamp() - manifest_written, 2),
                "cause": training.cause_event_id, "quiet_s": cloud.config.reconcile_after_seconds,
                "tick": cloud.settings.sweep_cron}
    finally:
        cloud.stop()


def run(settings: BenchSettings) -> dict:
    root = settings.scratch(NAME)
    moments = settings.pick(list(MOMENTS), ["during-training"])
    cloud = CloudProcess(root / "crash").start()
    crashes = {}
    try:
        for index, moment in enumerate(moments):
            crashes[moment] = crash_and_recover(cloud, moment, 3000 + index)
        # For scale: a run like the last ones (baking beside a champion), with no crash.
        began = time.monotonic()
        run_id = cloud.trigger("no-crash", numTrainExamples=3100)
        uninterrupted = {"run_id": run_id, "state": cloud.wait_ended(run_id),
                         "trigger_to_end_s": round(time.monotonic() - began, 2)}
    finally:
        cloud.stop()
    return {"crashes": crashes, "uninterrupted": uninterrupted, "lost_event": lost_manifest_event(root / "lost"),
            "measured_at": datetime.now().astimezone().isoformat(timespec="seconds")}


def table(result: dict) -> str:
    rows = [[moment, c["state"], f"{c['recovery_s']:.1f}", str(len(c["orphans_left"]))]
            for moment, c in result["crashes"].items()]
    done = result["uninterrupted"]
    rows.append(["no crash (trigger -> end)", done["state"], f"{done['trigger_to_end_s']:.1f}", "-"])
    lost = result["lost_event"]
    rows.append([f"manifest event lost (quiet {lost['quiet_s']} s)", "training launched", f"{lost['catch_up_s']:.1f}",
                 "-"])
    return format_table("recovery: kill -9 of mlrelay up, then mlrelay up again; and a lost event",
                        ["moment", "run ended", "restart -> end, s", "orphans"], rows)

