"""The local Pub/Sub broker: fan-out, retries, dead letters, at-least-once knobs, concurrency, stopping.

Push endpoints are real HTTP servers on 127.0.0.1 (tests.fakes.push_endpoint).
"""
from __future__ import annotations

import threading

import pytest

from local_cloud.pubsub.broker import Broker, BrokerStopped, ResourceNotFound
from local_cloud.pubsub.eventarc import PubsubMessagePublished, PushEnvelope
from local_cloud.pubsub.messages import Message
from local_cloud.pubsub.retry_policy import (
    DEAD_LETTER_DELIVERY_COUNT,
    DEAD_LETTER_ERROR_MESSAGE,
    DEAD_LETTER_SUBSCRIPTION,
    DEAD_LETTER_SUBSCRIPTION_PROJECT,
    DEAD_LETTER_TOPIC_PUBLISH_TIME,
)
from tests.conftest import wait_until
from tests.fakes.push_endpoint import free_port
from tests.local_cloud.pubsub.conftest import FAST_RETRY, PROJECT


# -- fan-out ----------------------------------------------------------------------------------


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

    wait_until(lambda: len(endpoint.at("/fast")) == 4, 5, "the four fast deliveries")
    # All four slow deliveries are held, each on its own worker, while the fast ones were answered
    # (the last slow one may still be on its way to the endpoint when the fourth fast one lands).
    wait_until(lambda: endpoint.in_flight["/slow"] == 4, 5, "four slow deliveries held at once")
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
    wait_until(lambda: len(endpoint.at("/")) == 1, 5, "the first delivery")
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
    wait_until(lambda: endpoint.at("/held") and endpoint.at("/failing"), 5, "both deliveries")
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
    wait_until(lambda: len(endpoint.at("/")) == 1, 5, "the first delivery")
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
