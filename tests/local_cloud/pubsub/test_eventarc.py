"""Eventarc's push formats as the broker posts them, and as a real functions-framework server parses them.

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
from pathlib import Path

from local_cloud.pubsub.eventarc import PubsubMessagePublished, PushEnvelope, StorageObjectFinalized
from tests.conftest import wait_until
from tests.fakes.push_endpoint import free_port
from tests.local_cloud.pubsub.conftest import FAST_RETRY, PROJECT


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

        wait_until(lambda: process.poll() is not None or accepting(), 30, "functions-framework to listen")
        assert process.poll() is None, process.stderr.read1().decode()
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
