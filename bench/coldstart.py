"""``coldstart``: what a function instance pays before its first event, and ``mlrelay up`` to ready.

* the import time of functions/main.py (the module all three functions live in) in a fresh
  interpreter, median of 5, with the imports that cost the most (``python -X importtime``);
* per function, a fresh functions-framework process from spawn until it accepts connections
  on 127.0.0.1, median of 3: what Cloud Functions pays per new instance, locally;
* the installed size of the functions' deploy-time dependencies (functions/requirements.txt and
  their dependency closure, as installed here), which the cloud builds into every image;
* the wall time from starting ``mlrelay up`` until it prints its ready line, median of 3.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench.processes import REPO_ROOT, child_env, run_checked
from bench.report import format_table, median
from bench.settings import BenchSettings

NAME = "coldstart"
FUNCTIONS = ("start_pipeline", "on_preprocess_output", "on_training_complete")
TARGET_IMPORT_S = 0.5
TARGET_UP_S = 5.0
IMPORT_PROBE = ("import time; began = time.perf_counter(); import functions.main; "
                "print(time.perf_counter() - began)")


def import_seconds(repeats: int) -> list[float]:
    """Seconds to import functions.main in ``repeats`` fresh interpreters."""
    return [float(run_checked([sys.executable, "-c", IMPORT_PROBE], 120, "importing functions.main").stdout.split()[-1])
            for _ in range(repeats)]


def parse_importtime(stderr: str, parent: str, top: int = 5) -> list[tuple[str, float]]:
    """The modules imported directly by ``parent`` that cost the most (cumulative ms), from -X importtime.

    Lines read ``import time: self | cumulative | <indent>name``; a direct import of ``parent`` is
    indented one level (two spaces) deeper than it and listed before it.
    """
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((len(match.group(3)), match.group(4), int(match.group(2)) / 1000))
    parent_rows = [i for i, row in enumerate(rows) if row[1] == parent]
    if not parent_rows:
        return []
    end = parent_rows[-1]
    depth = rows[end][0]
    start = end
    while start > 0 and rows[start - 1][0] > depth:
        start -= 1
    direct = [(name, ms) for level, name, ms in rows[start:end] if level == depth + 2]
    return sorted(direct, key=lambda item: -item[1])[:top]


def heaviest_imports() -> list[dict]:
    done = run_checked([sys.executable, "-X", "importtime", "-c", "import functions.main"], 120, "-X importtime")
    return [{"module": name, "ms": round(ms, 1)} for name, ms in parse_importtime(done.stderr, "functions.main")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def function_ready_seconds(name: str, timeout_s: float = 60.0) -> float:
    """Spawn functions-framework serving ``name``; seconds until its port accepts a connection."""
    port = _free_port()
    env = child_env({"MLRELAY_PLATFORM": "local"})
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "functions_framework", "--target", name, "--signature-type",
                             "cloudevent", "--source", str(REPO_ROOT / "functions" / "main.py"),
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(REPO_ROOT))
    try:
        while time.monotonic() - began < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"functions-framework serving {name} exited with code {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    return time.monotonic() - began
            except OSError:
                time.sleep(0.005)
        raise TimeoutError(f"functions-framework serving {name} not listening after {timeout_s:.0f} s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


# --- deploy-time dependencies ----------------------------------------------------------------------


def requirement_names(text: str) -> list[str]:
    """Distribution names of a requirements file's lines (comments, options and blanks skipped)."""
    from packaging.requirements import Requirement

    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        names.append(Requirement(line).name)
    return names


def dependency_closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need, transitively (markers evaluated here, no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        key = canonicalize_name(pending.pop())
        if key in found:
            continue
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{key} is a deploy-time dependency but is not installed here") from None
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        try:
            total += Path(file.locate()).stat().st_size
        except OSError:
            continue
    return total


def dependency_sizes(requirements: Path) -> dict:
    closure = dependency_closure(requirement_names(requirements.read_text()))
    sizes = {name: installed_bytes(dist) for name, dist in closure.items()}
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:6]
    return {"distributions": len(sizes), "mib": round(sum(sizes.values()) / 2**20, 1),
            "largest": [{"name": name, "mib": round(size / 2**20, 1)} for name, size in largest]}


