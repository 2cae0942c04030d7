"""Child processes as the benchmarks measure them: wall time, CPU time, and the memory of a tree.

CPU time comes from ``os.wait4``: the user + system seconds of the child and of every descendant
it waited for, which is what a billed worker (Dataflow, Vertex AI) costs. Memory is the resident
set summed over a process and all its descendants, read from /proc (psutil when installed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Finished:
    """A child process that ended: its exit code, output and what it cost."""

    returncode: int
    wall_s: float
    cpu_s: float
    stdout: str
    stderr: str

    def json_line(self) -> dict:
        """The last line of stdout that is a JSON object (how bench child modules report)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        raise RuntimeError(f"the child printed no JSON result; stderr ends: {self.stderr[-800:]}")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child that imports the project's packages, with TensorFlow quiet."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}


def run_measured(command: list[str], timeout_s: float, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> Finished:
    """Run ``command`` to its end; wall time, CPU seconds (user + sys, with descendants), output.

    Raises TimeoutError (after killing the child's process group) when it runs past ``timeout_s``.
    """
    out_path = _scratch("stdout")
    err_path = _scratch("stderr")
    with open(out_path, "w+b") as out, open(err_path, "w+b") as err:
        began = time.monotonic()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env or child_env(),
                                cwd=str(cwd or REPO_ROOT), start_new_session=True)
        deadline = began + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                _kill_group(proc.pid)
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"{' '.join(command[:4])} ... ran past {timeout_s:.0f} s")
            time.sleep(0.02)
        wall = time.monotonic() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    os.unlink(out_path)
    os.unlink(err_path)
    return Finished(proc.returncode, wall, usage.ru_utime + usage.ru_stime, stdout, stderr)


def run_checked(command: list[str], timeout_s: float, what: str, **kwargs) -> Finished:
    """``run_measured``, raising RuntimeError with the child's last output when it fails."""
    done = run_measured(command, timeout_s, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise RuntimeError(f"{what} failed with exit code {done.returncode}: {tail}")
    return done


def _scratch(kind: str) -> str:
    import tempfile

    handle, path = tempfile.mkstemp(prefix=f"mlrelay-bench-{kind}-")
    os.close(handle)
    return path


def _kill_group(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def python_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# --- memory of a process tree -------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children = _children_map()
    tree, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        tree.append(current)
        frontier.extend(children.get(current, []))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0  # the process ended between listing and reading
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(pid: int) -> tuple[int, int]:
    """(resident bytes summed over ``pid`` and its descendants, number of processes)."""
    try:
        import psutil  # noqa: PLC0415 (optional)
    except ImportError:
        pids = process_tree(pid)
        return sum(_rss_bytes(p) for p in pids), len(pids)
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total, len(processes)


class PeakMemory:
    """Samples the resident memory of a process tree in a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total, count = tree_rss_bytes(self.pid)
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, count
            self._stop.wait(self.interval_s)


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(all ticks, stolen ticks) of the machine's CPUs since boot, from /proc/stat; None elsewhere.

    Steal is the time a virtual machine's CPUs were ready to run but the hypervisor ran someone
    else: on a shared machine it is what makes the same benchmark slower from one run to the next.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(value) for value in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
    return sum(ticks[:8]), ticks[7]


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two ``machine_cpu_ticks`` readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round(100.0 * (after[1] - before[1]) / (after[0] - before[0]), 1)

