"""The local Pub/Sub broker: fan-out, push formats, retries, dead letters, concurrency, the gRPC front.

Push endpoints are real HTTP servers on 127.0.0.1; one test runs a real functions-framework server
to show that what the broker sends is what a deployed CloudEvent function parses.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from local_cloud.pubsub_broker import (
    DEAD_LETTER_DELIVERY_COUNT,
    DEAD_LETTER_ERROR_MESSAGE,
    DEAD_LETTER_SUBSCRIPTION,
    DEAD_LETTER_SUBSCRIPTION_PROJECT,
    DEAD_LETTER_TOPIC_PUBLISH_TIME,
    Broker,
    BrokerStopped,
    Message,
    PubsubMessagePublished,
    PushEnvelope,
    ResourceNotFound,
    StorageObjectFinalized,
    backoff_delay,
)
from local_cloud.pubsub_grpc import serve_publisher

PROJECT = "mlrelay-local"
FAST_RETRY = {"retry": True, "min_backoff_s": 0.01, "max_backoff_s": 0.02}


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


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def broker():
    instance = Broker(PROJECT, workers=8)
    instance.create_topic("runs")
    instance.start()
    yield instance
    instance.stop(timeout=2)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fan-out and formats ----------------------------------------------------------------------


def test_every_subscription_of_a_topic_gets_a_copy(broker, endpoint):
    seen_in_process: list[Message] = []
    broker.subscribe_push("trigger-a", "runs", endpoint.url("/a"), event_format=PubsubMessagePublished("runs"))
    broker.subscribe_push("trigger-b", "runs", endpoint.url("/b"), event_format=PubsubMessagePublished("runs"))
    broker.subscribe_callback("ledger-tap", "runs", seen_in_process.append)
    broker.create_topic("other")
    broker.subscribe_push("unrelated", "other", endpoint.url("/c"), event_format=PushEnvelope())

    ids = [broker.publish("runs", f"run-{n}".encode()) for n in range(3)]
    assert broker.wait_idle(5)

    for path in ("/a", "/b"):
        assert sorted(r["headers"]["ce-id"] for r in endpoint.at(path)) == sorted(ids)
    assert sorted(m.message_id for m in seen_in_process) == sorted(ids)
    assert endpoint.at("/c") == []
    assert {(d.subscription, d.outcome) for d in broker.deliveries()} == {
        ("trigger-a", "acked"), ("trigger-b", "acked"), ("ledger-tap", "acked")
    }
    assert len(broker.deliveries()) == 9


def test_message_published_event_is_what_eventarc_posts(broker, endpoint):
    broker.subscribe_push("start-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
    payload = b'{"run_id": "r-1", "rows": 5000}'
    message_id = broker.publish("runs", payload, {"origin": "scheduler"}, ordering_key="r-1")
    assert broker.wait_idle(5)

    [request] = endpoint.at("/")
    headers, body = request["headers"], json.loads(request["body"])
    assert headers["ce-type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert headers["ce-source"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/runs"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == message_id
    assert headers["content-type"] == "application/json"
    message = body["message"]
    assert base64.b64decode(message["data"]) == payload
    assert message["attributes"] == {"origin": "scheduler"}
    assert message["messageId"] == message["message_id"] == message_id
    assert message["publishTime"] == message["publish_time"] == headers["ce-time"]
    assert message["orderingKey"] == "r-1"
    assert body["subscription"] == f"projects/{PROJECT}/subscriptions/start-trigger"
    assert headers["ce-time"] == broker.message(message_id).publish_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_storage_finalized_event_carries_the_object_resource_unchanged(broker, endpoint):
    broker.create_topic("bucket-events")
    broker.subscribe_push("preprocess-trigger", "bucket-events", endpoint.url("/"),
                          event_format=StorageObjectFinalized("pipeline-bucket"))
    resource = {"kind": "storage#object", "bucket": "pipeline-bucket", "name": "runs/r1/preprocess/_MANIFEST.json",
                "generation": "1700000000000001", "size": "42", "updated": "2026-01-02T03:04:05.678Z"}
    data = json.dumps(resource, indent=1).encode()
    attributes = {"ce-id": "pipeline-bucket/runs/r1/preprocess/_MANIFEST.json/1700000000000001",
                  "ce-time": "2026-01-02T03:04:05.678Z", "ce-subject": "objects/runs/r1/preprocess/_MANIFEST.json"}
    broker.publish("bucket-events", data, attributes)
    assert broker.wait_idle(5)

    [request] = endpoint.at("/")
    headers = request["headers"]
    assert request["body"] == data
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/pipeline-bucket"
    assert headers["ce-subject"] == "objects/runs/r1/preprocess/_MANIFEST.json"
    assert headers["ce-id"] == attributes["ce-id"]
    assert headers["ce-time"].startswith("2026-01-02T03:04:05.678")
    assert headers["content-type"] == "application/json"


def test_storage_event_for_another_bucket_is_never_posted(broker, endpoint):
    broker.create_topic("bucket-events")
    broker.subscribe_push("preprocess-trigger", "bucket-events", endpoint.url("/"),
                          event_format=StorageObjectFinalized("pipeline-bucket"))
    broker.publish("bucket-events", json.dumps({"bucket": "elsewhere", "name": "x.csv"}).encode())
    assert broker.wait_idle(5)
    assert endpoint.at("/") == []
    [record] = broker.deliveries()
    assert record.outcome == "dropped" and "elsewhere" in record.error


def test_push_envelope_is_a_plain_pubsub_push(broker, endpoint):
    endpoint.statuses["/counted"] = [500, 204]
    broker.create_topic("runs-dead-letter")
    broker.subscribe_push("plain-push", "runs", endpoint.url("/"), event_format=PushEnvelope())
    broker.subscribe_push("counted-push", "runs", endpoint.url("/counted"), event_format=PushEnvelope(),
                          dead_letter_topic="runs-dead-letter", **FAST_RETRY)
    message_id = broker.publish("runs", b"", {"only": "attributes"})
    assert broker.wait_idle(5)

    [request] = endpoint.at("/")
    assert not any(name.startswith("ce-") for name in request["headers"])
    body = json.loads(request["body"])
    assert body["message"]["attributes"] == {"only": "attributes"}
    assert base64.b64decode(body["message"]["data"]) == b""
    assert body["message"]["messageId"] == message_id
    assert body["subscription"] == f"projects/{PROJECT}/subscriptions/plain-push"
    assert "deliveryAttempt" not in body  # only reported under a dead-letter policy
    counted = [json.loads(r["body"])["deliveryAttempt"] for r in endpoint.at("/counted")]
    assert counted == [1, 2]


# -- acknowledgement, retry, dead letter ------------------------------------------------------


def test_retry_backs_off_exponentially_then_succeeds(broker, endpoint):
    endpoint.statuses["/"] = [500, 503, 429, 200]
    broker.subscribe_push("flaky-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"),
                          retry=True, min_backoff_s=0.05, max_backoff_s=0.5)
    message_id = broker.publish("runs", b"work")
    assert broker.wait_idle(10)

    requests = endpoint.at("/")
    assert [r["headers"]["ce-id"] for r in requests] == [message_id] * 4
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(requests, requests[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.10 and gaps[2] >= 0.20  # min * 2^(n-1)
    records = broker.deliveries()
    assert [(r.attempt, r.status_code, r.outcome) for r in records] == [
        (1, 500, "retrying"), (2, 503, "retrying"), (3, 429, "retrying"), (4, 200, "acked")
    ]


def test_backoff_doubles_from_the_minimum_up_to_the_cap():
    assert [backoff_delay(n, 0.5, 10.0, 0.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = [backoff_delay(3, 0.5, 10.0, j) for j in (0.0, 0.5, 0.999)]
    assert jittered[0] == 2.0 and 2.0 < jittered[1] < jittered[2] <= 2.4
    assert backoff_delay(5, 0.5, 9.0, 0.999) == 9.0
    with pytest.raises(ValueError, match="failed_attempts"):
        backoff_delay(0, 0.5, 10.0, 0.0)


def test_dead_letter_after_max_attempts_with_pubsub_attributes(broker, endpoint):
    endpoint.statuses["/"] = [500]
    dead: list[Message] = []
    broker.create_topic("runs-dead-letter")
    broker.subscribe_callback("dead-letter-log", "runs-dead-letter", dead.append)
    broker.subscribe_push("doomed-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"),
                          max_delivery_attempts=5, dead_letter_topic="runs-dead-letter", **FAST_RETRY)
    message_id = broker.publish("runs", b"poison", {"run_id": "r-9"})
    assert broker.wait_idle(10)

    assert len(endpoint.at("/")) == 5
    source_records = [r for r in broker.deliveries() if r.subscription == "doomed-trigger"]
    assert [r.outcome for r in source_records] == ["retrying"] * 4 + ["dead-lettered"]
    [forwarded] = dead
    assert forwarded.data == b"poison"
    assert forwarded.message_id != message_id
    original = broker.message(message_id)
    assert forwarded.attributes["run_id"] == "r-9"
    assert forwarded.attributes[DEAD_LETTER_DELIVERY_COUNT] == "5"
    assert forwarded.attributes[DEAD_LETTER_SUBSCRIPTION] == "doomed-trigger"
    assert forwarded.attributes[DEAD_LETTER_SUBSCRIPTION_PROJECT] == PROJECT
    assert forwarded.attributes[DEAD_LETTER_TOPIC_PUBLISH_TIME].startswith(
        original.publish_time.strftime("%Y-%m-%dT%H:%M:%S"))
    assert "500" in forwarded.attributes[DEAD_LETTER_ERROR_MESSAGE]


def test_without_retry_a_failed_delivery_gets_one_attempt(broker, endpoint):
    endpoint.statuses["/"] = [500]
    failures: list[str] = []

    def failing_subscriber(message: Message) -> None:
        failures.append(message.message_id)
        raise RuntimeError("transient")

    broker.subscribe_push("no-retry-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
    broker.subscribe_push("nobody-home", "runs", f"http://127.0.0.1:{free_port()}/",
                          event_format=PubsubMessagePublished("runs"))
    broker.subscribe_callback("failing-tap", "runs", failing_subscriber)
    broker.publish("runs", b"once")
    assert broker.wait_idle(5)  # nothing left waiting for a retry

    assert len(endpoint.at("/")) == 1
    assert len(failures) == 1
    by_subscription = {r.subscription: r for r in broker.deliveries()}
    assert len(broker.deliveries()) == 3
    assert by_subscription["no-retry-trigger"].status_code == 500
    assert by_subscription["nobody-home"].status_code is None
    assert "refused" in by_subscription["nobody-home"].error.lower()
    assert by_subscription["failing-tap"].error == "RuntimeError: transient"
    assert {r.outcome for r in broker.deliveries()} == {"dropped"}


# -- at-least-once knobs ----------------------------------------------------------------------


def test_duplicate_deliveries_arrive_at_the_same_time(broker, endpoint):
    endpoint.delays["/"] = 0.3
    broker.subscribe_push("dup-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"),
                          duplicate_deliveries=3)
    message_id = broker.publish("runs", b"twice or more")
    assert broker.wait_idle(5)

    requests = endpoint.at("/")
    assert [r["headers"]["ce-id"] for r in requests] == [message_id] * 3
    assert len({r["body"] for r in requests}) == 1
    assert endpoint.max_in_flight["/"] == 3


def test_redeliver_pushes_an_acked_message_again(broker, endpoint):
    broker.subscribe_push("again-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
    message_id = broker.publish("runs", b"replay me")
    assert broker.wait_idle(5)
    broker.redeliver("again-trigger", message_id)
    assert broker.wait_idle(5)

    first, second = endpoint.at("/")
    assert first["body"] == second["body"]
    assert first["headers"]["ce-id"] == second["headers"]["ce-id"] == message_id
    with pytest.raises(ResourceNotFound, match="never received"):
        broker.redeliver("again-trigger", "12345")
    with pytest.raises(ResourceNotFound, match="no subscription"):
        broker.redeliver("missing-trigger", message_id)


# -- concurrency, idleness, stopping ----------------------------------------------------------


def test_a_slow_function_does_not_block_another_subscription(broker, endpoint):
    endpoint.holds["/slow"] = threading.Event()
    broker.subscribe_push("slow-trigger", "runs", endpoint.url("/slow"), event_format=PubsubMessagePublished("runs"))
    broker.subscribe_push("fast-trigger", "runs", endpoint.url("/fast"), event_format=PubsubMessagePublished("runs"))
    for n in range(4):
        broker.publish("runs", f"m{n}".encode())

    assert wait_until(lambda: len(endpoint.at("/fast")) == 4)
    # All four slow deliveries are held, each on its own worker, while the fast ones were answered
    # (the last slow one may still be on its way to the endpoint when the fourth fast one lands).
    assert wait_until(lambda: endpoint.in_flight["/slow"] == 4)
    assert not endpoint.holds["/slow"].is_set()
    assert broker.wait_idle(0.2) is False
    endpoint.holds["/slow"].set()
    assert broker.wait_idle(5) is True
    assert len(endpoint.at("/slow")) == 4


def test_wait_idle_counts_a_pending_retry(broker, endpoint):
    endpoint.statuses["/"] = [500, 200]
    broker.subscribe_push("later-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"),
                          retry=True, min_backoff_s=0.4, max_backoff_s=1.0)
    broker.publish("runs", b"soon")
    assert wait_until(lambda: len(endpoint.at("/")) == 1)
    assert broker.wait_idle(0.1) is False  # the second attempt is waiting out its backoff
    assert broker.wait_idle(5) is True
    assert [r.outcome for r in broker.deliveries()] == ["retrying", "acked"]


def test_stop_finishes_deliveries_in_progress_and_drops_pending_retries(endpoint):
    broker = Broker(PROJECT, workers=2)
    broker.create_topic("runs")
    endpoint.statuses["/failing"] = [500]
    endpoint.holds["/held"] = threading.Event()
    broker.subscribe_push("held-trigger", "runs", endpoint.url("/held"), event_format=PubsubMessagePublished("runs"))
    broker.subscribe_push("failing-trigger", "runs", endpoint.url("/failing"),
                          event_format=PubsubMessagePublished("runs"), retry=True, min_backoff_s=30, max_backoff_s=60)
    broker.start()
    broker.publish("runs", b"last")
    assert wait_until(lambda: endpoint.at("/held") and endpoint.at("/failing"))
    threading.Timer(0.2, endpoint.holds["/held"].set).start()

    broker.stop(timeout=5)

    outcomes = {r.subscription: r.outcome for r in broker.deliveries()}
    assert outcomes == {"held-trigger": "acked", "failing-trigger": "retrying"}
    assert broker.wait_idle(0) is True  # the retry due in 30 s was dropped
    assert len(endpoint.at("/failing")) == 1
    with pytest.raises(BrokerStopped):
        broker.publish("runs", b"too late")


def test_stop_drops_deliveries_still_waiting_for_a_worker(endpoint):
    broker = Broker(PROJECT, workers=1)
    broker.create_topic("runs")
    endpoint.holds["/"] = threading.Event()
    broker.subscribe_push("busy-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
    broker.start()
    for n in range(3):
        broker.publish("runs", f"m{n}".encode())
    assert wait_until(lambda: len(endpoint.at("/")) == 1)
    threading.Timer(0.2, endpoint.holds["/"].set).start()

    broker.stop(timeout=5)

    assert len(endpoint.at("/")) == 1
    assert [r.outcome for r in broker.deliveries()] == ["acked"]
    assert broker.wait_idle(0) is True


# -- clear errors on bad input ----------------------------------------------------------------


def test_bad_requests_get_clear_errors(broker, endpoint):
    fmt = PubsubMessagePublished("runs")
    with pytest.raises(ResourceNotFound, match="topic 'nope' does not exist"):
        broker.publish("nope", b"x")
    with pytest.raises(ValueError, match="must be bytes"):
        broker.publish("runs", "text, not bytes")
    with pytest.raises(ValueError, match="non-empty data or at least one attribute"):
        broker.publish("runs", b"")
    with pytest.raises(ValueError, match="keys and values must be strings"):
        broker.publish("runs", b"x", {"count": 3})
    with pytest.raises(ResourceNotFound, match="topic 'nope' does not exist"):
        broker.subscribe_push("some-trigger", "nope", endpoint.url("/"), event_format=PushEnvelope())
    with pytest.raises(ValueError, match="invalid subscription name"):
        broker.subscribe_push("x", "runs", endpoint.url("/"), event_format=fmt)
    with pytest.raises(ValueError, match="http"):
        broker.subscribe_push("some-trigger", "runs", "localhost:8080", event_format=fmt)
    with pytest.raises(ValueError, match="names topic 'other'"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("other"))
    with pytest.raises(ValueError, match="max_delivery_attempts must be an integer between 5 and 100"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=fmt, retry=True,
                              max_delivery_attempts=3)
    with pytest.raises(ValueError, match="needs retry=True"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=fmt, dead_letter_topic="runs")
    with pytest.raises(ValueError, match="duplicate_deliveries"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=fmt, duplicate_deliveries=9)
    with pytest.raises(ValueError, match="render"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format="json")
    broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=fmt)
    with pytest.raises(ValueError, match="already exists"):
        broker.subscribe_push("some-trigger", "runs", endpoint.url("/"), event_format=fmt)


# -- the real client through the gRPC front ---------------------------------------------------


def test_real_publisher_client_publishes_through_the_grpc_front(broker, endpoint, monkeypatch):
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    server, port = serve_publisher(broker)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
        broker.subscribe_push("start-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
        client = pubsub_v1.PublisherClient()
        topic = client.topic_path(PROJECT, "runs")

        message_id = client.publish(topic, b'{"run": 1}', origin="cli").result(timeout=10)
        assert broker.wait_idle(5)
        [request] = endpoint.at("/")
        assert request["headers"]["ce-id"] == message_id
        body = json.loads(request["body"])
        assert base64.b64decode(body["message"]["data"]) == b'{"run": 1}'
        assert body["message"]["attributes"] == {"origin": "cli"}

        assert client.get_topic(topic=topic).name == topic
        with pytest.raises(exceptions.AlreadyExists):
            client.create_topic(name=topic)
        client.create_topic(name=client.topic_path(PROJECT, "job-events"))
        assert broker.has_topic("job-events")
        with pytest.raises(exceptions.NotFound):
            client.publish(client.topic_path(PROJECT, "missing"), b"x").result(timeout=10)
        with pytest.raises(exceptions.NotFound):
            client.get_topic(topic=client.topic_path("another-project", "runs"))
    finally:
        server.stop(0)


def test_grpc_front_refuses_non_loopback_addresses(broker):
    with pytest.raises(ValueError, match="loopback"):
        serve_publisher(broker, host="0.0.0.0")


# -- a real functions-framework server --------------------------------------------------------

RECEIVER = '''
import json, os, pathlib
import functions_framework

@functions_framework.cloud_event
def receive(cloud_event):
    record = {key: cloud_event[key] for key in ("type", "source", "id", "time", "specversion")}
    record["subject"] = cloud_event.get("subject")
    record["data"] = cloud_event.data
    out = pathlib.Path(os.environ["EVENTS_DIR"]) / (cloud_event["type"] + ".json")
    out.write_text(json.dumps(record))
'''


def test_functions_framework_parses_what_the_broker_posts(broker, tmp_path):
    source = tmp_path / "main.py"
    source.write_text(textwrap.dedent(RECEIVER))
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    port = free_port()
    cli = Path(sys.executable).with_name("functions-framework")
    process = subprocess.Popen(
        [str(cli), "--target", "receive", "--source", str(source), "--signature-type", "cloudevent",
         "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "EVENTS_DIR": str(events_dir)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def accepting() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        assert wait_until(accepting, timeout=30), process.stderr.read1().decode() if process.poll() else ""
        url = f"http://127.0.0.1:{port}/"
        broker.create_topic("bucket-events")
        broker.subscribe_push("start-trigger", "runs", url, event_format=PubsubMessagePublished("runs"))
        broker.subscribe_push("object-trigger", "bucket-events", url,
                              event_format=StorageObjectFinalized("pipe-bucket"))
        message_id = broker.publish("runs", b'{"rows": 100}', {"origin": "test"})
        resource = {"bucket": "pipe-bucket", "name": "triggers/go.json", "generation": "7"}
        broker.publish("bucket-events", json.dumps(resource).encode(),
                       {"ce-id": "object-event-1", "ce-time": "2026-05-06T07:08:09.123Z",
                        "ce-subject": "objects/triggers/go.json"})
        assert broker.wait_idle(15)
        assert {r.outcome for r in broker.deliveries()} == {"acked"}

        published = json.loads((events_dir / "google.cloud.pubsub.topic.v1.messagePublished.json").read_text())
        assert published["source"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/runs"
        assert published["id"] == message_id
        assert base64.b64decode(published["data"]["message"]["data"]) == b'{"rows": 100}'
        assert published["data"]["message"]["attributes"] == {"origin": "test"}

        finalized = json.loads((events_dir / "google.cloud.storage.object.v1.finalized.json").read_text())
        assert finalized["source"] == "//storage.googleapis.com/projects/_/buckets/pipe-bucket"
        assert finalized["subject"] == "objects/triggers/go.json"
        assert finalized["id"] == "object-event-1"
        assert finalized["data"] == resource
    finally:
        process.terminate()
        process.wait(10)
