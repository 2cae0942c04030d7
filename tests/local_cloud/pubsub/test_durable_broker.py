"""The broker on a store file: what a broker killed with SIGKILL leaves is carried on by the next one,
and pull subscriptions keep messages until they are acknowledged.

The crash test runs the first broker in a subprocess (tests.local_cloud.pubsub.crashing_broker),
which kills itself with SIGKILL half-way through its work; push endpoints are real HTTP servers.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest

from local_cloud.pubsub.broker import Broker, NotAPullSubscription, ResourceNotFound
from local_cloud.pubsub.eventarc import PubsubMessagePublished, PushEnvelope
from local_cloud.pubsub.retry_policy import (
    DEAD_LETTER_DELIVERY_COUNT,
    DEAD_LETTER_ERROR_MESSAGE,
    DEAD_LETTER_SUBSCRIPTION,
)
from tests.conftest import REPO
from tests.local_cloud.pubsub import crashing_broker as before
from tests.local_cloud.pubsub.conftest import PROJECT


def _crash(store) -> dict:
    """Run the broker that dies half-way on `store`; the ids of the messages it published."""
    done = subprocess.run([sys.executable, "-m", "tests.local_cloud.pubsub.crashing_broker", str(store)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    return json.loads(done.stdout)


def _resubscribe(broker: Broker, endpoint) -> None:
    """Subscribe again as the local cloud does on each start, with the new endpoint's URLs."""
    for topic in (before.RUNS, before.FINAL, before.POISON, before.DEAD_LETTER):
        broker.create_topic(topic)
    broker.subscribe_pull("dead-letters", before.DEAD_LETTER)
    broker.subscribe_push("failing-trigger", before.RUNS, endpoint.url("/fail"), event_format=PushEnvelope(),
                          min_backoff_s=0.01, max_backoff_s=0.02, **before.DEAD_LETTER_POLICY)
    broker.subscribe_push("held-trigger", before.RUNS, endpoint.url("/hold"),
                          event_format=PubsubMessagePublished(before.RUNS))
    broker.subscribe_push("ok-trigger", before.RUNS, endpoint.url("/ok"),
                          event_format=PubsubMessagePublished(before.RUNS))
    broker.subscribe_push("last-trigger", before.FINAL, endpoint.url("/last"), event_format=PushEnvelope(),
                          min_backoff_s=0.01, max_backoff_s=0.02, **before.DEAD_LETTER_POLICY)
    broker.subscribe_push("poison-trigger", before.POISON, endpoint.url("/poison"), event_format=PushEnvelope(),
                          min_backoff_s=0.01, max_backoff_s=0.02, **before.DEAD_LETTER_POLICY)


def test_a_broker_killed_mid_work_is_carried_on_by_the_next_one(tmp_path, endpoint):
    store = tmp_path / "pubsub.sqlite"
    ids = _crash(store)
    runs, late = ids["runs"], ids["late"]

    broker = Broker(PROJECT, workers=8, store=store)
    try:
        assert broker.topics() == sorted([before.RUNS, before.FINAL, before.POISON, before.DEAD_LETTER])
        _resubscribe(broker, endpoint)
        with pytest.raises(ValueError, match="already exists"):
            broker.subscribe_pull("dead-letters", before.DEAD_LETTER)
        broker.start()
        assert broker.wait_idle(10)

        def pushed(path: str) -> list[str]:
            return [r["headers"].get("ce-id") or json.loads(r["body"])["message"]["messageId"]
                    for r in endpoint.at(path)]

        # A retry waiting out its backoff at the crash: delivered, its attempts counted on (2 failed before).
        assert sorted(pushed("/fail")) == sorted(runs + late)
        attempts = {json.loads(r["body"])["message"]["messageId"]: json.loads(r["body"])["deliveryAttempt"]
                    for r in endpoint.at("/fail")}
        assert {m: attempts[m] for m in runs} == {m: 3 for m in runs}
        assert {attempts[m] for m in late} <= {1, 2}  # queued, or in flight (then counted) at the kill
        # In flight at the crash (the endpoint never answered): delivered again, that attempt counted.
        assert sorted(pushed("/hold")) == sorted(runs + late)
        held = [r for r in broker.deliveries() if r.subscription == "held-trigger" and r.message_id in runs]
        assert [(r.attempt, r.outcome) for r in held] == [(2, "acked")] * len(runs)
        # Acknowledged before the crash: not delivered again; published just before it: delivered.
        assert sorted(pushed("/ok")) == sorted(late)
        # The last allowed attempt was in flight: it counts, so the message is dead-lettered, not pushed.
        assert endpoint.at("/last") == []
        assert endpoint.at("/poison") == []

        letters = {p.message.attributes["kind"]: p for p in broker.pull("dead-letters", 10)}
        assert set(letters) == {"last", "poison"}
        last, poison = letters["last"].message, letters["poison"].message
        assert last.data == b"last chance" and poison.data == b'{"limit": "poison"}'
        assert last.attributes[DEAD_LETTER_DELIVERY_COUNT] == poison.attributes[DEAD_LETTER_DELIVERY_COUNT] == "5"
        assert last.attributes[DEAD_LETTER_SUBSCRIPTION] == "last-trigger"
        assert "process ended" in last.attributes[DEAD_LETTER_ERROR_MESSAGE]
        assert "HTTP 500" in poison.attributes[DEAD_LETTER_ERROR_MESSAGE]
        # The records of the broker that died are still there.
        outcomes = [(r.subscription, r.outcome) for r in broker.deliveries() if r.message_id == ids["poison"]]
        assert outcomes == [("poison-trigger", "retrying")] * 4 + [("poison-trigger", "dead-lettered")]
    finally:
        broker.stop(timeout=2)


