"""Pub/Sub messages as functions receive them, and Cloud Storage notifications carried in them.

Two deliveries share one JSON shape, `{"message": {...}, "subscription": "projects/P/subscriptions/
S"}`:
- the data of an Eventarc `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent
  (https://cloud.google.com/eventarc/docs/cloudevents, google.events.cloud.pubsub.v1.MessagePublishedData);
- the body of a Pub/Sub push request ("wrapped" push, https://cloud.google.com/pubsub/docs/push),
  which may add `deliveryAttempt` when a dead-letter policy is set.
In both, `message` is a PubsubMessage (https://cloud.google.com/pubsub/docs/reference/rest/v1/
PubsubMessage): `data` base64, `attributes`, `messageId`, `publishTime`; the delivered JSON also
repeats the id and time in snake case (`message_id`, `publish_time`), so the builder writes both
and the parser accepts either.

Cloud Storage notifications (https://cloud.google.com/storage/docs/pubsub-notifications) put the
event in the message attributes: notificationConfig, eventType, payloadFormat, bucketId, objectId,
objectGeneration, eventTime, and overwroteGeneration / overwrittenByGeneration when an object
replaces another. With payloadFormat JSON_API_V1 the data is the object resource.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.errors import InvalidEvent
from events.timestamps import TimeLike, format_rfc3339, parse_rfc3339

MESSAGE_PUBLISHED_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
PUBSUB_SOURCE_PREFIX = "//pubsub.googleapis.com/"

OBJECT_FINALIZE = "OBJECT_FINALIZE"
GCS_EVENT_TYPES = frozenset({OBJECT_FINALIZE, "OBJECT_METADATA_UPDATE", "OBJECT_DELETE", "OBJECT_ARCHIVE"})
GCS_PAYLOAD_FORMATS = frozenset({"JSON_API_V1", "NONE"})
# https://cloud.google.com/storage/docs/objects#naming: 1-1024 bytes of UTF-8.
MAX_OBJECT_NAME_BYTES = 1024


@dataclass(frozen=True)
class PubsubMessage:
    """One published message: raw data bytes, string attributes, server-assigned id and time."""

    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str = ""
    publish_time: str = ""
    ordering_key: str = ""

    def text(self) -> str:
        """The data as UTF-8 text; InvalidEvent when it is not."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidEvent(f"message data is not UTF-8 ({err.reason} at byte {err.start})") from None

    def to_json_dict(self) -> dict[str, Any]:
        """The message as delivered in JSON, id and time in both spellings."""
        message: dict[str, Any] = {
            "data": base64.b64encode(self.data).decode("ascii"),
            "attributes": dict(self.attributes),
            "messageId": self.message_id,
            "message_id": self.message_id,
            "publishTime": self.publish_time,
            "publish_time": self.publish_time,
        }
        if self.ordering_key:
            message["orderingKey"] = self.ordering_key
        return message

    @classmethod
    def from_json_dict(cls, message: Any) -> PubsubMessage:
        """Parse a delivered PubsubMessage JSON object."""
        if not isinstance(message, Mapping):
            raise InvalidEvent(f"'message' must be a JSON object, not {_kind(message)}")
        encoded = message.get("data", "")
        if encoded is None:
            encoded = ""
        if not isinstance(encoded, str):
            raise InvalidEvent(f"message 'data' must be a base64 string, not {_kind(encoded)}")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("message 'data' is not valid base64") from None
        attributes = message.get("attributes") or {}
        if not isinstance(attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise InvalidEvent("message 'attributes' must map strings to strings")
        message_id = _either(message, "messageId", "message_id")
        publish_time = _either(message, "publishTime", "publish_time")
        if publish_time:
            try:
                parse_rfc3339(publish_time)
            except ValueError as err:
                raise InvalidEvent(f"message publishTime: {err}") from None
        ordering_key = message.get("orderingKey") or ""
        if not isinstance(ordering_key, str):
            raise InvalidEvent("message 'orderingKey' must be a string")
        return cls(data, dict(attributes), message_id, publish_time, ordering_key)


@dataclass(frozen=True)
class MessageDelivery:
    """A message with the subscription it came through (Eventarc data or push body)."""

    message: PubsubMessage
    subscription: str
    delivery_attempt: int | None = None


def parse_message_published(data: Any) -> MessageDelivery:
    """Parse messagePublished CloudEvent data or a push body (same shape): dict, str or bytes."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("Pub/Sub delivery body is not UTF-8") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as err:
            raise InvalidEvent(f"Pub/Sub delivery body is not JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"Pub/Sub delivery must be a JSON object, not {_kind(data)}")
    if "message" not in data:
        raise InvalidEvent("Pub/Sub delivery has no 'message'")
    message = PubsubMessage.from_json_dict(data["message"])
    subscription = data.get("subscription") or ""
    if not isinstance(subscription, str):
        raise InvalidEvent("Pub/Sub delivery 'subscription' must be a string")
    attempt = data.get("deliveryAttempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
        raise InvalidEvent("Pub/Sub delivery 'deliveryAttempt' must be an integer")
    return MessageDelivery(message, subscription, attempt)


# A push body is the same JSON as messagePublished data; one parser serves both.
parse_push_envelope = parse_message_published


def message_published_data(
    message: PubsubMessage, subscription: str, delivery_attempt: int | None = None
) -> dict[str, Any]:
    """messagePublished CloudEvent data, which is also the wrapped push request body."""
    body: dict[str, Any] = {"message": message.to_json_dict(), "subscription": subscription}
    if delivery_attempt is not None:
        body["deliveryAttempt"] = delivery_attempt
    return body


push_envelope = message_published_data


def message_published_attributes(project: str, topic: str, message_id: str, time: TimeLike) -> dict[str, str]:
    """CloudEvent attributes Eventarc sets for a Pub/Sub message (id is the message id)."""
    if not project or not topic or not message_id:
        raise ValueError("project, topic and message id must be non-empty")
    return {
        "specversion": "1.0",
        "type": MESSAGE_PUBLISHED_EVENT_TYPE,
        "source": f"{PUBSUB_SOURCE_PREFIX}projects/{project}/topics/{topic}",
        "id": message_id,
        "time": format_rfc3339(time, digits=6),
        "datacontenttype": "application/json",
    }


def topic_from_source(source: str) -> str:
    """`topic` from a messagePublished source `//pubsub.googleapis.com/projects/P/topics/topic`."""
    prefix = PUBSUB_SOURCE_PREFIX + "projects/"
    parts = source[len(prefix):].split("/") if source.startswith(prefix) else []
    if len(parts) != 3 or parts[1] != "topics" or not parts[0] or not parts[2]:
        raise InvalidEvent(f"not a Pub/Sub topic source: {source[:120]!r}")
    return parts[2]


@dataclass(frozen=True)
class GcsNotification:
    """The attributes of a Cloud Storage Pub/Sub notification."""

    notification_config: str
    event_type: str
    payload_format: str
    bucket: str
    object_name: str
    generation: int
    event_time: str
    overwrote_generation: int | None = None
    overwritten_by_generation: int | None = None

    @property
    def is_finalize(self) -> bool:
        return self.event_type == OBJECT_FINALIZE

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> GcsNotification:
        """Parse notification attributes; InvalidEvent names the missing or bad one."""
        required = ("notificationConfig", "eventType", "payloadFormat", "bucketId", "objectId",
                    "objectGeneration", "eventTime")
        missing = [key for key in required if not isinstance(attributes.get(key), str) or not attributes[key]]
        if missing:
            raise InvalidEvent(f"not a Cloud Storage notification: missing {', '.join(missing)}")
        event_type = attributes["eventType"]
        if event_type not in GCS_EVENT_TYPES:
            raise InvalidEvent(f"unknown Cloud Storage eventType {event_type!r}")
        payload_format = attributes["payloadFormat"]
        if payload_format not in GCS_PAYLOAD_FORMATS:
            raise InvalidEvent(f"unknown Cloud Storage payloadFormat {payload_format!r}")
        try:
            parse_rfc3339(attributes["eventTime"])
        except ValueError as err:
            raise InvalidEvent(f"notification eventTime: {err}") from None
        if len(attributes["objectId"].encode("utf-8", "surrogatepass")) > MAX_OBJECT_NAME_BYTES:
            raise InvalidEvent(f"notification objectId is longer than Cloud Storage's {MAX_OBJECT_NAME_BYTES} "
                               "bytes, so it names no object")
        return cls(
            notification_config=attributes["notificationConfig"],
            event_type=event_type,
            payload_format=payload_format,
            bucket=attributes["bucketId"],
            object_name=attributes["objectId"],
            generation=_generation(attributes, "objectGeneration"),
            event_time=attributes["eventTime"],
            overwrote_generation=_optional_generation(attributes, "overwroteGeneration"),
            overwritten_by_generation=_optional_generation(attributes, "overwrittenByGeneration"),
        )

    def to_attributes(self) -> dict[str, str]:
        attributes = {
            "notificationConfig": self.notification_config,
            "eventType": self.event_type,
            "payloadFormat": self.payload_format,
            "bucketId": self.bucket,
            "objectId": self.object_name,
            "objectGeneration": str(self.generation),
            "eventTime": self.event_time,
        }
        if self.overwrote_generation is not None:
            attributes["overwroteGeneration"] = str(self.overwrote_generation)
        if self.overwritten_by_generation is not None:
            attributes["overwrittenByGeneration"] = str(self.overwritten_by_generation)
        return attributes


def is_gcs_notification(attributes: Mapping[str, str]) -> bool:
    """Whether a message's attributes say it came from a Cloud Storage notification.

    Either of the two attributes only a notification sets will do, so that a notification missing
    the other is parsed (and refused, naming what it lacks) rather than taken for a plain message."""
    return bool(attributes.get("notificationConfig")) or bool(attributes.get("bucketId"))


def gcs_notification_attributes(
    bucket: str,
    object_name: str,
    generation: int,
    event_time: TimeLike,
    notification_id: str = "1",
    event_type: str = OBJECT_FINALIZE,
    payload_format: str = "JSON_API_V1",
    overwrote_generation: int | None = None,
) -> dict[str, str]:
    """The attributes Cloud Storage sets on a notification message."""
    if event_type not in GCS_EVENT_TYPES:
        raise ValueError(f"unknown Cloud Storage eventType {event_type!r}")
    if payload_format not in GCS_PAYLOAD_FORMATS:
        raise ValueError(f"unknown payloadFormat {payload_format!r}")
    return GcsNotification(
        notification_config=f"projects/_/buckets/{bucket}/notificationConfigs/{notification_id}",
        event_type=event_type,
        payload_format=payload_format,
        bucket=bucket,
        object_name=object_name,
        generation=generation,
        event_time=format_rfc3339(event_time, digits=6),
        overwrote_generation=overwrote_generation,
    ).to_attributes()


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _either(message: Mapping[str, Any], camel: str, snake: str) -> str:
    value = message.get(camel) or message.get(snake) or ""
    if not isinstance(value, str):
        raise InvalidEvent(f"message {camel!r} must be a string, not {_kind(value)}")
    return value


def _generation(attributes: Mapping[str, str], key: str) -> int:
    value = attributes[key]
    if not (value.isascii() and value.isdigit()):
        raise InvalidEvent(f"notification {key} must be a decimal integer, got {value[:40]!r}")
    return int(value)


def _optional_generation(attributes: Mapping[str, str], key: str) -> int | None:
    value = attributes.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"notification {key} must be a string")
    return _generation(attributes, key)