# --- mlrelay up ------------------------------------------------------------------------------------


def _mlrelay_command() -> list[str]:
    script = Path(sys.executable).with_name("mlrelay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlrelay.cli"]


def up_ready_seconds(root: Path, rows: int, timeout_s: float = 120.0) -> dict:
    """Start ``mlrelay up``; seconds until its ready line, its own ready figure, then stop it."""
    env = child_env({"PYTHONUNBUFFERED": "1"})
    began = time.monotonic()
    proc = subprocess.Popen([*_mlrelay_command(), "up", "--root", str(root), "--rows", str(rows)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            cwd=str(root))
    try:
        for line in proc.stdout:
            match = re.match(r"local cloud up in ([\d.]+) s", line)
            if match:
                ready = time.monotonic() - began
                break
            if time.monotonic() - began > timeout_s:
                raise TimeoutError(f"mlrelay up printed no ready line in {timeout_s:.0f} s")
        else:
            raise RuntimeError(f"mlrelay up exited with code {proc.wait()} before it was ready")
        stop_began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return {"ready_s": ready, "own_ready_s": float(match.group(1)), "stop_s": time.monotonic() - stop_began}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(settings: BenchSettings) -> dict:
    from functions.config import Config
    from mlrelay.demo import ensure_sample

    repeats = settings.pick(5, 1)
    imports = import_seconds(repeats)
    functions = {name: round(median([function_ready_seconds(name) for _ in range(settings.pick(3, 1))]), 3)
                 for name in FUNCTIONS}
    root = settings.scratch(NAME) / "local"
    rows = 1000  # made before timing: `up` makes the sample only when it is missing
    ensure_sample(root / "buckets" / Config().bucket, rows)
    ups = [up_ready_seconds(root, rows) for _ in range(settings.pick(3, 1))]
    import_median = round(median(imports), 3)
    up_median = round(median([u["ready_s"] for u in ups]), 3)
    return {
        "import_s": {name: import_median for name in FUNCTIONS},
        "import_samples_s": [round(v, 3) for v in imports],
        "heaviest_imports": heaviest_imports(),
        "serving_s": functions,
        "dependencies": dependency_sizes(REPO_ROOT / "functions" / "requirements.txt"),
        "up_ready_s": up_median,
        "up_own_ready_s": round(median([u["own_ready_s"] for u in ups]), 3),
        "up_stop_s": round(median([u["stop_s"] for u in ups]), 3),
        "target": f"each function module imports in <= {TARGET_IMPORT_S} s; mlrelay up ready in <= {TARGET_UP_S} s",
        "target_met": {"import": import_median <= TARGET_IMPORT_S, "up": up_median <= TARGET_UP_S},
    }


def table(result: dict) -> str:
    rows = [[name, result["import_s"][name], result["serving_s"][name]] for name in FUNCTIONS]
    deps = result["dependencies"]
    heavy = ", ".join(f"{item['module']} {item['ms']:.0f} ms" for item in result["heaviest_imports"])
    largest = ", ".join(f"{item['name']} {item['mib']}" for item in deps["largest"])
    met = result["target_met"]
    return format_table(
        "coldstart: fresh processes on this machine",
        ["function", "import functions.main s", "functions-framework to listening s"],
        rows,
        [f"heaviest imports of functions.main: {heavy}",
         f"deploy-time dependencies (functions/requirements.txt + closure): {deps['distributions']} distributions, "
         f"{deps['mib']} MiB installed; largest (MiB): {largest}",
         f"mlrelay up: ready line after {result['up_ready_s']} s (its own figure, after imports: "
         f"{result['up_own_ready_s']} s); stops in {result['up_stop_s']} s",
         f"targets: import <= {TARGET_IMPORT_S} s: {'met' if met['import'] else 'NOT met'}; "
         f"up <= {TARGET_UP_S} s: {'met' if met['up'] else 'NOT met'}"],
    )