# -- restarting on a store, in one process ----------------------------------------------------


def test_topics_subscriptions_and_backlog_outlive_the_broker(tmp_path, endpoint):
    store = tmp_path / "pubsub.sqlite"
    first = Broker(PROJECT, store=store)
    first.create_topic("runs")
    first.subscribe_push("start-trigger", "runs", "http://127.0.0.1:1/", event_format=PubsubMessagePublished("runs"))
    queued = first.publish("runs", b"never started")  # published, never delivered
    first.stop()

    second = Broker(PROJECT, store=store)
    try:
        assert second.has_topic("runs")
        second.create_topic("runs")
        second.create_topic("other")
        with pytest.raises(ValueError, match="exists on topic 'runs'"):
            second.subscribe_push("start-trigger", "other", endpoint.url("/"), event_format=PushEnvelope())
        assert second.subscription("start-trigger").endpoint_url == "http://127.0.0.1:1/"
        published_meanwhile = second.publish("runs", b"before the subscription is back")
        second.subscribe_push("start-trigger", "runs", endpoint.url("/"), event_format=PubsubMessagePublished("runs"))
        assert second.subscription("start-trigger").endpoint_url == endpoint.url("/")
        second.start()
        assert second.wait_idle(5)
        assert sorted(r["headers"]["ce-id"] for r in endpoint.at("/")) == sorted([queued, published_meanwhile])
        assert second.message(queued).data == b"never started"
        second.redeliver("start-trigger", queued)
        assert second.wait_idle(5)
        assert len(endpoint.at("/")) == 3
        second.delete_subscription("start-trigger")
    finally:
        second.stop()
    third = Broker(PROJECT, store=store)
    with pytest.raises(ResourceNotFound, match="no subscription 'start-trigger'"):
        third.subscription("start-trigger")
    third.stop()


def test_a_store_of_another_schema_is_refused_with_a_reason(tmp_path):
    import sqlite3

    store = tmp_path / "pubsub.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="schema 99"):
        Broker(PROJECT, store=store)
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RuntimeError, match="cannot use"):
        Broker(PROJECT, store=tmp_path / "garbage.sqlite")


# -- pull subscriptions -----------------------------------------------------------------------


def test_pull_leases_until_acknowledged_and_an_expired_lease_is_pulled_again(broker):
    broker.subscribe_pull("keep", "runs")
    ids = [broker.publish("runs", f"m{n}".encode()) for n in range(3)]
    assert broker.wait_idle(1)  # a pull subscription's backlog is not the broker's work

    first = broker.pull("keep", 2, ack_deadline_s=0.3)
    assert [p.message.message_id for p in first] == ids[:2]
    assert [p.delivery_attempt for p in first] == [1, 1]
    [third] = broker.pull("keep", 10, ack_deadline_s=30)  # the leased two are not handed out again
    assert third.message.message_id == ids[2]
    assert broker.pull("keep", 10) == []

    assert broker.acknowledge("keep", [first[0].ack_id]) == 1
    assert broker.modify_ack_deadline("keep", [third.ack_id], 0) == 1  # a nack: pullable now
    [again] = broker.pull("keep", 10, ack_deadline_s=30)
    assert again.message.message_id == ids[2] and again.delivery_attempt == 2

    time.sleep(0.35)  # the second message's lease runs out
    [expired] = broker.pull("keep", 10, ack_deadline_s=30)
    assert expired.message.message_id == ids[1] and expired.delivery_attempt == 2
    assert broker.acknowledge("keep", [first[1].ack_id]) == 0  # the old lease is gone
    assert broker.acknowledge("keep", [expired.ack_id, again.ack_id]) == 2
    assert broker.modify_ack_deadline("keep", [expired.ack_id], 0) == 0
    assert broker.pull("keep", 10) == []


