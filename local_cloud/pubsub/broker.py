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
- with `retry=False` (a function deployed without --retry) there is exactly one attempt.

What a push carries is the subscription's event format (`local_cloud.pubsub.eventarc`). Two local
simplifications: after the last attempt a message with no dead-letter topic is dropped (the cloud
keeps retrying until the retention period ends), and `stop` drops what is still queued (nothing is
persisted).

Two test knobs exercise idempotency: `duplicate_deliveries=N` pushes every message N times at once,
and `redeliver` pushes an already acknowledged message again.

References: https://cloud.google.com/pubsub/docs/push (push body, success codes),
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import urllib3

from local_cloud.pubsub.delivery import CallbackTarget, PushTarget, check_endpoint_url
from local_cloud.pubsub.eventarc import EventFormat, PubsubMessagePublished, PushContext
from local_cloud.pubsub.messages import Message, validate_message, validate_resource_name
from local_cloud.pubsub.retry_policy import (
    MAX_BACKOFF_S,
    MAX_DELIVERY_ATTEMPTS,
    MIN_DELIVERY_ATTEMPTS,
    backoff_delay,
    dead_letter_attributes,
)

log = logging.getLogger(__name__)

# Limits Pub/Sub enforces on a push subscription's ack deadline.
MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S = 10.0, 600.0


class ResourceNotFound(LookupError):
    """A topic, subscription or message that the broker does not know; the text names it."""


