"""The gRPC Publisher front: the real google-cloud-pubsub client publishes to the local broker."""
from __future__ import annotations

import base64
import json

import pytest

from local_cloud.pubsub.eventarc import PubsubMessagePublished
from local_cloud.pubsub.grpc_front import serve_publisher
from tests.local_cloud.pubsub.conftest import PROJECT


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
