"""An in-process Pub/Sub with Eventarc-style push delivery: the local stand-in for both services.

The broker keeps the semantics the chain relies on, so that a function that survives it survives
the cloud:

- every subscription of a topic gets its own copy of each message;
- delivery is at least once, on a pool of worker threads (a slow function never blocks the others);
- a push is acknowledged by a success status; anything else, a connection error or no answer
  within the ack deadline is a failed attempt (`local_cloud.pubsub.delivery`);
- with `retry=True` (a function deployed with --retry) a failed attempt is redelivered after an
  exponential backoff, min_backoff * 2^(n-1) capped at max_backoff and jittered, until
  `max_delivery_attempts`; then the message goes to the dead-letter topic with the attributes
  Pub/Sub adds (CloudPubSubDeadLetterSource*) and is acknowledged on the source subscription
  (`local_cloud.pubsub.retry_policy`);
- with `retry=False` (a function deployed without --retry) there is one attempt;
- a pull subscription keeps each message until it is acknowledged: `pull` leases messages for an
  ack deadline, `acknowledge` ends them, `modify_ack_deadline` moves a lease's end (0 releases it
  now), and a message whose lease runs out can be pulled again, its delivery attempt counted.

Durability. With `store` (a SQLite file, see `local_cloud.pubsub.store` for why WAL with
synchronous=NORMAL) the topics, the subscriptions' settings, the messages, each subscription's
unacknowledged messages (attempts so far, when the next is due, the last error, pull leases) and the
delivery records are on disk. A broker started on the file after the previous one was killed
(kill -9 included) carries on where it stopped:

- creating a topic the file holds does nothing;
- subscribing a subscription the file holds re-attaches it, with the new endpoint and settings
  (ports change across restarts); until then its backlog waits, and messages published meanwhile
  join it (a pull subscription needs no re-attaching: it can be pulled from at once);
- every message not acknowledged before the crash is delivered: queued ones, retries (after what
  is left of their backoff) and those in flight. An attempt in flight at the crash counts, as an
  attempt Pub/Sub gets no answer to does, so the attempt count carries on and a message whose last
  attempt was cut short goes to the dead-letter topic.

Without `store` the same state lives in memory and goes with the broker.

What a push carries is the subscription's event format (`local_cloud.pubsub.eventarc`). Local
simplifications: after the last attempt a message with no dead-letter topic is dropped (the cloud
keeps retrying until the retention period ends); with retry=False a message whose one attempt was
cut short by a crash is pushed again (at least once); `stop` leaves queued messages in the store
for the next broker (without a store they are gone).

Two test knobs exercise idempotency: `duplicate_deliveries=N` pushes every message N times at once
(N copies, each retried on its own), and `redeliver` delivers an already acknowledged message again.

References: https://cloud.google.com/pubsub/docs/push (push body, success codes),
https://cloud.google.com/pubsub/docs/pull (leases, ack deadlines),
https://cloud.google.com/pubsub/docs/handling-failures (retry policy, dead-letter topics).
"""
from __future__ import annotations

import heapq
import logging
import queue
import random
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

import urllib3

from local_cloud.pubsub.delivery import (
    CallbackTarget,
    DeliveryOutcome,
    DeliveryRecord,
    PushTarget,
    check_endpoint_url,
)
from local_cloud.pubsub.eventarc import EventFormat, PubsubMessagePublished, PushContext
from local_cloud.pubsub.messages import Message, validate_message, validate_resource_name
from local_cloud.pubsub.retry_policy import backoff_delay, dead_letter_attributes
from local_cloud.pubsub.store import BrokerStore, RowKey
from local_cloud.pubsub.subscriptions import (
    MAX_ACK_DEADLINE_S,
    MIN_ACK_DEADLINE_S,
    Subscription,
    SubscriptionInfo,
    check_ack_deadline,
    check_ack_ids,
    check_retry_policy,
    is_number,
)

