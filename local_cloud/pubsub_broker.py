"""An in-process Pub/Sub with Eventarc-style push delivery: the local stand-in for both services.

In the cloud a message published to a topic reaches each Cloud Function through an Eventarc trigger,
which is a Pub/Sub push subscription that POSTs a CloudEvent in binary content mode to the function.
This broker keeps the semantics the chain relies on, so that a function that survives it survives
the cloud:

- every subscription of a topic gets its own copy of each message;
- delivery is at least once, on a pool of worker threads (a slow function never blocks the others);
- a push is acknowledged by a success status (200, 201, 202, 204, as Pub/Sub push documents);
  anything else, a connection error or no answer within the ack deadline is a failed attempt;
- with `retry=True` (a function deployed with --retry) a failed attempt is redelivered after an
  exponential backoff, min_backoff * 2^(n-1) capped at max_backoff and jittered, until
  `max_delivery_attempts`; then the message goes to the dead-letter topic with the attributes
  Pub/Sub adds (CloudPubSubDeadLetterSource*) and is acknowledged on the source subscription;
- with `retry=False` (a function deployed without --retry) there is exactly one attempt.

The pushed bodies come from the shared event builders (`events.pubsub`, `events.storage`), so the
parsers the functions use are tested against the same shapes. Two local simplifications: after the
last attempt a message with no dead-letter topic is dropped (the cloud keeps retrying until the
retention period ends), and `stop` drops what is still queued (nothing is persisted).

Two test knobs exercise idempotency: `duplicate_deliveries=N` pushes every message N times at once,
and `redeliver` pushes an already acknowledged message again.

References: https://cloud.google.com/pubsub/docs/push (push body, success codes),
https://cloud.google.com/pubsub/docs/handling-failures (retry policy, dead-letter topics),
https://cloud.google.com/eventarc/docs/cloudevents (CloudEvent headers and data).
"""
from __future__ import annotations

import heapq
import json
import logging
import queue
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol, runtime_checkable
from urllib.parse import urlsplit

import urllib3
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from events.pubsub import PubsubMessage, message_published_attributes, message_published_data, push_envelope
from events.storage import finalized_event_attributes
from events.timestamps import format_rfc3339

log = logging.getLogger(__name__)

# Pub/Sub push treats these statuses as an acknowledgement and every other one as a NACK.
PUSH_SUCCESS_CODES = frozenset({200, 201, 202, 204})

# Attributes Pub/Sub adds to a message it forwards to a dead-letter topic.
DEAD_LETTER_DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
DEAD_LETTER_ERROR_MESSAGE = "CloudPubSubDeadLetterSourceDeliveryErrorMessage"
DEAD_LETTER_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
DEAD_LETTER_SUBSCRIPTION_PROJECT = "CloudPubSubDeadLetterSourceSubscriptionProject"
DEAD_LETTER_TOPIC_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"

# Limits Pub/Sub enforces on subscriptions and messages.
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100
MAX_BACKOFF_S = 600.0
MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S = 10.0, 600.0
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES = 256, 1024
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

_RESOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


class ResourceNotFound(LookupError):
    """A topic, subscription or message that the broker does not know; the text names it."""


class BrokerStopped(RuntimeError):
    """The broker was stopped and accepts no more work."""


class EventRenderError(ValueError):
    """A message that cannot be expressed in a subscription's event format (the text says why)."""


@dataclass(frozen=True)
class Message:
    """A published Pub/Sub message, as the server stores it."""

    message_id: str
    topic: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: datetime
    ordering_key: str | None = None


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


@dataclass(frozen=True)
class PushContext:
    """What a push request needs besides the message: where it comes from and which attempt it is.

    `delivery_attempt` is None unless the subscription has a dead-letter policy: Pub/Sub only
    counts (and reports) attempts then.
    """

    project: str
    subscription: str
    delivery_attempt: int | None

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"


@runtime_checkable
class EventFormat(Protocol):
    """How a message becomes the HTTP request (headers, body) that a push subscription sends."""

    def render(self, message: Message, context: PushContext) -> tuple[dict[str, str], bytes]: ...


# ---------------------------------------------------------------------------------------------
# Pure decisions and builders (tests call these directly)
# ---------------------------------------------------------------------------------------------


