"""Where a subscription delivers (an HTTP push endpoint, or a Python function in this process), and
the record of each attempt.

A push is acknowledged by a success status (200, 201, 202, 204, as Pub/Sub push documents); any
other status, a connection error or no answer within the ack deadline is a failed attempt. An
in-process subscriber acknowledges by returning and fails by raising.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable
from urllib.parse import urlsplit

import urllib3

from local_cloud.pubsub.eventarc import EventFormat, EventRenderError, PushContext
from local_cloud.pubsub.messages import Message

log = logging.getLogger(__name__)

# Pub/Sub push treats these statuses as an acknowledgement and every other one as a NACK.
PUSH_SUCCESS_CODES = frozenset({200, 201, 202, 204})


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt, for tests and the local cloud's log.

    `status_code` is the HTTP status of a push, or None when there was no HTTP answer (connection
    error, ack deadline exceeded, an in-process subscriber, an attempt cut short when the broker's
    process ended). `outcome` is what the broker did next: "acked", "retrying", "dead-lettered" or
    "dropped" (failed with no further attempt).
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
class DeliveryOutcome:
    acked: bool
    status_code: int | None = None
    error: str | None = None


class PushTarget:
    """POSTs a rendered message to an HTTP endpoint; the answer decides ack or nack."""

    def __init__(self, endpoint_url: str, event_format: EventFormat, ack_deadline_s: float,
                 http: urllib3.PoolManager):
        self.endpoint_url = endpoint_url
        self.event_format = event_format
        self.timeout = urllib3.Timeout(connect=min(10.0, ack_deadline_s), read=ack_deadline_s)
        self.http = http

    def attempt(self, message: Message, context: PushContext) -> DeliveryOutcome:
        try:
            headers, body = self.event_format.render(message, context)
        except EventRenderError as err:
            return DeliveryOutcome(False, None, str(err))
        try:
            response = self.http.request(
                "POST", self.endpoint_url, body=body, headers=headers,
                timeout=self.timeout, retries=False, redirect=False,
            )
        except urllib3.exceptions.HTTPError as err:
            return DeliveryOutcome(False, None, f"push to {self.endpoint_url} failed: {err}")
        if response.status in PUSH_SUCCESS_CODES:
            return DeliveryOutcome(True, response.status)
        detail = response.data[:200].decode("utf-8", "replace").strip()
        return DeliveryOutcome(False, response.status, f"HTTP {response.status} from {self.endpoint_url}: {detail}")


class CallbackTarget:
    """Calls a Python function in process; returning acks, raising nacks."""

    def __init__(self, fn: Callable[[Message], None]):
        self.fn = fn

    def attempt(self, message: Message, context: PushContext) -> DeliveryOutcome:
        try:
            self.fn(message)
        except Exception as err:  # a subscriber's failure is a NACK, never the broker's crash
            log.exception("subscriber %s raised on message %s", context.subscription, message.message_id)
            return DeliveryOutcome(False, None, f"{type(err).__name__}: {err}")
        return DeliveryOutcome(True)


def check_endpoint_url(url: Any) -> None:
    if not isinstance(url, str):
        raise ValueError(f"endpoint_url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must be an http(s) URL with a host, got {url!r}")
