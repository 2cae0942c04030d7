"""``python -m model_server``: serve the model AIP_STORAGE_URI names, as Vertex AI runs the container.

The variables are Vertex AI's (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements):
AIP_HTTP_PORT (default 8080), AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and AIP_STORAGE_URI. The server
listens first and loads the model on a thread beside it, so the TCP liveness probe passes at once
and the health route answers 200 when the model is ready (503 before; 500 with the reason if the
load fails). SIGTERM, which Vertex sends before it stops a node, ends the server cleanly (uvicorn
finishes the requests in flight) and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

from model_server.app import ModelServerApp
from model_server.bodies import DEFAULT_MAX_INSTANCES_PER_REQUEST

DEFAULT_PORT = 8080
# The routes every uploaded model names (functions/request_bodies.py), which Vertex AI passes back
# as AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE; the same here when they are unset (`docker run IMAGE`).
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
LISTEN_BACKLOG = 128
# Vertex AI's front end keeps connections to the node open; uvicorn's default is 5 s.
KEEP_ALIVE_S = 300

log = logging.getLogger("model_server")


def settings(environ: Mapping[str, str]) -> dict:
    """The contract's variables, with their defaults; a port that is not a number is refused."""
    port = environ.get("AIP_HTTP_PORT") or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"AIP_HTTP_PORT must be a port number, not {port!r}")
    return {
        "port": int(port),
        "health_route": environ.get("AIP_HEALTH_ROUTE") or DEFAULT_HEALTH_ROUTE,
        "predict_route": environ.get("AIP_PREDICT_ROUTE") or DEFAULT_PREDICT_ROUTE,
        "storage_uri": environ.get("AIP_STORAGE_URI", ""),
    }


def _load(app: ModelServerApp, storage_uri: str) -> None:
    from model_server.artifacts import local_model_dir
    from model_server.model_loading import load_saved_model

    try:
        model = load_saved_model(storage_uri, local_model_dir)
    except Exception as exc:  # the server stays up and its health route says why
        log.error("the model at %s could not be loaded: %s", storage_uri, exc)
        app.fail(f"the model at {storage_uri} could not be loaded: {exc}")
        return
    app.serve(model.predict_instances)
    log.info("serving the model at %s", storage_uri)


def _exit_on_sigterm(signum, frame) -> None:
    log.info("stopped by SIGTERM")
    sys.exit(0)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_server", description=__doc__.split("\n\n")[0])
    # 0.0.0.0: the contract's address; tests bind the loopback address instead.
    parser.add_argument("--host", default="0.0.0.0", help="the address to listen on (default %(default)s)")
    parser.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES_PER_REQUEST,
                        help="instances one request may hold (default %(default)s); the Model's "
                             "containerSpec.args can set it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = settings(environ)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_instances < 1:
        parser.error("--max-instances must be at least 1")
    if not config["storage_uri"]:
        parser.error("AIP_STORAGE_URI is not set: it names the model's artifacts")

    import uvicorn

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, config["port"]))
    sock.listen(LISTEN_BACKLOG)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-predict")
    app = ModelServerApp(config["health_route"], config["predict_route"], executor, max_instances=args.max_instances)
    threading.Thread(target=_load, args=(app, config["storage_uri"]), name="model-load", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="off", access_log=False, log_config=None, log_level="warning", proxy_headers=False,
        server_header=False, date_header=False, backlog=LISTEN_BACKLOG, timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=10,
    ))
    log.info("listening on %s:%d (health %s, predict %s)", args.host, config["port"], config["health_route"],
             config["predict_route"])
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again for the
    # handler it found: this one ends the process with status 0, a stop Vertex asked for (the
    # default handler would end it "killed by SIGTERM", and so would a SIGTERM during start-up).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        executor.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
