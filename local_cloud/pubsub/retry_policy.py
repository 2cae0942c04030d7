"""Pub/Sub's retry policy and dead-letter forwarding, as pure functions the broker applies.

A subscription with a retry policy redelivers a failed message after an exponential backoff until
its maximum number of delivery attempts; then a dead-letter policy forwards the message to its
dead-letter topic with the attributes Pub/Sub adds.
(https://cloud.google.com/pubsub/docs/handling-failures)
"""
from __future__ import annotations

from events.timestamps import format_rfc3339
from local_cloud.pubsub.messages import MAX_ATTRIBUTE_VALUE_BYTES, Message

# Attributes Pub/Sub adds to a message it forwards to a dead-letter topic ("it wraps the original
# message in a new one and adds attributes that identify the source subscription",
# https://cloud.google.com/pubsub/docs/handling-failures). The error message is documented for
# export subscriptions only ("The Pub/Sub message forwarded to the dead-letter topic contains an
# attribute CloudPubSubDeadLetterSourceDeliveryErrorMessage that has the reason ...",
# https://cloud.google.com/pubsub/docs/bigquery#handle_message_failures); a push subscription's
# dead letter in the cloud may lack it. The local broker always adds it, so that a dead letter
# says why; readers must treat it as optional.
DEAD_LETTER_DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
DEAD_LETTER_ERROR_MESSAGE = "CloudPubSubDeadLetterSourceDeliveryErrorMessage"
DEAD_LETTER_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
DEAD_LETTER_SUBSCRIPTION_PROJECT = "CloudPubSubDeadLetterSourceSubscriptionProject"
DEAD_LETTER_TOPIC_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"

# Limits Pub/Sub enforces on a subscription's retry and dead-letter policies.
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100
MAX_BACKOFF_S = 600.0


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
