"""An ASGI app served by uvicorn on a loopback address, from a background thread.

The local cloud's REST fronts (Vertex AI, Cloud Tasks) are served this way: the socket is bound
and listening when the constructor returns, so ``port`` can be used at once (a caller hands it
to the next process before anything waits); ``close()`` stops the server. Only loopback
addresses are accepted: these stand-ins check no credentials.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LISTEN_BACKLOG = 128
# A client waiting for a long operation keeps its connection; Google's front ends hold idle
# connections for minutes, not uvicorn's default 5 seconds.
KEEP_ALIVE_S = 300
STARTUP_TIMEOUT_S = 30


def free_port() -> int:
    """A loopback port nothing listens on now, for a server another process starts a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackServer:
    """Serves ``app`` on ``host``:``port`` (0: a free port) until ``close()``."""

    def __init__(self, app: Any, what: str, host: str = "127.0.0.1", port: int = 0, *, lifespan: str = "off"):
        import uvicorn  # imported here: the services themselves need no HTTP stack

        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"{what} binds loopback addresses only, not {host!r}")
        address = "127.0.0.1" if host == "localhost" else host
        self._socket = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((address, port))
        self._socket.listen(LISTEN_BACKLOG)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{address if ':' not in address else f'[{address}]'}:{self.port}"
        config = uvicorn.Config(
            # log_config=None: leave the process's logging as it is (uvicorn's loggers propagate).
            app, lifespan=lifespan, access_log=False, log_config=None, log_level="warning", proxy_headers=False,
            server_header=False, date_header=False, backlog=LISTEN_BACKLOG, timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"{what}-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{what}'s HTTP server did not start on {address}:{self.port}")
            time.sleep(0.005)

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