class BrokerStopped(RuntimeError):
    """The broker was stopped and accepts no more work."""


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt, for tests and the local cloud's log.

    `status_code` is the HTTP status of a push, or None when there was no HTTP answer (connection
    error, ack deadline exceeded, an in-process subscriber). `outcome` is what the broker did next:
    "acked", "retrying", "dead-lettered" or "dropped" (failed with no further attempt).
    """

    subscription: str
    message_id: str
    attempt: int
    status_code: int | None
    latency_s: float
    time: datetime
    outcome: str
    error: str | None = None


@dataclass
class _Subscription:
    name: str
    topic: str
    target: PushTarget | CallbackTarget
    retry: bool = False
    min_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_delivery_attempts: int = 5
    dead_letter_topic: str | None = None
    duplicate_deliveries: int = 1
    received: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Task:
    subscription: _Subscription
    message: Message
    attempt: int


# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------


class Broker:
    """Topics, subscriptions and push delivery in one process; every public method is thread-safe."""

    def __init__(self, project: str = "local-project", *, workers: int = 8):
        if not isinstance(project, str) or not re.match(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$", project):
            raise ValueError(f"invalid project id {project!r}: 6-30 lowercase letters, digits or hyphens")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.project = project
        self.workers = workers
        self._cond = threading.Condition(threading.RLock())
        self._topics: dict[str, list[_Subscription]] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._messages: dict[str, Message] = {}
        self._records: list[DeliveryRecord] = []
        self._outstanding = 0  # tasks queued, waiting for a retry, or being delivered
        self._retry_heap: list[tuple[float, int, _Task]] = []
        self._sequence = 0
        # Numeric ids like the service's, rising across broker restarts (microseconds at start).
        self._next_id = time.time_ns() // 1000
        self._ready: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._state = "new"
        self._rng = random.Random()
        self._http = urllib3.PoolManager(num_pools=32, maxsize=workers, block=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery workers; messages published before this are delivered now."""
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
        """Stop accepting messages, let deliveries in progress finish (up to `timeout`), drop the rest.

        Retries not yet due are dropped, as when the process goes away.
        """
        with self._cond:
            if self._state == "stopped":
                return
            was_started = self._state == "started"
            self._state = "stopped"
            self._outstanding -= len(self._retry_heap)
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
        """True once nothing is queued, waiting for a retry or being delivered; False at timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    # -- topics and subscriptions ------------------------------------------------------------

    def create_topic(self, topic: str) -> None:
        """Create `topic`; creating an existing topic does nothing."""
        validate_resource_name("topic", topic)
        with self._cond:
            self._topics.setdefault(topic, [])

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
        """A push subscription (an Eventarc trigger) that POSTs each message of `topic` to `endpoint_url`."""
        check_endpoint_url(endpoint_url)
        if not isinstance(event_format, EventFormat):
            raise ValueError(f"event_format must have a render(message, context) method, got {event_format!r}")
        if isinstance(event_format, PubsubMessagePublished) and event_format.topic != topic:
            raise ValueError(
                f"subscription {name!r} is on topic {topic!r} but its event format names topic "
                f"{event_format.topic!r}"
            )
        if not MIN_ACK_DEADLINE_S <= ack_deadline_s <= MAX_ACK_DEADLINE_S:
            raise ValueError(
                f"ack_deadline_s must be between {MIN_ACK_DEADLINE_S:g} and {MAX_ACK_DEADLINE_S:g} "
                f"(Pub/Sub's limits), got {ack_deadline_s}"
            )
        target = PushTarget(endpoint_url, event_format, float(ack_deadline_s), self._http)
        self._add_subscription(_Subscription(
            name, topic, target, bool(retry), float(min_backoff_s), float(max_backoff_s),
            max_delivery_attempts, dead_letter_topic, duplicate_deliveries,
        ))

    def subscribe_callback(self, name: str, topic: str, fn: Callable[[Message], None]) -> None:
        """An in-process subscriber: `fn(message)` for every message of `topic`, one attempt each."""
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self._add_subscription(_Subscription(name, topic, CallbackTarget(fn)))

    def _add_subscription(self, sub: _Subscription) -> None:
        validate_resource_name("subscription", sub.name)
        _check_retry_policy(sub, self.workers)
        with self._cond:
            if sub.name in self._subscriptions:
                raise ValueError(f"subscription {sub.name!r} already exists")
            if sub.topic not in self._topics:
                raise ResourceNotFound(f"cannot subscribe {sub.name!r}: topic {sub.topic!r} does not exist")
            if sub.dead_letter_topic is not None and sub.dead_letter_topic not in self._topics:
                raise ResourceNotFound(
                    f"cannot subscribe {sub.name!r}: dead-letter topic {sub.dead_letter_topic!r} does not exist"
                )
            self._subscriptions[sub.name] = sub
            self._topics[sub.topic].append(sub)

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
            message_id = str(self._next_id)
            self._next_id += 1
            message = Message(message_id, topic, bytes(data), attrs, datetime.now(timezone.utc), ordering_key or None)
            self._messages[message_id] = message
            tasks = []
            for sub in self._topics[topic]:
                sub.received.add(message_id)
                tasks.extend(_Task(sub, message, 1) for _ in range(sub.duplicate_deliveries))
            self._outstanding += len(tasks)
        for task in tasks:
            self._ready.put(task)
        return message_id

    def redeliver(self, subscription: str, message_id: str) -> None:
        """Deliver a message the subscription already received once more, as Pub/Sub may at any time."""
        with self._cond:
            sub = self._subscriptions.get(subscription)
            if sub is None:
                raise ResourceNotFound(f"no subscription {subscription!r}")
            if message_id not in sub.received:
                raise ResourceNotFound(f"subscription {subscription!r} never received message {message_id!r}")
            if self._state == "stopped":
                raise BrokerStopped("cannot redeliver: the broker is stopped")
            self._outstanding += 1
            task = _Task(sub, self._messages[message_id], 1)
        self._ready.put(task)

    def deliveries(self) -> list[DeliveryRecord]:
        """Every delivery attempt so far, in the order they finished."""
        with self._cond:
            return list(self._records)

    def message(self, message_id: str) -> Message:
        """A published message by id, as stored (to inspect what a delivery carried)."""
        with self._cond:
            if message_id not in self._messages:
                raise ResourceNotFound(f"no message {message_id!r}")
            return self._messages[message_id]

    def _work(self) -> None:
        while True:
            task = self._ready.get()
            if task is None:
                return
            try:
                if self._state == "started":  # after stop, queued deliveries are dropped
                    self._deliver(task)
            except Exception:  # keep the worker alive whatever happens; the task is still accounted
                log.exception("delivery of message %s failed unexpectedly", task.message.message_id)
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def _deliver(self, task: _Task) -> None:
        sub, message = task.subscription, task.message
        context = PushContext(self.project, sub.name, task.attempt if sub.dead_letter_topic else None)
        started_at = datetime.now(timezone.utc)
        clock = time.perf_counter()
        outcome = sub.target.attempt(message, context)
        latency = time.perf_counter() - clock
        if outcome.acked:
            next_step = "acked"
        elif sub.retry and task.attempt < sub.max_delivery_attempts:
            next_step = "retrying"
        elif sub.retry and sub.dead_letter_topic is not None:
            next_step = "dead-lettered"
        else:
            next_step = "dropped"
        record = DeliveryRecord(sub.name, message.message_id, task.attempt, outcome.status_code,
                                latency, started_at, next_step, outcome.error)
        with self._cond:
            self._records.append(record)
        if not outcome.acked:
            log.warning("delivery %d of message %s to %s failed (%s): %s",
                        task.attempt, message.message_id, sub.name, next_step, outcome.error)
        if next_step == "retrying":
            delay = backoff_delay(task.attempt, sub.min_backoff_s, sub.max_backoff_s, self._rng.random())
            self._schedule(_Task(sub, message, task.attempt + 1), delay)
        elif next_step == "dead-lettered":
            attributes = dead_letter_attributes(message, project=self.project, subscription=sub.name,
                                                delivery_count=task.attempt, error=outcome.error)
            try:
                self.publish(sub.dead_letter_topic, message.data, attributes, ordering_key=message.ordering_key)
            except BrokerStopped:
                log.warning("message %s not dead-lettered: the broker is stopping", message.message_id)

    def _drop_ready_tasks(self) -> None:
        dropped = 0
        while True:
            try:
                task = self._ready.get_nowait()
            except queue.Empty:
                break
            dropped += task is not None
        with self._cond:
            self._outstanding -= dropped
            self._cond.notify_all()

    def _schedule(self, task: _Task, delay_s: float) -> None:
        with self._cond:
            if self._state == "stopped":
                return
            self._sequence += 1
            heapq.heappush(self._retry_heap, (time.monotonic() + delay_s, self._sequence, task))
            self._outstanding += 1
            self._cond.notify_all()

    def _schedule_retries(self) -> None:
        """Move retries whose backoff has elapsed to the ready queue."""
        with self._cond:
            while self._state == "started":
                if not self._retry_heap:
                    self._cond.wait()
                    continue
                due = self._retry_heap[0][0] - time.monotonic()
                if due > 0:
                    self._cond.wait(due)
                    continue
                _, _, task = heapq.heappop(self._retry_heap)
                self._ready.put(task)


def _check_retry_policy(sub: _Subscription, workers: int) -> None:
    if not 0.0 <= sub.min_backoff_s <= sub.max_backoff_s <= MAX_BACKOFF_S:
        raise ValueError(
            f"subscription {sub.name!r}: need 0 <= min_backoff_s <= max_backoff_s <= {MAX_BACKOFF_S:g}, "
            f"got {sub.min_backoff_s} and {sub.max_backoff_s}"
        )
    attempts = sub.max_delivery_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not (
        MIN_DELIVERY_ATTEMPTS <= attempts <= MAX_DELIVERY_ATTEMPTS
    ):
        raise ValueError(
            f"subscription {sub.name!r}: max_delivery_attempts must be an integer between "
            f"{MIN_DELIVERY_ATTEMPTS} and {MAX_DELIVERY_ATTEMPTS}, as Pub/Sub requires; got {attempts!r}"
        )
    if sub.dead_letter_topic is not None:
        if not sub.retry:
            raise ValueError(
                f"subscription {sub.name!r}: a dead-letter topic needs retry=True; without retry a failed "
                "delivery is acknowledged after one attempt and never dead-lettered"
            )
        if sub.dead_letter_topic == sub.topic:
            raise ValueError(f"subscription {sub.name!r}: the dead-letter topic cannot be its own topic")
    dupes = sub.duplicate_deliveries
    if isinstance(dupes, bool) or not isinstance(dupes, int) or not 1 <= dupes <= workers:
        raise ValueError(
            f"subscription {sub.name!r}: duplicate_deliveries must be between 1 and the broker's "
            f"{workers} workers (so the copies run at once), got {dupes!r}"
        )
