"""A durable broker that gets some work half done, then dies by SIGKILL: the "before" of the crash test.

Run as `python -m tests.local_cloud.pubsub.crashing_broker STORE`. It serves its own push
endpoints, so they die with it, and leaves behind, for the test to find on STORE:

- `runs` messages that failing-trigger failed twice (a retry waiting out a 1 s backoff), that
  held-trigger has in flight (its endpoint never answers), and that ok-trigger acknowledged;
- a `final` message that last-trigger failed four times, its fifth and last attempt in flight;
- a `poison` message already dead-lettered (by poison-trigger) into the pull subscription
  `dead-letters`;
- `late` messages published just before the kill, queued or in flight.

It prints the message ids as one JSON line, then kills itself with SIGKILL.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_cloud.pubsub.broker import Broker
from local_cloud.pubsub.eventarc import PubsubMessagePublished, PushEnvelope

PROJECT = "mlrelay-local"
RUNS, FINAL, POISON, DEAD_LETTER = "runs", "final", "poison", "runs-dead-letter"
RUNS_MESSAGES, LATE_MESSAGES = 4, 2
DEAD_LETTER_POLICY = {"retry": True, "max_delivery_attempts": 5, "dead_letter_topic": DEAD_LETTER}


class _Endpoints:
    """/fail answers 500, /hold never answers, /ok answers 204, /last answers 500 four times then hangs."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        lock = threading.Lock()
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    seen = endpoints.counts[self.path] = endpoints.counts.get(self.path, 0) + 1
                if self.path == "/hold" or (self.path == "/last" and seen > 4):
                    time.sleep(3600)
                self.send_response(204 if self.path == "/ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"


def _wait(predicate, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def main(store: str) -> None:
    endpoints = _Endpoints()
    broker = Broker(PROJECT, workers=8, store=store)
    for topic in (RUNS, FINAL, POISON, DEAD_LETTER):
        broker.create_topic(topic)
    broker.subscribe_pull("dead-letters", DEAD_LETTER)
    broker.subscribe_push("failing-trigger", RUNS, endpoints.url("/fail"), event_format=PushEnvelope(),
                          min_backoff_s=1.0, max_backoff_s=1.0, **DEAD_LETTER_POLICY)
    broker.subscribe_push("held-trigger", RUNS, endpoints.url("/hold"), event_format=PubsubMessagePublished(RUNS))
    broker.subscribe_push("ok-trigger", RUNS, endpoints.url("/ok"), event_format=PubsubMessagePublished(RUNS))
    broker.subscribe_push("last-trigger", FINAL, endpoints.url("/last"), event_format=PushEnvelope(),
                          min_backoff_s=0.02, max_backoff_s=0.02, **DEAD_LETTER_POLICY)
    broker.subscribe_push("poison-trigger", POISON, endpoints.url("/fail"), event_format=PushEnvelope(),
                          min_backoff_s=0.0, max_backoff_s=0.0, **DEAD_LETTER_POLICY)
    broker.start()
    runs = [broker.publish(RUNS, f"run-{n}".encode(), {"n": str(n)}) for n in range(RUNS_MESSAGES)]
    last = broker.publish(FINAL, b"last chance", {"kind": "last"})
    poison = broker.publish(POISON, b'{"limit": "poison"}', {"kind": "poison"})

    def settled() -> bool:
        records = broker.deliveries()
        failed_twice = all(sum(r.subscription == "failing-trigger" and r.message_id == m for r in records) == 2
                           for m in runs)
        acked = {r.message_id for r in records if r.subscription == "ok-trigger" and r.outcome == "acked"}
        dead = any(r.subscription == "poison-trigger" and r.outcome == "dead-lettered" for r in records)
        return (failed_twice and acked == set(runs) and dead and endpoints.counts.get("/hold") == RUNS_MESSAGES
                and endpoints.counts.get("/last") == 5)

    _wait(settled, "the work to be half done")
    late = [broker.publish(RUNS, f"late-{n}".encode()) for n in range(LATE_MESSAGES)]
    print(json.dumps({"runs": runs, "last": last, "poison": poison, "late": late}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the failed deliveries are the point, not news
    main(sys.argv[1])
