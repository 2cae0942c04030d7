"""A task's HTTP request read as a call of Pub/Sub's REST publish method, for the local wiring.

The bake's end is a task whose httpRequest is ``POST
https://pubsub.googleapis.com/v1/projects/P/topics/T:publish`` with a PublishRequest JSON as its
body (base64 in the task, as HttpRequest.body is bytes), authorised by an oauthToken. Locally no
request leaves the machine: whoever wires the stand-in into the local broker turns the request
back into the publish it stands for with `parse_pubsub_publish`, and answers the task with the
status Pub/Sub would (200, or 400 for a request it refuses).

Formats: https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/publish (the
method and its PublishRequest) and the PubsubMessage resource (``data`` base64, ``attributes`` a
map of strings, ``orderingKey``). The body is held against the request schema of
``pubsub.projects.topics.publish`` in Google's discovery document, as Pub/Sub refuses an unknown
or mistyped field. Pub/Sub's own rules on a message (sizes, reserved attribute names, data or an
attribute present) are the broker's to apply (local_cloud.pubsub.messages).
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, NamedTuple

from local_cloud import discovery
from local_cloud.tasks.wire import decode_bytes

PUBLISH_METHOD_ID = "pubsub.projects.topics.publish"
_PUBLISH_URL = re.compile(r"https://pubsub\.googleapis\.com/v1/(projects/([^/:?#]+)/topics/([^/:?#]+)):publish")


class NotAPubsubPublish(ValueError):
    """The request is not a call of Pub/Sub's publish method that Pub/Sub would accept."""


class PubsubMessage(NamedTuple):
    data: bytes
    attributes: dict[str, str]
    ordering_key: str | None = None


class PubsubPublish(NamedTuple):
    """A publish: the topic's path (``projects/P/topics/T``) and its messages."""

    topic: str
    messages: list[PubsubMessage]


def is_pubsub_publish_url(url: Any) -> bool:
    return isinstance(url, str) and _PUBLISH_URL.fullmatch(url) is not None


def parse_pubsub_publish(http_request: Mapping[str, Any]) -> PubsubPublish:
    """The topic and messages of a task's HttpRequest JSON that calls Pub/Sub's publish method.

    NotAPubsubPublish, saying what is wrong, for anything else: another URL or method, no body,
    a body that is not base64 of a PublishRequest, no messages, a message's data not base64.
    """
    method = http_request.get("httpMethod") or "POST"
    url = http_request.get("url")
    match = _PUBLISH_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise NotAPubsubPublish(f"{url!r} is not Pub/Sub's publish method: "
                                "https://pubsub.googleapis.com/v1/projects/PROJECT/topics/TOPIC:publish")
    if method != "POST":
        raise NotAPubsubPublish(f"Pub/Sub's publish method is called with POST, not {method}")
    body_text = http_request.get("body")
    if not body_text:
        raise NotAPubsubPublish("the request has no body; publish takes a PublishRequest")
    raw = _base64(body_text, "the request body")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotAPubsubPublish(f"the request body is not a PublishRequest JSON: {exc}") from None
    try:
        discovery.check_request(PUBLISH_METHOD_ID, body)
    except discovery.SchemaMismatch as exc:
        raise NotAPubsubPublish(str(exc)) from None
    if not body.get("messages"):
        raise NotAPubsubPublish("a PublishRequest needs at least one message")
    messages = []
    for index, message in enumerate(body["messages"]):
        data = _base64(message.get("data") or "", f"messages[{index}].data")
        messages.append(PubsubMessage(data, dict(message.get("attributes") or {}), message.get("orderingKey") or None))
    return PubsubPublish(match.group(1), messages)


def _base64(text: Any, what: str) -> bytes:
    try:
        return decode_bytes(text)
    except ValueError:
        raise NotAPubsubPublish(f"{what} is not base64 text") from None
