"""A push endpoint for the broker's tests: a real HTTP server on 127.0.0.1 that records every POST."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Endpoint:
    """A threaded HTTP server that records every POST and answers with a scripted status per path."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: dict[str, list[int]] = {}  # path -> statuses to answer in turn (last repeats)
        self.holds: dict[str, threading.Event] = {}  # path -> answer only once the event is set
        self.delays: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = endpoint._arrive(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                try:
                    if self.path in endpoint.holds:
                        endpoint.holds[self.path].wait(10)
                    time.sleep(endpoint.delays.get(self.path, 0.0))
                finally:
                    endpoint._leave(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def _arrive(self, path: str, headers: dict, body: bytes) -> int:
        with self._lock:
            seen = sum(1 for r in self.requests if r["path"] == path)
            script = self.statuses.get(path, [204])
            self.requests.append({"path": path, "headers": headers, "body": body, "at": time.monotonic()})
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
            return script[min(seen, len(script) - 1)]

    def _leave(self, path: str) -> None:
        with self._lock:
            self.in_flight[path] -= 1

    def at(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        for hold in self.holds.values():
            hold.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A port nobody listens on (for now): a push there gets no answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

