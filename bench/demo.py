"""``demo``: the wall time of the demo by stage, and the peak memory of the whole local cloud.

The demo (``mlrelay demo --json``: sample data, local cloud, one run through every stage,
predictions) runs in a child process from an empty directory, as a newcomer runs it. Memory is
the resident set summed over that process and every descendant (the three function servers,
the Beam and trainer jobs), sampled every 0.2 s; the peak is reported.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from bench.processes import REPO_ROOT, PeakMemory, child_env
from bench.report import format_table
from bench.settings import BenchSettings

NAME = "demo"
FULL_ROWS = 50_000  # the demo's default
QUICK_ROWS = 3_000
QUICK_REQUEST = {"numTrainExamples": 2000, "numEvalExamples": 500, "numEvals": 1, "batchSize": 200}
TARGET_PEAK_GIB = 4.0
STAGES = ("request", "preprocess", "train", "deploy")


def run(settings: BenchSettings) -> dict:
    root = settings.scratch(NAME) / "local"
    rows = settings.pick(FULL_ROWS, QUICK_ROWS)
    command = [sys.executable, "-m", "bench.demo_run", "--root", str(root), "--rows", str(rows)]
    if settings.quick:
        command += ["--request", json.dumps(QUICK_REQUEST)]
    began = time.monotonic()
    proc = subprocess.Popen(command, env=child_env(), cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        with PeakMemory(proc.pid) as memory:
            stdout, stderr = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError("the demo ran past 30 minutes") from None
    wall = time.monotonic() - began
    try:
        summary = json.loads(stdout)
    except ValueError:
        raise RuntimeError(f"the demo printed no JSON summary (exit code {proc.returncode}): "
                           f"{stderr.decode(errors='replace')[-1500:]}") from None
    if summary.get("state") != "deployed":
        raise RuntimeError(f"the demo's run ended {summary.get('state')}: {summary.get('reason')}")
    stages = {name: round(stage["seconds"], 2) for name, stage in summary["stages"].items()
              if stage.get("seconds") is not None}
    peak_gib = round(memory.peak_bytes / 2**30, 3)
    return {
        "rows": rows,
        "training": "defaults" if not settings.quick else QUICK_REQUEST,
        "wall_s": None,  # set by the runner: the benchmark's own time
        "demo_wall_s": round(wall, 2),
        "demo_reported_wall_s": summary["wall_s"],
        "sample_s": summary["sample_s"],
        "local_cloud_ready_s": summary["local_cloud_ready_s"],
        "stages_s": stages,
        "handoffs_ms": summary["handoffs_ms"],
        "eval_rmse": summary["eval_rmse"],
        "bayes_floor": summary["bayes_floor"],
        "peak_rss_gib": peak_gib,
        "peak_processes": memory.peak_processes,
        "memory_samples": memory.samples,
        "target": f"peak memory of the whole local cloud <= {TARGET_PEAK_GIB} GiB",
        "target_met": peak_gib <= TARGET_PEAK_GIB,
    }


def table(result: dict) -> str:
    rows = [["sample data", result["sample_s"]], ["local cloud ready", result["local_cloud_ready_s"]]]
    rows += [[f"stage {name}", result["stages_s"].get(name)] for name in STAGES]
    rows += [["whole demo (process wall)", result["demo_wall_s"]]]
    handoffs = ", ".join(f"{name} {ms} ms" for name, ms in result["handoffs_ms"].items())
    return format_table(
        f"demo: mlrelay demo on {result['rows']:,} rows (training: "
        f"{'defaults' if result['training'] == 'defaults' else 'tiny'})",
        ["part", "seconds"],
        rows,
        [f"hand-offs: {handoffs}",
         f"eval RMSE {result['eval_rmse']:.4f}, Bayes floor {result['bayes_floor']:.4f}",
         f"peak memory of the local cloud's process tree: {result['peak_rss_gib']} GiB RSS "
         f"({result['peak_processes']} processes at the peak); target <= {TARGET_PEAK_GIB} GiB: "
         f"{'met' if result['target_met'] else 'NOT met'}"],
    )