def validate_resource_name(kind: str, name: Any) -> str:
    """A topic or subscription id as Pub/Sub accepts it; ValueError saying what is wrong otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"{kind} name must be a string, got {type(name).__name__}")
    if not _RESOURCE_NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name[:80]!r}: 3-255 characters, starting with a letter, "
            "then letters, digits or - _ . ~ + %"
        )
    if name.lower().startswith("goog"):
        raise ValueError(f"invalid {kind} name {name!r}: names starting with 'goog' are reserved")
    return name


def validate_message(data: Any, attributes: Any, ordering_key: Any = None) -> dict[str, str]:
    """Check a message against Pub/Sub's rules and return its attributes as a plain dict."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"message data must be bytes, got {type(data).__name__}")
    attrs = {} if attributes is None else attributes
    if not isinstance(attrs, Mapping):
        raise ValueError(f"message attributes must be a mapping of str to str, got {type(attrs).__name__}")
    if len(attrs) > MAX_ATTRIBUTES:
        raise ValueError(f"a message may have at most {MAX_ATTRIBUTES} attributes, got {len(attrs)}")
    for key, value in attrs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"attribute {key!r}: keys and values must be strings")
        if not key:
            raise ValueError("attribute keys must be non-empty")
        if key.startswith("goog"):
            raise ValueError(f"attribute key {key!r}: keys starting with 'goog' are reserved")
        if len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES:
            raise ValueError(f"attribute key {key[:40]!r}... is longer than {MAX_ATTRIBUTE_KEY_BYTES} bytes")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise ValueError(f"attribute {key!r}: value is longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes")
    if not data and not attrs:
        raise ValueError("a message must have non-empty data or at least one attribute")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message data is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if ordering_key is not None and not isinstance(ordering_key, str):
        raise ValueError(f"ordering_key must be a string, got {type(ordering_key).__name__}")
    return dict(attrs)


def backoff_delay(failed_attempts: int, min_backoff_s: float, max_backoff_s: float, jitter: float) -> float:
    """Seconds to wait before the next attempt after `failed_attempts` failures.

    Exponential as Pub/Sub's retry policy: min * 2^(n-1), capped at max. `jitter` in [0, 1) stretches
    the wait by up to 20% (never below the minimum, never above the cap) so that messages failing
    together do not retry in lockstep.
    """
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be at least 1, got {failed_attempts}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    base = min(max_backoff_s, min_backoff_s * 2.0 ** (failed_attempts - 1))
    return min(max_backoff_s, base * (1.0 + 0.2 * jitter))


def dead_letter_attributes(
    message: Message, *, project: str, subscription: str, delivery_count: int, error: str | None
) -> dict[str, str]:
    """The message's attributes plus those Pub/Sub adds when it forwards it to a dead-letter topic."""
    attributes = dict(message.attributes)
    attributes[DEAD_LETTER_DELIVERY_COUNT] = str(delivery_count)
    attributes[DEAD_LETTER_SUBSCRIPTION] = subscription
    attributes[DEAD_LETTER_SUBSCRIPTION_PROJECT] = project
    attributes[DEAD_LETTER_TOPIC_PUBLISH_TIME] = format_rfc3339(message.publish_time, digits=6)
    if error:
        attributes[DEAD_LETTER_ERROR_MESSAGE] = error[:MAX_ATTRIBUTE_VALUE_BYTES]
    return attributes


def delivered_message(message: Message) -> PubsubMessage:
    """The message as a subscriber sees it (the shared builder writes id and time in both spellings)."""
    return PubsubMessage(
        data=message.data,
        attributes=dict(message.attributes),
        message_id=message.message_id,
        publish_time=format_rfc3339(message.publish_time, digits=6),
        ordering_key=message.ordering_key or "",
    )


def _binary_cloud_event(attributes: dict[str, str], data: bytes) -> tuple[dict[str, str], bytes]:
    """Headers and body of a CloudEvent in binary content mode, with the body passed through as is."""
    headers, body = to_binary(CloudEvent(attributes, data), data_marshaller=lambda raw: raw)
    headers = dict(headers)
    headers["user-agent"] = _USER_AGENT
    return headers, body


@dataclass(frozen=True)
class PubsubMessagePublished:
    """Eventarc's `google.cloud.pubsub.topic.v1.messagePublished` event for messages on `topic`."""

    topic: str

    def render(self, message: Message, context: PushContext) -> tuple[dict[str, str], bytes]:
        data = message_published_data(delivered_message(message), context.subscription_path)
        attributes = message_published_attributes(context.project, self.topic, message.message_id,
                                                  message.publish_time)
        return _binary_cloud_event(attributes, json.dumps(data).encode())