__all__ = ["Broker", "BrokerStopped", "DeliveryRecord", "NotAPullSubscription", "PulledMessage", "ResourceNotFound",
           "SubscriptionInfo"]

log = logging.getLogger(__name__)

# The last error of an attempt that was in flight when the broker's process ended.
CUT_SHORT = "no answer: the broker's process ended during this delivery attempt"


class ResourceNotFound(LookupError):
    """A topic, subscription or message that the broker does not know; the text names it."""


class BrokerStopped(RuntimeError):
    """The broker was stopped and accepts no more work."""


class NotAPullSubscription(ValueError):
    """A pull, ack or lease change on a subscription whose messages the broker delivers itself."""


class PulledMessage(NamedTuple):
    """A message leased by `pull`: acknowledge it with `ack_id` before the lease ends."""

    ack_id: str
    message: Message
    delivery_attempt: int


# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------


class Broker:
    """Topics, subscriptions, push delivery and pull leases; every public method is thread-safe.

    `store` is a SQLite file that keeps the broker's state across processes (None: in memory).
    The store stays readable after `stop` (deliveries, message).
    """

    def __init__(self, project: str = "local-project", *, workers: int = 8, store: str | Path | None = None):
        if not isinstance(project, str) or not re.match(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$", project):
            raise ValueError(f"invalid project id {project!r}: 6-30 lowercase letters, digits or hyphens")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if store is not None and not isinstance(store, (str, Path)):
            raise ValueError(f"store must be a file path or None, got {type(store).__name__}")
        self.project = project
        self.workers = workers
        self._cond = threading.Condition(threading.RLock())
        self._store = BrokerStore(store)
        self._topics: dict[str, list[str]] = {topic: [] for topic in self._store.topics()}
        self._subscriptions: dict[str, Subscription] = {}
        for stored in self._store.subscriptions():
            self._subscriptions[stored.name] = Subscription.from_store(stored)
            self._topics[stored.topic].append(stored.name)
        cut_short = self._store.release_in_flight(CUT_SHORT)
        if cut_short:
            log.warning("%d deliveries were in flight when the last broker on %s ended; they are due again",
                        cut_short, store)
        self._subscribed: set[str] = set()  # subscribed by this broker (a second subscribe is an error)
        self._scheduled: set[RowKey] = set()  # backlog rows with a delivery queued, waiting or running
        self._outstanding = 0  # deliveries queued, waiting for a retry, or being delivered
        self._retry_heap: list[tuple[float, int, RowKey]] = []
        self._sequence = 0
        # Numeric ids like the service's, rising across restarts (microseconds, or past the last one).
        self._next_seq = max(time.time_ns() // 1000, self._store.last_seq() + 1)
        self._ready: queue.SimpleQueue[RowKey | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._state = "new"
        self._rng = random.Random()
        self._http = urllib3.PoolManager(num_pools=32, maxsize=workers, block=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery workers; messages published or subscribed before this are delivered now."""
        with self._cond:
            if self._state == "started":
                return
            if self._state == "stopped":
                raise BrokerStopped("a stopped broker cannot be started again; create a new one")
            self._state = "started"
            for index in range(self.workers):
                worker = threading.Thread(target=self._work, name=f"pubsub-push-{index}", daemon=True)
                self._threads.append(worker)
            self._threads.append(threading.Thread(target=self._schedule_retries, name="pubsub-retry", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting messages, let deliveries in progress finish (up to `timeout`), leave the rest.

        Queued deliveries and retries not yet due stay in the store for the next broker (without a
        store they are dropped, as when the process goes away).
        """
        with self._cond:
            if self._state == "stopped":
                return
            was_started = self._state == "started"
            self._state = "stopped"
            self._outstanding -= len(self._retry_heap)
            self._scheduled.difference_update(key for _, _, key in self._retry_heap)
            self._retry_heap.clear()
            self._cond.notify_all()
        if not was_started:
            self._drop_ready_tasks()
        else:
            for _ in range(self.workers):
                self._ready.put(None)
            deadline = time.monotonic() + timeout
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [thread.name for thread in self._threads if thread.is_alive()]
            if stuck:
                log.warning("broker stopped with deliveries still running in %s", ", ".join(stuck))
        self._http.clear()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued, waiting for a retry or being delivered; False at timeout.

        Messages waiting in a pull subscription are not the broker's work: they do not count.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    # -- topics and subscriptions ------------------------------------------------------------

    def create_topic(self, topic: str) -> None:
        """Create `topic`; creating an existing topic does nothing."""
        validate_resource_name("topic", topic)
        with self._cond:
            if topic not in self._topics:
                self._store.add_topic(topic)
                self._topics[topic] = []

    def has_topic(self, topic: str) -> bool:
        """Whether `topic` exists (the gRPC front answers GetTopic and CreateTopic with it)."""
        with self._cond:
            return topic in self._topics

    def topics(self) -> list[str]:
        """The topic names, sorted, for status pages and logs."""
        with self._cond:
            return sorted(self._topics)

    def subscribe_push(
        self,
        name: str,
        topic: str,
        endpoint_url: str,
        *,
        event_format: EventFormat,
        retry: bool = False,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_delivery_attempts: int = 5,
        dead_letter_topic: str | None = None,
        ack_deadline_s: float = 600.0,
        duplicate_deliveries: int = 1,
    ) -> None:
        """A push subscription (an Eventarc trigger) that POSTs each message of `topic` to `endpoint_url`.

        A subscription the store already holds is re-attached with these settings, its backlog
        delivered from `start`.
        """
        check_endpoint_url(endpoint_url)
        if not isinstance(event_format, EventFormat):
            raise ValueError(f"event_format must have a render(message, context) method, got {event_format!r}")
        if isinstance(event_format, PubsubMessagePublished) and event_format.topic != topic:
            raise ValueError(
                f"subscription {name!r} is on topic {topic!r} but its event format names topic "
                f"{event_format.topic!r}"
            )
        check_ack_deadline(ack_deadline_s)
        target = PushTarget(endpoint_url, event_format, float(ack_deadline_s), self._http)
        self._add_subscription(Subscription(
            name, topic, "push", target, endpoint_url, bool(retry), float(min_backoff_s), float(max_backoff_s),
            max_delivery_attempts, dead_letter_topic, duplicate_deliveries, float(ack_deadline_s),
        ))

    def subscribe_callback(self, name: str, topic: str, fn: Callable[[Message], None]) -> None:
        """An in-process subscriber: `fn(message)` for every message of `topic`, one attempt each."""
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self._add_subscription(Subscription(name, topic, "callback", CallbackTarget(fn)))

    def subscribe_pull(self, name: str, topic: str, *, ack_deadline_s: float = MIN_ACK_DEADLINE_S) -> None:
        """A pull subscription: it keeps every message of `topic` until a subscriber acknowledges it.

        `ack_deadline_s` is how long a `pull` leases a message unless the pull says otherwise
        (Pub/Sub's default, 10 s).
        """
        check_ack_deadline(ack_deadline_s)
        self._add_subscription(Subscription(name, topic, "pull", ack_deadline_s=float(ack_deadline_s)))

    def delete_subscription(self, name: str) -> None:
        """Delete a subscription and its backlog (a store keeps a subscription until it is deleted)."""
        with self._cond:
            sub = self._known_subscription(name)
            with self._store.transaction():
                self._store.delete_subscription(name)
            del self._subscriptions[name]
            self._topics[sub.topic].remove(name)
            self._subscribed.discard(name)

    def subscription(self, name: str) -> SubscriptionInfo:
        """A subscription's topic and settings (GetSubscription); ResourceNotFound if there is none."""
        with self._cond:
            return self._known_subscription(name).info()

    def _add_subscription(self, sub: Subscription) -> None:
        validate_resource_name("subscription", sub.name)
        check_retry_policy(sub, self.workers)
        with self._cond:
            if sub.name in self._subscribed:
                raise ValueError(f"subscription {sub.name!r} already exists")
            if sub.topic not in self._topics:
                raise ResourceNotFound(f"cannot subscribe {sub.name!r}: topic {sub.topic!r} does not exist")
            if sub.dead_letter_topic is not None and sub.dead_letter_topic not in self._topics:
                raise ResourceNotFound(
                    f"cannot subscribe {sub.name!r}: dead-letter topic {sub.dead_letter_topic!r} does not exist"
                )
            kept = self._subscriptions.get(sub.name)
            if kept is not None and kept.topic != sub.topic:
                raise ValueError(
                    f"subscription {sub.name!r} exists on topic {kept.topic!r}, not {sub.topic!r} (Pub/Sub never "
                    f"moves a subscription to another topic); name it differently, or remove {self._store.path}"
                )
            sub.first_seq = kept.first_seq if kept is not None else self._next_seq
            self._store.put_subscription(sub.stored())
            self._subscriptions[sub.name] = sub
            if kept is None:
                self._topics[sub.topic].append(sub.name)
            self._subscribed.add(sub.name)
            if sub.delivered_here:
                for row in self._store.rows(sub.name):
                    self._enqueue(row.key, row.due)

    def _known_subscription(self, name: str) -> Subscription:
        sub = self._subscriptions.get(name)
        if sub is None:
            raise ResourceNotFound(f"no subscription {name!r}")
        return sub

    # -- publishing and delivery -------------------------------------------------------------

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None,
                *, ordering_key: str | None = None) -> str:
        """Publish one message to every subscription of `topic`; returns its message id."""
        attrs = validate_message(data, attributes, ordering_key)
        with self._cond:
            if self._state == "stopped":
                raise BrokerStopped(f"cannot publish to {topic!r}: the broker is stopped")
            if topic not in self._topics:
                raise ResourceNotFound(f"cannot publish: topic {topic!r} does not exist in project {self.project!r}")
            with self._store.transaction():
                return self._publish_locked(topic, bytes(data), attrs, ordering_key or None)

    def _publish_locked(self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str | None) -> str:
        seq = self._next_seq
        self._next_seq += 1
        message = Message(str(seq), topic, data, attributes, datetime.now(timezone.utc), ordering_key)
        subs = [self._subscriptions[name] for name in self._topics[topic]]
        copies = [(sub.name, copy) for sub in subs for copy in range(sub.copies)]
        self._store.add_message(seq, message, copies)
        for sub in subs:
            if sub.delivered_here:
                for copy in range(sub.copies):
                    self._enqueue((sub.name, seq, copy), 0.0)
        return message.message_id

    def redeliver(self, subscription: str, message_id: str) -> None:
        """Deliver a message the subscription already received once more, as Pub/Sub may at any time."""
        with self._cond:
            sub = self._known_subscription(subscription)
            message = self._stored_message(message_id)
            if message is None or message.topic != sub.topic or int(message_id) < sub.first_seq:
                raise ResourceNotFound(f"subscription {subscription!r} never received message {message_id!r}")
            if self._state == "stopped":
                raise BrokerStopped("cannot redeliver: the broker is stopped")
            seq = int(message_id)
            copy = self._store.add_copy(subscription, seq)
            if sub.delivered_here:
                self._enqueue((subscription, seq, copy), 0.0)

    def deliveries(self) -> list[DeliveryRecord]:
        """Every delivery attempt so far (those of earlier brokers on the store too), in the order they finished."""
        with self._cond:
            return self._store.records()

    def message(self, message_id: str) -> Message:
        """A published message by id, as stored (to inspect what a delivery carried)."""
        with self._cond:
            message = self._stored_message(message_id)
        if message is None:
            raise ResourceNotFound(f"no message {message_id!r}")
        return message

    def _stored_message(self, message_id: object) -> Message | None:
        if not isinstance(message_id, str) or not message_id.isdigit():
            return None
        return self._store.message(int(message_id))

    def _enqueue(self, key: RowKey, due: float) -> None:
        """Queue a delivery of a backlog row (at wall-clock time `due`) unless one is already on its way."""
        if self._state == "stopped" or key in self._scheduled:
            return
        self._scheduled.add(key)
        self._outstanding += 1
        if due <= time.time():
            self._ready.put(key)
        else:
            self._push_retry(key, due)

    def _push_retry(self, key: RowKey, due: float) -> None:
        self._sequence += 1
        heapq.heappush(self._retry_heap, (due, self._sequence, key))
        self._cond.notify_all()

    def _work(self) -> None:
        while True:
            key = self._ready.get()
            if key is None:
                return
            retrying = False
            try:
                if self._state == "started":  # after stop, queued deliveries are left in the store
                    retrying = self._attempt(key)
            except Exception:  # keep the worker alive whatever happens; the task is still accounted
                log.exception("delivery of message %s to %s failed unexpectedly", key[1], key[0])
            finally:
                with self._cond:
                    if not retrying:
                        self._scheduled.discard(key)
                    self._outstanding -= 1
                    self._cond.notify_all()

    def _attempt(self, key: RowKey) -> bool:
        """One delivery of a backlog row; True when a retry of it is scheduled."""
        with self._cond:
            sub = self._subscriptions.get(key[0])
            row = self._store.row(key)
            message = self._store.message(key[1]) if row is not None else None
            if sub is None or not sub.delivered_here or row is None or message is None:
                return False
            if sub.retry and row.attempts >= sub.max_delivery_attempts:
                # The last attempt was cut short when the broker's process ended: settle it now.
                outcome = DeliveryOutcome(False, None, row.last_error or CUT_SHORT)
                return self._settle(sub, message, key, row.attempts, outcome, datetime.now(timezone.utc), 0.0)
            attempt = row.attempts + 1
            self._store.begin_attempt(key, attempt)
        context = PushContext(self.project, sub.name, attempt if sub.dead_letter_topic else None)
        started_at = datetime.now(timezone.utc)
        clock = time.perf_counter()
        outcome = sub.target.attempt(message, context)
        latency = time.perf_counter() - clock
        with self._cond:
            return self._settle(sub, message, key, attempt, outcome, started_at, latency)

    def _settle(self, sub: Subscription, message: Message, key: RowKey, attempt: int, outcome: DeliveryOutcome,
                started_at: datetime, latency: float) -> bool:
        """Record an attempt and act on it in one transaction; True when a retry is scheduled."""
        if outcome.acked:
            next_step = "acked"
        elif sub.retry and attempt < sub.max_delivery_attempts:
            next_step = "retrying"
        elif sub.retry and sub.dead_letter_topic is not None:
            next_step = "dead-lettered"
        else:
            next_step = "dropped"
        due = None
        with self._store.transaction():
            self._store.add_record(DeliveryRecord(sub.name, message.message_id, attempt, outcome.status_code, latency,
                                                  started_at, next_step, outcome.error))
            if next_step == "retrying":
                due = time.time() + backoff_delay(attempt, sub.min_backoff_s, sub.max_backoff_s, self._rng.random())
                self._store.retry_later(key, due, outcome.error)
            else:
                self._store.remove(key)
            if next_step == "dead-lettered":
                attributes = dead_letter_attributes(message, project=self.project, subscription=sub.name,
                                                    delivery_count=attempt, error=outcome.error)
                self._publish_locked(sub.dead_letter_topic, message.data, attributes, message.ordering_key)
        if not outcome.acked:
            log.warning("delivery %d of message %s to %s failed (%s): %s",
                        attempt, message.message_id, sub.name, next_step, outcome.error)
        if due is None or self._state == "stopped":
            return False  # a retry after stop waits in the store for the next broker
        self._outstanding += 1
        self._push_retry(key, due)
        return True

    def _drop_ready_tasks(self) -> None:
        dropped = []
        while True:
            try:
                key = self._ready.get_nowait()
            except queue.Empty:
                break
            if key is not None:
                dropped.append(key)
        with self._cond:
            self._outstanding -= len(dropped)
            self._scheduled.difference_update(dropped)
            self._cond.notify_all()

    def _schedule_retries(self) -> None:
        """Move retries whose backoff has elapsed to the ready queue."""
        with self._cond:
            while self._state == "started":
                if not self._retry_heap:
                    self._cond.wait()
                    continue
                due = self._retry_heap[0][0] - time.time()
                if due > 0:
                    self._cond.wait(due)
                    continue
                _, _, key = heapq.heappop(self._retry_heap)
                self._ready.put(key)

    # -- pull subscriptions ------------------------------------------------------------------

    def pull(self, subscription: str, max_messages: int = 100,
             ack_deadline_s: float | None = None) -> list[PulledMessage]:
        """Lease up to `max_messages` messages of a pull subscription for `ack_deadline_s` seconds.

        Messages already leased are not returned until their lease ends; each lease counts as a
        delivery attempt. None: the subscription's ack deadline. May return fewer messages than
        wait, or none.
        """
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise ValueError(f"max_messages must be a positive integer, got {max_messages!r}")
        if ack_deadline_s is not None and not is_number(ack_deadline_s, 0.0, MAX_ACK_DEADLINE_S, low_open=True):
            raise ValueError(f"ack_deadline_s must be in (0, {MAX_ACK_DEADLINE_S:g}], got {ack_deadline_s!r}")
        with self._cond:
            sub = self._pull_subscription(subscription)
            now = time.time()
            until = now + (sub.ack_deadline_s if ack_deadline_s is None else float(ack_deadline_s))
            with self._store.transaction():
                leases = self._store.lease(subscription, max_messages, now, until)
            return [PulledMessage(lease.ack_id, self._store.message(lease.seq), lease.delivery_attempt)
                    for lease in leases]

    def acknowledge(self, subscription: str, ack_ids: list[str]) -> int:
        """End the leases `ack_ids`: their messages leave the subscription. Returns how many did.

        An ack id whose lease ran out and was given to another pull, or was acknowledged already,
        is ignored, as Pub/Sub does; a string that was never an ack id is a ValueError.
        """
        ack_ids = check_ack_ids(ack_ids)
        with self._cond:
            self._pull_subscription(subscription)
            with self._store.transaction():
                return self._store.acknowledge(subscription, ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: float) -> int:
        """Let the leases `ack_ids` end `seconds` from now; 0 releases them now (a nack).

        Returns how many leases were changed (those that ended already are ignored).
        """
        ack_ids = check_ack_ids(ack_ids)
        if not is_number(seconds, 0.0, MAX_ACK_DEADLINE_S):
            raise ValueError(f"the ack deadline must be between 0 and {MAX_ACK_DEADLINE_S:g} seconds, got {seconds!r}")
        with self._cond:
            self._pull_subscription(subscription)
            due = None if seconds == 0 else time.time() + float(seconds)
            with self._store.transaction():
                return self._store.extend(subscription, ack_ids, due)

    def _pull_subscription(self, name: str) -> Subscription:
        if self._state == "stopped":
            raise BrokerStopped("the broker is stopped")
        sub = self._known_subscription(name)
        if sub.kind != "pull":
            raise NotAPullSubscription(f"subscription {name!r} is a {sub.kind} subscription: its messages are "
                                       "delivered, not pulled")
        return sub

