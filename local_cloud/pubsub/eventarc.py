"""Eventarc's push formats: how a Pub/Sub message becomes the HTTP request a subscription sends.

In the cloud a message published to a topic reaches each Cloud Function through an Eventarc trigger,
which is a Pub/Sub push subscription that POSTs a CloudEvent in binary content mode to the function.
The bodies come from the shared event builders (`events.pubsub`, `events.storage`), so the parsers
the functions use are tested against the same shapes.

References: https://cloud.google.com/pubsub/docs/push (push body),
https://cloud.google.com/eventarc/docs/cloudevents (CloudEvent headers and data).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from events.pubsub import PubsubMessage, message_published_attributes, message_published_data, push_envelope
from events.storage import finalized_event_attributes
from events.timestamps import format_rfc3339
from local_cloud.pubsub.messages import Message

_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


class EventRenderError(ValueError):
    """A message that cannot be expressed in a subscription's event format (the text says why)."""


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
