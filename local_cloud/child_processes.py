"""The local cloud's child processes die with it, however it ends; a new cloud clears what is left.

Everything the local cloud runs in processes of its own (function servers, jobs, serving
containers) is started here, so that a `kill -9` of the cloud leaves nothing behind:

- each child asks the kernel for SIGKILL when its parent goes (prctl PR_SET_PDEATHSIG, set by
  util-linux's `setpriv --pdeathsig KILL` before it execs the command; the setting survives exec).
  Linux sends it when the *thread* that forked the child ends, not the process, and the cloud starts
  children from short-lived request and operation threads; so every fork happens on one spawner
  thread that lives as long as the cloud does. Without setpriv, a preexec_fn makes the same call,
  but it forces a plain fork(), which the gRPC library the cloud also runs warns about at each one;
- each child runs in a process group of its own (a Ctrl-C meant for the cloud reaches it through the
  cloud's stop, and stopping it ends its grandchildren too) and carries the state directory in
  `MLRELAY_CLOUD_STATE`, which its own children inherit;
- a grandchild the parent-death signal does not reach (it is sent to the direct child only) is found
  by that variable when the next cloud starts on the directory (`sweep_stale`) and killed.

Reference: prctl(2), PR_SET_PDEATHSIG.
"""
from __future__ import annotations

import ctypes
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path

log = logging.getLogger(__name__)

STATE_VARIABLE = "MLRELAY_CLOUD_STATE"
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_SETPRIV = shutil.which("setpriv")


def _die_with(parent_pid: int):
    """The child's first act: SIGKILL when the parent goes, and go now if it went already."""
    def arm() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)
    return arm


_requests: queue.SimpleQueue = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def popen(args: list[str], *, state_dir: Path | None, env: dict[str, str] | None = None,
          **kwargs) -> subprocess.Popen:
    """subprocess.Popen(args, ...) in a process group of its own, dying with this process; marked
    with the cloud's state directory when there is one (a standalone server has none)."""
    global _spawner
    child_env = dict(os.environ if env is None else env)
    if state_dir is not None:
        child_env[STATE_VARIABLE] = str(Path(state_dir).resolve())
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_serve, args=(os.getpid(),), name="child-spawner", daemon=True)
            _spawner.start()
    done: Future = Future()
    _requests.put((args, child_env, kwargs, done))
    return done.result()


def _serve(parent: int) -> None:
    """The spawner thread: forks every child, and lives as long as the process."""
    while True:
        args, env, kwargs, done = _requests.get()
        try:
            if _SETPRIV:
                child = subprocess.Popen([_SETPRIV, "--pdeathsig", "KILL", "--", *args], env=env,
                                         start_new_session=True, **kwargs)
            else:
                child = subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with(parent),
                                         **kwargs)
            done.set_result(child)
        except BaseException as exc:  # handed to the caller, who sees its own error
            done.set_exception(exc)


def stale_processes(state_dir: Path, *, exclude: int | None = None) -> list[int]:
    """Pids of processes started by an earlier cloud on this state directory (by their variable)."""
    wanted = f"{STATE_VARIABLE}={Path(state_dir).resolve()}".encode()
    me = os.getpid() if exclude is None else exclude
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sweep_stale(state_dir: Path) -> list[int]:
    """Kill what an earlier cloud on this directory left running; the pids killed."""
    killed = []
    for pid in stale_processes(state_dir):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    if killed:
        log.warning("killed %d process(es) left by an earlier local cloud on %s", len(killed), state_dir)
    return killed
