"""A subscription as the broker keeps it, what GetSubscription reports of it, and the checks of
its settings against the limits Pub/Sub enforces (references in `local_cloud.pubsub.broker`).

Apart from the broker so that the broker module holds its delivery and lease logic only; the
settings kept across restarts are `Subscription._KEPT`, written to the store (`StoredSubscription`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from local_cloud.pubsub.delivery import CallbackTarget, PushTarget
from local_cloud.pubsub.retry_policy import MAX_BACKOFF_S, MAX_DELIVERY_ATTEMPTS, MIN_DELIVERY_ATTEMPTS
from local_cloud.pubsub.store import StoredSubscription, parse_ack_id

# Limits Pub/Sub enforces on a subscription's ack deadline, and on the deadline ModifyAckDeadline sets.
MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S = 10.0, 600.0


@dataclass(frozen=True)
class SubscriptionInfo:
    """A subscription's settings, as GetSubscription reports them. `kind` is push, callback or pull."""

    name: str
    topic: str
    kind: str
    ack_deadline_s: float
    endpoint_url: str | None
    retry: bool
    min_backoff_s: float
    max_backoff_s: float
    max_delivery_attempts: int
    dead_letter_topic: str | None


@dataclass
class Subscription:
    name: str
    topic: str
    kind: str  # "push", "callback" or "pull"
    target: PushTarget | CallbackTarget | None = None  # None until this broker subscribes it (push, callback)
    endpoint_url: str | None = None
    retry: bool = False
    min_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_delivery_attempts: int = 5
    dead_letter_topic: str | None = None
    duplicate_deliveries: int = 1
    ack_deadline_s: float = MAX_ACK_DEADLINE_S
    first_seq: int = 0  # the first message it received: redeliver accepts no earlier one

    _KEPT = ("endpoint_url", "retry", "min_backoff_s", "max_backoff_s", "max_delivery_attempts",
             "dead_letter_topic", "duplicate_deliveries", "ack_deadline_s")

    @property
    def copies(self) -> int:
        return 1 if self.kind == "pull" else self.duplicate_deliveries

    @property
    def delivered_here(self) -> bool:
        """Whether this broker delivers its messages (a pull subscription's are pulled instead)."""
        return self.kind != "pull" and self.target is not None

    def stored(self) -> StoredSubscription:
        return StoredSubscription(self.name, self.topic, self.kind, {k: getattr(self, k) for k in self._KEPT},
                                  self.first_seq)

    @classmethod
    def from_store(cls, stored: StoredSubscription) -> Subscription:
        known = {f.name for f in fields(cls)} & set(cls._KEPT)
        return cls(stored.name, stored.topic, stored.kind, first_seq=stored.first_seq,
                   **{k: v for k, v in stored.config.items() if k in known})

    def info(self) -> SubscriptionInfo:
        return SubscriptionInfo(self.name, self.topic, self.kind, self.ack_deadline_s, self.endpoint_url, self.retry,
                                self.min_backoff_s, self.max_backoff_s, self.max_delivery_attempts,
                                self.dead_letter_topic)


def is_number(value: object, low: float, high: float, *, low_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (low < value if low_open else low <= value) and value <= high


def check_ack_ids(ack_ids: object) -> list[str]:
    if isinstance(ack_ids, str) or not isinstance(ack_ids, (list, tuple)):
        raise ValueError(f"ack_ids must be a list of ack ids, got {type(ack_ids).__name__}")
    for ack_id in ack_ids:
        if parse_ack_id(ack_id) is None:
            raise ValueError(f"invalid ack id {ack_id!r}")
    return list(ack_ids)


def check_ack_deadline(ack_deadline_s: object) -> None:
    if not is_number(ack_deadline_s, MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S):
        raise ValueError(
            f"ack_deadline_s must be between {MIN_ACK_DEADLINE_S:g} and {MAX_ACK_DEADLINE_S:g} "
            f"(Pub/Sub's limits), got {ack_deadline_s}"
        )


def check_retry_policy(sub: Subscription, workers: int) -> None:
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
