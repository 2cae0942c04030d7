"""What a finalized object publishes: the event Eventarc's storage trigger gets, and the bucket's
Pub/Sub notification.

In the cloud, Eventarc's Cloud Storage trigger and a bucket's Pub/Sub notification are two
separate subscribers of the same OBJECT_FINALIZE. Locally both are messages the local cloud
publishes when the bucket watcher reports an object complete; this module says which and with
what attributes.
"""
from __future__ import annotations

import hashlib

from events.pubsub import gcs_notification_attributes
from local_cloud.storage.bucket import FinalizedObject


def eventarc_event_attributes(obj: FinalizedObject) -> dict[str, str]:
    """The CloudEvent id, time and subject Eventarc's storage trigger gives the object's event.

    The id is derived from the object's name and generation, so a finalize seen twice keeps one id.
    """
    return {
        "ce-id": hashlib.sha1(f"{obj.name}#{obj.resource['generation']}".encode()).hexdigest()[:16],
        "ce-time": obj.event_time,
        "ce-subject": f"objects/{obj.name}",
    }


def notification_attributes(obj: FinalizedObject, object_name_prefix: str) -> dict[str, str] | None:
    """The attributes of the bucket's notification (OBJECT_FINALIZE under the prefix), or None
    for an object outside the prefix, which the notification does not report."""
    if not obj.name.startswith(object_name_prefix):
        return None
    return gcs_notification_attributes(obj.bucket, obj.name, int(obj.resource["generation"]), obj.event_time)
