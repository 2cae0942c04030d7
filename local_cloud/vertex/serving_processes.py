"""A deployed model's serving container, run here as its own process, as Vertex AI runs it.

Vertex AI starts the Model's container on each node with the variables of its custom-container
contract (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements),
probes its port, then sends health checks to AIP_HEALTH_ROUTE until one answers 200, and only
then sends it traffic. The local endpoint does the same with the container's command
(``containerSpec.command`` and ``args``; without a command, the serving image's own entry point
``python -m model_server``), so what serves locally is the code the image runs in the cloud.

What differs here, and why: the image's ``python`` is this environment's interpreter (which holds
the packages the image pins); the server listens on the loopback address and on a free port
rather than 0.0.0.0:AIP_HTTP_PORT's 8080 (several deployed models share this machine, and a
container's port is reachable only through the endpoint); AIP_STORAGE_URI is the artifacts' local
directory, the bucket's stand-in, where Vertex passes a gs:// copy. The process's output goes to
``<state>/serving/<deployed model id>.log``, the container log Cloud Logging would hold.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import model_server
from local_cloud import child_processes

log = logging.getLogger(__name__)

# The serving image's ENTRYPOINT (deploy/serving_image/Dockerfile), run when the Model names no command.
DEFAULT_COMMAND = ("python", "-m", "model_server")
DEFAULT_PORT = 8080
# Vertex AI's defaults when containerSpec names no routes (the custom-container requirements page).
DEFAULT_PREDICT_ROUTE = "/v1/endpoints/{endpoint}/deployedModels/{deployed_model}:predict"
DEFAULT_HEALTH_ROUTE = "/v1/endpoints/{endpoint}/deployedModels/{deployed_model}"
READY_TIMEOUT_S = 300.0
HEALTH_CHECK_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 10.0
_SOURCE_ROOT = str(Path(model_server.__file__).resolve().parents[1])


class ServingStartFailed(Exception):
    """The container exited, or never answered its health check with 200: the reason, in one line."""


def container_program(container_spec: Mapping) -> list[str]:
    """The command and arguments the container runs, its interpreter this environment's."""
    command = list(container_spec.get("command") or DEFAULT_COMMAND)
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    return command + list(container_spec.get("args") or [])


def container_environment(container_spec: Mapping, *, port: int, storage_uri: str, endpoint_id: str,
                          deployed_model_id: str, project: str, machine_type: str) -> dict[str, str]:
    """The AIP_* variables Vertex AI sets, with the Model's own ``env`` entries after them."""
    health = container_spec.get("healthRoute") or DEFAULT_HEALTH_ROUTE.format(
        endpoint=endpoint_id, deployed_model=deployed_model_id)
    predict = container_spec.get("predictRoute") or DEFAULT_PREDICT_ROUTE.format(
        endpoint=endpoint_id, deployed_model=deployed_model_id)
    env = {
        "AIP_MODE": "PREDICTION",
        "AIP_MODE_VERSION": "1.0.0",
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": health,
        "AIP_PREDICT_ROUTE": predict,
        "AIP_STORAGE_URI": storage_uri,
        "AIP_DEPLOYED_MODEL_ID": deployed_model_id,
        "AIP_ENDPOINT_ID": endpoint_id,
        "AIP_PROJECT_NUMBER": project,
        "AIP_MACHINE_TYPE": machine_type,
    }
    for entry in container_spec.get("env") or []:
        env[entry["name"]] = entry.get("value", "")
    return env


class ServingProcess:
    """One deployed model's container: started, health-checked until ready, stopped with SIGTERM.

    ``url(route)`` is where the endpoint forwards; ``wait_ready`` blocks until the health route
    answers 200 and raises ServingStartFailed (with the health answer or the log's last lines)
    when the process exits first or the time runs out.
    """

    def __init__(self, deployed_model_id: str, command: Sequence[str], env: Mapping[str, str], log_path: Path,
                 *, cloud_state: Path | None = None):
        self.deployed_model_id = deployed_model_id
        self.port = int(env["AIP_HTTP_PORT"])
        self.health_route = env["AIP_HEALTH_ROUTE"]
        self.predict_route = env["AIP_PREDICT_ROUTE"]
        self.predict_url = f"http://127.0.0.1:{self.port}{self.predict_route}"
        self._log_path = log_path
        self._ready = threading.Event()
        self._failure: str | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        python_path = os.pathsep.join(p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        with open(log_path, "ab") as log_file:
            # In a process group of its own (a Ctrl-C meant for the local cloud reaches it through
            # stop()), and dying with the local cloud however that ends.
            self._process = child_processes.popen(
                [*command, "--host", "127.0.0.1"], state_dir=cloud_state,
                env={**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", **env},
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Health-check until 200, as Vertex AI does before it routes traffic to a node."""
        if self._ready.is_set():
            return
        deadline = time.monotonic() + timeout
        last_answer = "it never answered"
        while True:
            if self._failure is not None:
                raise ServingStartFailed(self._failure)
            code = self._process.poll()
            if code is not None:
                self._fail(f"the serving container exited with status {code}: {self.log_tail()}")
            status, body = self._health_check()
            if status == 200:
                self._ready.set()
                return
            if status is not None:
                last_answer = f"{status} {_error_message(body)}"
            if time.monotonic() > deadline:
                self._fail(f"the serving container's health check at {self.health_route} did not answer 200 "
                           f"within {timeout:.0f} s (last: {last_answer})")
            if status is not None and status != 503:  # only "not ready yet" is worth waiting out
                self._fail(f"the serving container's health check answered {last_answer}")
            time.sleep(HEALTH_CHECK_INTERVAL_S)

    def _fail(self, reason: str) -> None:
        self._failure = reason
        raise ServingStartFailed(reason)

    def _health_check(self) -> tuple[int | None, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", self.health_route)
            answer = connection.getresponse()
            return answer.status, answer.read()
        except OSError:  # not listening yet
            return None, b""
        finally:
            connection.close()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(no output)"

    def kill(self) -> None:
        """SIGKILL: the container dies at once, as in a crash (it stays marked ready: nothing noticed)."""
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, as Vertex AI stops a node (the server finishes requests in flight), then SIGKILL."""
        self._ready.clear()
        self._failure = self._failure or "the deployed model was stopped"
        if self._process.poll() is not None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=timeout)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            log.warning("deployed model %s did not stop within %.0f s; killing it", self.deployed_model_id, timeout)
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
