"""The gRPC front: the real google-cloud-pubsub clients publish to, pull from and acknowledge on the local broker."""
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


def test_real_subscriber_client_pulls_acknowledges_and_releases(broker, endpoint, monkeypatch):
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    server, port = serve_publisher(broker)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
        broker.create_topic("runs-dead-letter")
        broker.subscribe_pull("dead-letters", "runs-dead-letter")
        broker.subscribe_push("start-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"),
                              retry=True, min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=7,
                              dead_letter_topic="runs-dead-letter")
        ids = [broker.publish("runs-dead-letter", f"letter-{n}".encode(), {"n": str(n)}) for n in range(3)]
        client = pubsub_v1.SubscriberClient()
        path = client.subscription_path(PROJECT, "dead-letters")

        assert client.get_subscription(subscription=path).topic == f"projects/{PROJECT}/topics/runs-dead-letter"
        push = client.get_subscription(subscription=client.subscription_path(PROJECT, "start-trigger"))
        assert push.topic == f"projects/{PROJECT}/topics/runs"
        assert push.push_config.push_endpoint == endpoint.url("/")
        assert push.dead_letter_policy.max_delivery_attempts == 7

        first = client.pull(subscription=path, max_messages=2).received_messages
        assert [m.message.message_id for m in first] == ids[:2]
        assert first[0].message.data == b"letter-0" and dict(first[0].message.attributes) == {"n": "0"}
        assert first[0].message.publish_time.timestamp() == broker.message(ids[0]).publish_time.timestamp()
        assert first[0].delivery_attempt == 1
        client.acknowledge(subscription=path, ack_ids=[first[0].ack_id])
        client.modify_ack_deadline(subscription=path, ack_ids=[first[1].ack_id], ack_deadline_seconds=0)
        rest = client.pull(subscription=path, max_messages=10).received_messages
        assert [(m.message.message_id, m.delivery_attempt) for m in rest] == [(ids[1], 2), (ids[2], 1)]
        client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in rest])
        assert client.pull(subscription=path, max_messages=10).received_messages == []

        with pytest.raises(exceptions.NotFound):
            client.pull(subscription=client.subscription_path(PROJECT, "missing"), max_messages=1)
        with pytest.raises(exceptions.NotFound):
            client.get_subscription(subscription=client.subscription_path("another-project", "dead-letters"))
        with pytest.raises(exceptions.FailedPrecondition):
            client.pull(subscription=client.subscription_path(PROJECT, "start-trigger"), max_messages=1)
        with pytest.raises(exceptions.InvalidArgument):
            client.acknowledge(subscription=path, ack_ids=["not-an-ack-id"])
        with pytest.raises(exceptions.InvalidArgument):
            client.pull(subscription="subscriptions/dead-letters", max_messages=1)
    finally:
        server.stop(0)
