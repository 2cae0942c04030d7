"""`mlrelay console`: a small read-only web app over the pipeline bucket, like TensorBoard over a log dir.

Flask, because it is installed already (functions-framework is built on it, so it is pinned in
constraints.txt with werkzeug) and it gives what a hand-written WSGI app would have to redo:
routing with HEAD answered from GET, 404 and 405 pages, and a test client. It is served by
werkzeug's threaded server, which the command and the tests start and stop the same way.

Read-only by construction: it has only GET routes, reads the bucket through the run store and
never writes. Any other method is answered 405, OPTIONS included. It listens on loopback unless
told otherwise with --allow-remote, since it shows every run of the bucket to whoever can reach it,
with the credentials of whoever started it; on loopback it also answers only requests whose Host
is a loopback name, so that a web page the user visits cannot read it through DNS rebinding.
"""
from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Any, Callable

from functions.run_store import RunStore
from mlrelay.console.pages import NAV, error_page, not_found_page, runs_page
from mlrelay.report import NoSuchRun, render_report
from mlrelay.report.page import CSP

DEFAULT_PORT = 8642
ALLOWED_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = ("localhost",)
HEADERS = {
    "Content-Security-Policy": CSP,  # the pages' own policy, also as a header: nothing is fetched
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # runs move on; a reload shows where they are now
}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name of a Host header, without its port: `[::1]:8642` is `::1`, `localhost:80` is `localhost`."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_host(host: str, allow_remote: bool) -> None:
    """ValueError for a non-loopback --host without --allow-remote."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"--host {host} is not a loopback address: the console shows every run of the bucket, without "
            "authentication, to whoever can reach it; pass --allow-remote to serve it there anyway")


def create_app(runs: RunStore, *, bucket_label: str | None = None, allow_remote: bool = False,
               dead_letters: Callable[[], list[dict]] | None = None):
    """The console's WSGI app over one run store."""
    from flask import Flask, Response, request

    app = Flask(__name__)
    label = bucket_label or f"gs://{runs.bucket}"

    def html(body: str, status: int = 200) -> Response:
        return Response(body, status=status, mimetype="text/html", headers=HEADERS)

    @app.before_request
    def guard() -> Any:
        if not allow_remote and not is_loopback(_host_name(request.host)):
            return html(error_page(400, "this console answers only requests to a loopback host name"), 400)
        if request.method not in ALLOWED_METHODS:
            response = html(error_page(405, f"{request.method} is not allowed: the console is read-only"), 405)
            response.headers["Allow"] = ", ".join(ALLOWED_METHODS)
            return response
        return None

    @app.get("/", provide_automatic_options=False)
    def index() -> Response:
        return html(runs_page(runs, label, dead_letters() if dead_letters else None))

    @app.get("/runs/<run_id>", provide_automatic_options=False)
    def run(run_id: str) -> Response:
        try:
            return html(render_report(runs, run_id, nav=NAV))
        except NoSuchRun as exc:
            return html(not_found_page(str(exc)), 404)

    @app.errorhandler(404)
    def not_found(_error: Any) -> Response:
        return html(not_found_page(f"nothing at {request.path}"), 404)

    @app.errorhandler(500)
    def failed(error: Any) -> Response:
        cause = getattr(error, "original_exception", None) or error
        return html(error_page(500, f"reading the bucket failed: {type(cause).__name__}: {cause}"), 500)

    return app


def local_dead_letters(state_dir) -> Callable[[], list[dict]]:
    """The local cloud's dead letters as the console lists them, read from its Pub/Sub store
    without a pull (a pull leases them: not read-only)."""
    from pathlib import Path

    from functions.config import Config
    from local_cloud.cloud import FUNCTIONS
    from local_cloud.pubsub.store import peek
    from mlrelay.dead_letters import DeadLetter, function_of

    def read() -> list[dict]:
        letters = []
        for message, _attempts, _error in peek(Path(state_dir) / "pubsub.sqlite", Config().dead_letter_subscription):
            letter = DeadLetter(message.message_id, "", message.data, dict(message.attributes), message.publish_time,
                                function_of(dict(message.attributes), FUNCTIONS))
            letters.append(letter.to_dict())
        return letters
    return read


class Console:
    """The app on a threaded werkzeug server: `serve_forever` for the command, `start`/`stop` for tests."""

    def __init__(self, runs: RunStore, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 allow_remote: bool = False, bucket_label: str | None = None, quiet: bool = False,
                 dead_letters: Callable[[], list[dict]] | None = None):
        from werkzeug.serving import make_server

        check_host(host, allow_remote)
        if quiet:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server(host, port, create_app(runs, bucket_label=bucket_label, allow_remote=allow_remote,
                                                         dead_letters=dead_letters), threaded=True)
        self.thread = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def start(self) -> "Console":
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, name="mlrelay-console", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)


def serve(runs: RunStore, host: str, port: int, *, allow_remote: bool, bucket_label: str,
          dead_letters: Callable[[], list[dict]] | None = None) -> int:
    """`mlrelay console`: serve until Ctrl-C."""
    console = Console(runs, host, port, allow_remote=allow_remote, bucket_label=bucket_label,
                      dead_letters=dead_letters)
    print(f"mlrelay console on {console.url} reading {bucket_label} (read-only); Ctrl-C stops", flush=True)
    try:
        console.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        console.server.server_close()
        print("console stopped", file=sys.stderr)
    return 0
