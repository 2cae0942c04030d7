"""Pub/Sub messages as the service stores them, and the rules a topic, subscription or message obeys.

The broker and its gRPC front refuse what Pub/Sub refuses, with a ValueError saying what is wrong,
so a publisher that works locally is not refused in the cloud.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

# Limits Pub/Sub enforces on messages.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES = 256, 1024
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

_RESOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


@dataclass(frozen=True)
class Message:
    """A published Pub/Sub message, as the server stores it."""

    message_id: str
    topic: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: datetime
    ordering_key: str | None = None


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
