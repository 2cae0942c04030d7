"""What the serving container's tests share: the local Vertex AI's SavedModels, and the container's
entry point, ``python -m model_server``, started as Vertex AI starts it (the AIP_* variables set)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.local_cloud.vertex.conftest import saved_models, service_factory  # noqa: F401 (fixtures)

HEALTH_ROUTE = "/v1/endpoints/babyweight/deployedModels/1"
PREDICT_ROUTE = "/v1/endpoints/babyweight/deployedModels/1:predict"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelServer:
    """A running ``python -m model_server`` child process and a client keeping one connection."""

    def __init__(self, storage_uri: str, log_path: Path):
        self.port = free_port()
        env = {**os.environ, "AIP_HTTP_PORT": str(self.port), "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
               "AIP_PREDICT_ROUTE": PREDICT_ROUTE, "AIP_STORAGE_URI": storage_uri,
               "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "model_server", "--host", "127.0.0.1"],
                                        cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, raw: bytes | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"} if raw is not None else {}
            connection.request(method, path, raw, headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read()), response
        finally:
            connection.close()

    def health(self) -> int | None:
        if self.process.poll() is not None:
            raise AssertionError(f"model_server exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.call("GET", HEALTH_ROUTE)[0]
        except OSError:  # not listening yet
            return None

    def predict(self, instances: list) -> tuple[int, dict]:
        status, answer, _ = self.call("POST", PREDICT_ROUTE, json.dumps({"instances": instances}).encode())
        return status, answer

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture()
def start_model_server(tmp_path):
    started: list[ModelServer] = []

    def start(storage_uri: str, ready: bool = True) -> ModelServer:
        server = ModelServer(storage_uri, tmp_path / f"model_server-{len(started)}.log")
        started.append(server)
        if ready:
            wait_until(lambda: server.health() == 200, START_TIMEOUT_S, "the model server's health route to answer 200")
        return server

    yield start
    for server in started:
        server.stop()