def test_modify_ack_deadline_extends_a_lease(broker):
    broker.subscribe_pull("keep", "runs")
    broker.publish("runs", b"slow work")
    [leased] = broker.pull("keep", 1, ack_deadline_s=0.2)
    assert broker.modify_ack_deadline("keep", [leased.ack_id], 30) == 1
    time.sleep(0.25)
    assert broker.pull("keep", 1) == []
    assert broker.acknowledge("keep", [leased.ack_id]) == 1


def test_pull_subscriptions_keep_messages_and_leases_across_restarts(tmp_path):
    store = tmp_path / "pubsub.sqlite"
    first = Broker(PROJECT, store=store)
    first.create_topic("letters")
    first.subscribe_pull("keep", "letters")
    kept, acked, leased = (first.publish("letters", name.encode(), {"name": name})
                           for name in ("kept", "acked", "leased"))
    by_id = {p.message.message_id: p for p in first.pull("keep", 3, ack_deadline_s=30)}
    first.acknowledge("keep", [by_id[acked].ack_id])
    first.modify_ack_deadline("keep", [by_id[kept].ack_id], 0)
    first.stop()

    second = Broker(PROJECT, store=store)  # pullable before subscribe_pull is called again
    try:
        [pulled] = second.pull("keep", 10)
        assert pulled.message.message_id == kept and pulled.message.attributes == {"name": "kept"}
        assert pulled.delivery_attempt == 2
        assert second.acknowledge("keep", [by_id[leased].ack_id]) == 1  # a lease taken before the restart
        second.subscribe_pull("keep", "letters")
        assert second.acknowledge("keep", [pulled.ack_id]) == 1
        assert second.pull("keep", 10) == []
    finally:
        second.stop()


def test_pull_refuses_what_pubsub_refuses(broker, endpoint):
    broker.subscribe_pull("keep", "runs")
    broker.subscribe_push("start-trigger", "runs", endpoint.url("/"), event_format=PushEnvelope())
    with pytest.raises(ResourceNotFound, match="no subscription 'missing'"):
        broker.pull("missing")
    with pytest.raises(NotAPullSubscription, match="push subscription"):
        broker.pull("start-trigger")
    with pytest.raises(ValueError, match="invalid ack id"):
        broker.acknowledge("keep", ["made-up"])
    with pytest.raises(ValueError, match="max_messages"):
        broker.pull("keep", 0)
    with pytest.raises(ValueError, match="between 0 and 600"):
        broker.modify_ack_deadline("keep", [], 601)
    with pytest.raises(ValueError, match="ack_deadline_s must be between 10 and 600"):
        broker.subscribe_pull("short", "runs", ack_deadline_s=1)


def test_a_dead_letter_lands_in_a_pull_subscription_and_stays_until_acknowledged(broker, endpoint):
    endpoint.statuses["/"] = [500]
    broker.create_topic("runs-dead-letter")
    broker.subscribe_pull("dead-letters", "runs-dead-letter")
    broker.subscribe_push("doomed-trigger", "runs", endpoint.url("/"), event_format=PushEnvelope(),
                          retry=True, min_backoff_s=0.01, max_backoff_s=0.02, dead_letter_topic="runs-dead-letter")
    source = broker.publish("runs", b"poison", {"run_id": "r-9"})
    assert broker.wait_idle(10)

    [letter] = broker.pull("dead-letters", 10, ack_deadline_s=0.1)
    assert letter.message.data == b"poison" and letter.message.attributes["run_id"] == "r-9"
    assert json.loads(endpoint.at("/")[-1]["body"])["deliveryAttempt"] == 5
    assert base64.b64decode(json.loads(endpoint.at("/")[-1]["body"])["message"]["data"]) == b"poison"
    time.sleep(0.15)
    [again] = broker.pull("dead-letters", 10)
    assert again.message.message_id == letter.message.message_id != source
