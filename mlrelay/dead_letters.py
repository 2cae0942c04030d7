"""`mlrelay dead-letters`: the events that failed every delivery attempt, listed and replayed.

Pub/Sub forwards an event that a function failed `max_delivery_attempts` times to the dead-letter
topic, where a pull subscription (DEAD_LETTER_SUBSCRIPTION; deploy.sh and the local cloud create
it) keeps it. Both commands talk to it through google-cloud-pubsub's SubscriberClient and
PublisherClient, one code path for the cloud (`--project`) and the local cloud (the caller sets
PUBSUB_EMULATOR_HOST to the local cloud's Pub/Sub first).

`list` pulls every dead letter without acknowledging it, then releases the leases (an ack deadline
of 0), so listing changes nothing. A pull may return fewer messages than wait, so it pulls until a
pull brings nothing new, extending the leases it holds meanwhile so that none comes back twice.

`replay` publishes a dead letter's data and attributes, without the CloudPubSubDeadLetter* ones
Pub/Sub added, to the topic of the subscription it came from (GetSubscription), then acknowledges
it. The replayed event is a new message (a new message id). Replaying an event whose work is
already done must do nothing harmful: that rests on the functions' idempotency (create-only
markers, deterministic job names, the run ledger), not on this command. An ordering key is not
carried over (the chain publishes none).

Reference: https://cloud.google.com/pubsub/docs/handling-failures (the attributes of a forwarded
message; the error message attribute is not always there, so it is shown as "not kept").
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from functions.config import Config

DEAD_LETTER_SUBSCRIPTION = Config.dead_letter_subscription  # deploy.sh's and the local cloud's
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
ERROR_MESSAGE = "CloudPubSubDeadLetterSourceDeliveryErrorMessage"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
SOURCE_PROJECT = "CloudPubSubDeadLetterSourceSubscriptionProject"
SOURCE_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"

PULL_BATCH = 100
PULL_TIMEOUT_S = 15.0  # a pull of an empty subscription may wait on the service; stop waiting then
LEASE_S = 120  # how long a listed dead letter stays hidden from other pulls while this command runs
MAX_EVENT_CHARS = 2000


class DeadLetterNotFound(LookupError):
    """No dead letter has the id asked for."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered event as pulled: the forwarded message and what Pub/Sub added to it."""

    id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    dead_lettered_at: datetime
    function: str  # the function whose trigger it failed on (see function_of)

    @property
    def source_subscription(self) -> str:
        return self.attributes.get(SOURCE_SUBSCRIPTION, "").rsplit("/", 1)[-1]

    @property
    def source_project(self) -> str | None:
        name = self.attributes.get(SOURCE_SUBSCRIPTION, "")
        if name.startswith("projects/"):
            return name.split("/")[1]
        return self.attributes.get(SOURCE_PROJECT)

    @property
    def attempts(self) -> int | None:
        count = self.attributes.get(DELIVERY_COUNT, "")
        return int(count) if count.isdigit() else None

    @property
    def last_error(self) -> str | None:
        return self.attributes.get(ERROR_MESSAGE) or None

    @property
    def publish_time(self) -> str:
        """When the original event was published (else when it was dead-lettered), RFC 3339."""
        return self.attributes.get(SOURCE_PUBLISH_TIME) or self.dead_lettered_at.isoformat().replace("+00:00", "Z")

    def original_attributes(self) -> dict[str, str]:
        return {k: v for k, v in self.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "function": self.function, "attempts": self.attempts, "last_error": self.last_error,
            "source_subscription": self.source_subscription or None, "source_project": self.source_project,
            "publish_time": self.publish_time,
            "dead_lettered_at": self.dead_lettered_at.isoformat().replace("+00:00", "Z"),
            "attributes": self.original_attributes(), "event": decode_event(self.data),
        }