@dataclass(frozen=True)
class StorageObjectFinalized:
    """Eventarc's `google.cloud.storage.object.v1.finalized` event for objects of `bucket`.

    The message's data is the object's JSON API resource and becomes the body unchanged. Its
    attributes carry the event's `ce-id`, `ce-time` and `ce-subject`; when they are missing the
    subject comes from the resource's name, the id from the message id and the time from the
    resource's `updated` (else the publish time).
    """

    bucket: str

    def render(self, message: Message, context: PushContext) -> tuple[dict[str, str], bytes]:
        try:
            resource = json.loads(message.data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EventRenderError(f"message {message.message_id}: data is not JSON ({err})") from None
        if not isinstance(resource, dict):
            raise EventRenderError(f"message {message.message_id}: data is not a JSON object")
        if resource.get("bucket") != self.bucket:
            raise EventRenderError(
                f"message {message.message_id}: object of bucket {resource.get('bucket')!r}, "
                f"but this trigger watches bucket {self.bucket!r}"
            )
        attrs = message.attributes
        subject = attrs.get("ce-subject")
        if subject is not None and not subject.startswith("objects/"):
            raise EventRenderError(f"message {message.message_id}: ce-subject {subject!r} is not objects/NAME")
        name = subject[len("objects/"):] if subject else resource.get("name")
        if not isinstance(name, str) or not name:
            raise EventRenderError(f"message {message.message_id}: no object name (ce-subject or data.name)")
        event_time = attrs.get("ce-time") or resource.get("updated") or message.publish_time
        try:
            attributes = finalized_event_attributes(
                self.bucket, name, attrs.get("ce-id") or message.message_id, event_time
            )
        except ValueError as err:
            raise EventRenderError(f"message {message.message_id}: {err}") from None
        return _binary_cloud_event(attributes, bytes(message.data))


@dataclass(frozen=True)
class PushEnvelope:
    """A plain Pub/Sub push request: the JSON envelope, no CloudEvent headers."""

    def render(self, message: Message, context: PushContext) -> tuple[dict[str, str], bytes]:
        envelope = push_envelope(delivered_message(message), context.subscription_path, context.delivery_attempt)
        headers = {"content-type": "application/json", "user-agent": _USER_AGENT}
        return headers, json.dumps(envelope).encode()


# ---------------------------------------------------------------------------------------------
# Subscriptions and their delivery targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    acked: bool
    status_code: int | None = None
    error: str | None = None


class _PushTarget:
    """POSTs a rendered message to an HTTP endpoint; the answer decides ack or nack."""

    def __init__(self, endpoint_url: str, event_format: EventFormat, ack_deadline_s: float,
                 http: urllib3.PoolManager):
        self.endpoint_url = endpoint_url
        self.event_format = event_format
        self.timeout = urllib3.Timeout(connect=min(10.0, ack_deadline_s), read=ack_deadline_s)
        self.http = http

    def attempt(self, message: Message, context: PushContext) -> _Outcome:
        try:
            headers, body = self.event_format.render(message, context)
        except EventRenderError as err:
            return _Outcome(False, None, str(err))
        try:
            response = self.http.request(
                "POST", self.endpoint_url, body=body, headers=headers,
                timeout=self.timeout, retries=False, redirect=False,
            )
        except urllib3.exceptions.HTTPError as err:
            return _Outcome(False, None, f"push to {self.endpoint_url} failed: {err}")
        if response.status in PUSH_SUCCESS_CODES:
            return _Outcome(True, response.status)
        detail = response.data[:200].decode("utf-8", "replace").strip()
        return _Outcome(False, response.status, f"HTTP {response.status} from {self.endpoint_url}: {detail}")


class _CallbackTarget:
    """Calls a Python function in process; returning acks, raising nacks."""

    def __init__(self, fn: Callable[[Message], None]):
        self.fn = fn

    def attempt(self, message: Message, context: PushContext) -> _Outcome:
        try:
            self.fn(message)
        except Exception as err:  # a subscriber's failure is a NACK, never the broker's crash
            log.exception("subscriber %s raised on message %s", context.subscription, message.message_id)
            return _Outcome(False, None, f"{type(err).__name__}: {err}")
        return _Outcome(True)


@dataclass
class _Subscription:
    name: str
    topic: str
    target: _PushTarget | _CallbackTarget
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
        _check_endpoint(endpoint_url)
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
        target = _PushTarget(endpoint_url, event_format, float(ack_deadline_s), self._http)
        self._add_subscription(_Subscription(
            name, topic, target, bool(retry), float(min_backoff_s), float(max_backoff_s),
            max_delivery_attempts, dead_letter_topic, duplicate_deliveries,
        ))

    def subscribe_callback(self, name: str, topic: str, fn: Callable[[Message], None]) -> None:
        """An in-process subscriber: `fn(message)` for every message of `topic`, one attempt each."""
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self._add_subscription(_Subscription(name, topic, _CallbackTarget(fn)))

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


def _check_endpoint(url: Any) -> None:
    if not isinstance(url, str):
        raise ValueError(f"endpoint_url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must be an http(s) URL with a host, got {url!r}")


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
