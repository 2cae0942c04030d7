"""``mlrelay bench [NAME ...] [--json] [--quick]``: run the benchmarks, print tables or JSON.

Each benchmark measures its figure and its baseline side by side in the same run: on a shared,
noisy machine a ratio from one run holds where an absolute time does not. Tables go to stdout;
with ``--json`` the tables go to stderr and stdout gets one JSON object keyed by benchmark name.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from bench.settings import BenchSettings

# Run in this order: ``serve`` reuses the model that ``train`` exported.
BENCHMARKS = {
    "handoff": "bench.handoff",
    "preprocess": "bench.preprocess",
    "train": "bench.train",
    "serve": "bench.serve",
    "coldstart": "bench.coldstart",
    "demo": "bench.demo",
    "recovery": "bench.recovery",
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The suite's options, on ``parser`` (``python -m bench``'s, which ``mlrelay bench`` runs)."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by benchmark name")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that each benchmark works")
    parser.add_argument("--poll-interval", type=float, default=60.0,
                        help="the polling orchestrator's interval to report against (default 60 s)")
    parser.add_argument("--poll-measure-interval", type=float, default=None,
                        help="the interval the simulated poller runs with (default 2 s; 1 s with --quick)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs of the chain for handoff (default 20; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, default=3, help="handoff runs in flight at once (default 3)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds the trainer runs with in train (default 5; 1 with --quick)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the benchmarks write their data (default: a temporary directory, removed after)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="mlrelay bench", description=__doc__.splitlines()[0]))


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the first option that cannot run."""
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"no benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in ("poll_interval", "poll_measure_interval", "runs", "concurrency", "seeds"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")


def machine() -> dict:
    """What the figures were measured on."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "memory_gib": round(memory_gib, 1), "python": platform.python_version(),
            "system": platform.platform(terse=True)}


def run_benchmarks(names: list[str], settings: BenchSettings, report=None) -> dict:
    """Run ``names`` in the suite's order; a benchmark that fails gives {"error": ...}, the rest go on.

    ``report(name, result, table_text)`` is called after each one.
    """
    results = {}
    for name in [n for n in BENCHMARKS if n in names]:
        module = importlib.import_module(BENCHMARKS[name])
        began = time.monotonic()
        try:
            result = module.run(settings)
        except Exception as error:  # one broken benchmark must not hide the others' figures
            result = {"error": f"{type(error).__name__}: {error}"}
            text = f"{name}: FAILED: {result['error']}\n{traceback.format_exc(limit=4)}"
        else:
            try:
                text = module.table(result)
            except Exception as error:  # the figures are kept; only their table is lost
                result["error"] = f"table: {type(error).__name__}: {error}"
                text = f"{name}: its table failed ({result['error']}); figures: {json.dumps(result, default=str)}"
        result["wall_s"] = round(time.monotonic() - began, 2)
        results[name] = result
        if report:
            report(name, result, text)
    return results


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m bench ...``: parse ``argv`` and run."""
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except ValueError as error:
        print(f"mlrelay bench: {error}", file=sys.stderr)
        return 2


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmarks ``args`` name; exit status 0 when all of them ran, 1 otherwise."""
    check_args(args)
    # SIGTERM ends the run as Ctrl-C does, so every local cloud and child process is stopped.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    names = args.names or list(BENCHMARKS)
    own_dir = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="mlrelay-bench-")) if own_dir else args.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = BenchSettings(work_dir=work_dir, quick=args.quick, poll_interval_s=args.poll_interval,
                             poll_measure_interval_s=args.poll_measure_interval, runs=args.runs,
                             concurrency=args.concurrency, seeds=args.seeds)
    tables = sys.stderr if args.json else sys.stdout
    print(f"mlrelay bench{' --quick' if args.quick else ''}: {', '.join(names)} "
          f"on {machine()['cpus']} CPUs / {machine()['memory_gib']} GiB; data in {work_dir}", file=tables, flush=True)
    began = time.monotonic()

    def report(name: str, result: dict, text: str) -> None:
        print(f"\n{text}\n  ({name}: {result['wall_s']:.1f} s)", file=tables, flush=True)

    try:
        results = run_benchmarks(names, settings, report)
    finally:
        if own_dir:
            import shutil

            shutil.rmtree(work_dir, ignore_errors=True)
    wall = round(time.monotonic() - began, 1)
    print(f"\nall benchmarks: {wall} s", file=tables, flush=True)
    if args.json:
        print(json.dumps({**results, "_run": {"machine": machine(), "quick": args.quick, "wall_s": wall}},
                         indent=2, default=str))
    return 1 if any("error" in result for result in results.values()) else 0