def function_of(attributes: dict[str, str], functions: Iterable[str]) -> str:
    """The entry point a dead letter's source subscription delivers to, or the subscription's name if
    none fits ("unknown" if the attributes name none).

    Eventarc names a trigger's subscription after the trigger, and the trigger after the function:
    locally `eventarc-start-pipeline`, in the cloud `eventarc-REGION-mlrelay-start-pipeline-NNN-sub-NNN`.
    """
    subscription = attributes.get(SOURCE_SUBSCRIPTION, "").rsplit("/", 1)[-1]
    for name in functions:
        if name.replace("_", "-") in subscription:
            return name
    return subscription or "unknown"


def decode_event(data: bytes) -> dict[str, Any]:
    """What a dead letter carried: a storage object (bucket, object, generation), else the Pub/Sub data."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        text = repr(data[:120]) + (f" ... ({len(data)} bytes)" if len(data) > 120 else "")
        return {"type": "pubsub", "text": text}
    if (isinstance(parsed, dict) and isinstance(parsed.get("bucket"), str) and isinstance(parsed.get("name"), str)
            and (parsed.get("kind") == "storage#object" or "generation" in parsed)):
        return {"type": "storage", "bucket": parsed["bucket"], "object": parsed["name"],
                "generation": parsed.get("generation")}
    return {"type": "pubsub", "json": parsed}


def format_dead_letters(letters: list[DeadLetter], subscription_path: str) -> str:
    """The dead letters as text blocks: a heading line each, then where it came from and what it was."""
    if not letters:
        return f"no dead letters in {subscription_path}"
    lines = [f"{len(letters)} dead letter{'s' if len(letters) > 1 else ''} in {subscription_path}"]
    for letter in letters:
        attempts = "?" if letter.attempts is None else str(letter.attempts)
        lines += ["", f"{letter.id}  {letter.function}  {attempts} attempts  published {letter.publish_time}",
                  f"  source subscription: {letter.source_subscription or 'unknown'}",
                  f"  last error: {letter.last_error or 'not kept'}",
                  f"  event: {_event_text(decode_event(letter.data))}"]
    return "\n".join(lines)


def _event_text(event: dict[str, Any]) -> str:
    if event["type"] == "storage":
        return f"gs://{event['bucket']}/{event['object']} (generation {event['generation']})"
    if "text" in event:
        return event["text"]
    text = json.dumps(event["json"], indent=2, sort_keys=True)
    if len(text) > MAX_EVENT_CHARS:
        text = text[:MAX_EVENT_CHARS] + f"\n... ({len(text) - MAX_EVENT_CHARS} more characters)"
    return text.replace("\n", "\n    ")


class DeadLetterBox:
    """The dead-letter subscription of one project, through the real client library.

    Holds the leases of what it pulled; `release` hands back every one not acknowledged.
    """

    def __init__(self, project: str, subscription: str = DEAD_LETTER_SUBSCRIPTION,
                 functions: Iterable[str] = ()):
        from google.cloud import pubsub_v1

        self.project = project
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient()
        self.path = self.subscriber.subscription_path(project, subscription)
        self.functions = tuple(functions)
        self._held: set[str] = set()
        self._topics: dict[str, str] = {}

    def pull_all(self) -> list[DeadLetter]:
        """Every dead letter, leased (not acknowledged), oldest first."""
        from google.api_core import exceptions

        letters: dict[str, DeadLetter] = {}
        while True:
            try:
                received = list(self.subscriber.pull(subscription=self.path, max_messages=PULL_BATCH,
                                                     timeout=PULL_TIMEOUT_S).received_messages)
            except exceptions.DeadlineExceeded:
                break
            if not received:
                break
            ack_ids = [item.ack_id for item in received]
            self._held.update(ack_ids)
            self.subscriber.modify_ack_deadline(subscription=self.path, ack_ids=ack_ids,
                                                ack_deadline_seconds=LEASE_S)
            fresh = [item for item in received if item.message.message_id not in letters]
            for item in received:  # a message pulled twice keeps its newest lease
                attributes = dict(item.message.attributes)
                letters[item.message.message_id] = DeadLetter(
                    item.message.message_id, item.ack_id, bytes(item.message.data), attributes,
                    item.message.publish_time, function_of(attributes, self.functions))
            if not fresh:
                break
        return sorted(letters.values(), key=lambda letter: (letter.publish_time, letter.id))

    def replay(self, letter: DeadLetter) -> tuple[str, str]:
        """Publish the original event to its source subscription's topic, then acknowledge the dead letter.

        Returns (topic path, new message id).
        """
        if not letter.source_subscription:
            raise ValueError(f"dead letter {letter.id} names no source subscription ({SOURCE_SUBSCRIPTION}): "
                             "nothing says where to replay it")
        from google.api_core import exceptions

        topic = self._source_topic(letter)
        try:
            message_id = self.publisher.publish(topic, letter.data, **letter.original_attributes()).result(timeout=30)
        except exceptions.NotFound:
            raise ValueError(f"cannot replay dead letter {letter.id}: its topic {topic} is gone") from None
        self.subscriber.acknowledge(subscription=self.path, ack_ids=[letter.ack_id])
        self._held.discard(letter.ack_id)
        return topic, message_id

    def _source_topic(self, letter: DeadLetter) -> str:
        from google.api_core import exceptions

        path = self.subscriber.subscription_path(letter.source_project or self.project, letter.source_subscription)
        if path not in self._topics:
            try:
                self._topics[path] = self.subscriber.get_subscription(subscription=path).topic
            except exceptions.NotFound:
                raise ValueError(f"cannot replay dead letter {letter.id}: its source subscription {path} "
                                 "is gone") from None
        return self._topics[path]

    def release(self) -> None:
        """Hand back every lease still held, so the dead letters can be pulled again at once."""
        if self._held:
            self.subscriber.modify_ack_deadline(subscription=self.path, ack_ids=sorted(self._held),
                                                ack_deadline_seconds=0)
            self._held.clear()


def run(action: str, project: str, *, subscription: str | None = None, as_json: bool = False,
        message_id: str | None = None, replay_all: bool = False, functions: Iterable[str] = ()) -> int:
    """`mlrelay dead-letters list|replay`: 0 when done, 1 when a dead letter was not found or not replayed.

    Errors of the API come out as ValueError with the service's message.
    """
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    if action == "replay" and (message_id is None) == (not replay_all):
        raise ValueError("give the id of a dead letter to replay, or --all, not both")
    box = None
    try:
        box = DeadLetterBox(project, subscription or DEAD_LETTER_SUBSCRIPTION, functions)
        letters = box.pull_all()
        if action == "list":
            print(json.dumps([letter.to_dict() for letter in letters], indent=2) if as_json
                  else format_dead_letters(letters, box.path))
            return 0
        return _replay(box, letters, message_id)
    except DeadLetterNotFound as exc:
        print(f"mlrelay dead-letters: {exc}", file=sys.stderr)
        return 1
    except exceptions.NotFound:
        raise ValueError(f"there is no subscription {box.path if box else subscription}: the dead-letter "
                         "subscription is created by deploy.sh and by the local cloud") from None
    except exceptions.GoogleAPICallError as exc:
        raise ValueError(f"Pub/Sub refused the request: {exc.message}") from None
    except auth_exceptions.GoogleAuthError as exc:
        raise ValueError(f"no credentials for Pub/Sub ({exc}); run `gcloud auth application-default login`") from None
    finally:
        if box is not None:
            try:
                box.release()
            except exceptions.GoogleAPICallError:
                pass  # the leases end on their own within LEASE_S


def _replay(box: DeadLetterBox, letters: list[DeadLetter], message_id: str | None) -> int:
    chosen = letters if message_id is None else [letter for letter in letters if letter.id == message_id]
    if message_id is not None and not chosen:
        raise DeadLetterNotFound(f"no dead letter {message_id} in {box.path} (see `mlrelay dead-letters list`)")
    if not chosen:
        print(f"no dead letters in {box.path}")
        return 0
    failed = 0
    for letter in chosen:
        try:
            topic, new_id = box.replay(letter)
        except ValueError as exc:
            print(f"mlrelay dead-letters: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"replayed dead letter {letter.id} ({letter.function}) to {topic} as message {new_id}")
    return 1 if failed else 0
