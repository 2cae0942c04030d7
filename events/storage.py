"""Cloud Storage "object finalized" CloudEvents: their attributes and their data.

Eventarc delivers `google.cloud.storage.object.v1.finalized` with the object's Cloud Storage JSON API
resource as data, where 64-bit numbers (generation, metageneration, size) are JSON strings:
https://cloud.google.com/storage/docs/json_api/v1/objects#resource and
https://cloud.google.com/eventarc/docs/cloudevents (source `//storage.googleapis.com/projects/_/
buckets/BUCKET`, subject `objects/NAME`). The local cloud builds the same attributes and data with
`finalized_event_attributes` and `storage_object_resource`; the functions parse them with
`parse_finalized_event`, so both sides share one definition.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from events.errors import InvalidEvent
from events.timestamps import TimeLike, format_rfc3339

FINALIZED_EVENT_TYPE = "google.cloud.storage.object.v1.finalized"
STORAGE_SOURCE_PREFIX = "//storage.googleapis.com/projects/_/buckets/"


@dataclass(frozen=True)
class StorageObject:
    """The fields of a finalized object that the chain uses; numbers as ints, times as RFC 3339."""

    bucket: str
    name: str
    generation: int
    metageneration: int
    size: int
    content_type: str | None = None
    md5_hash: str | None = None
    crc32c: str | None = None
    time_created: str | None = None
    updated: str | None = None
    storage_class: str | None = None

    @property
    def uri(self) -> str:
        """gs://bucket/name, for messages and job arguments."""
        return f"gs://{self.bucket}/{self.name}"

    @classmethod
    def from_resource(cls, data: Any) -> StorageObject:
        """Parse a JSON API object resource (a dict); InvalidEvent says which field is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidEvent(f"storage object data must be a JSON object, not {_kind(data)}")
        bucket = _required_text(data, "bucket")
        name = _required_text(data, "name")
        return cls(
            bucket=bucket,
            name=name,
            generation=_int64(data, "generation", required=True),
            metageneration=_int64(data, "metageneration", required=False, default=1),
            size=_int64(data, "size", required=False, default=0),
            content_type=_optional_text(data, "contentType"),
            md5_hash=_optional_text(data, "md5Hash"),
            crc32c=_optional_text(data, "crc32c"),
            time_created=_optional_text(data, "timeCreated"),
            updated=_optional_text(data, "updated"),
            storage_class=_optional_text(data, "storageClass"),
        )


def storage_object_resource(
    bucket: str,
    name: str,
    generation: int,
    size: int,
    md5_b64: str | None,
    crc32c_b64: str | None,
    created: TimeLike,
    content_type: str = "application/octet-stream",
) -> dict[str, str]:
    """The JSON API resource Cloud Storage reports for a newly written object (strings throughout)."""
    if not bucket or not name:
        raise ValueError("bucket and object name must be non-empty")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation <= 0:
        raise ValueError(f"generation must be a positive integer, got {generation!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a non-negative integer, got {size!r}")
    created_text = format_rfc3339(created, digits=3)
    quoted = quote(name, safe="")
    resource = {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}/o/{quoted}",
        "mediaLink": (
            f"https://storage.googleapis.com/download/storage/v1/b/{bucket}/o/{quoted}"
            f"?generation={generation}&alt=media"
        ),
        "name": name,
        "bucket": bucket,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": content_type,
        "storageClass": "STANDARD",
        "size": str(size),
        "timeCreated": created_text,
        "updated": created_text,
        "timeStorageClassUpdated": created_text,
    }
    if md5_b64:
        resource["md5Hash"] = md5_b64
    if crc32c_b64:
        resource["crc32c"] = crc32c_b64
    return resource


def finalized_event_attributes(bucket: str, name: str, event_id: str, time: TimeLike) -> dict[str, str]:
    """CloudEvent context attributes of an Eventarc Cloud Storage finalize event."""
    if not bucket or not name or not event_id:
        raise ValueError("bucket, object name and event id must be non-empty")
    return {
        "specversion": "1.0",
        "type": FINALIZED_EVENT_TYPE,
        "source": f"{STORAGE_SOURCE_PREFIX}{bucket}",
        "subject": f"objects/{name}",
        "id": event_id,
        "time": format_rfc3339(time, digits=6),
        "datacontenttype": "application/json",
    }


def parse_finalized_event(attributes: Mapping[str, Any], data: Any) -> StorageObject:
    """The object of a finalize CloudEvent, after checking its type and that source matches data."""
    event_type = attributes.get("type")
    if event_type != FINALIZED_EVENT_TYPE:
        raise InvalidEvent(f"expected a {FINALIZED_EVENT_TYPE} event, got type {event_type!r}")
    stored = StorageObject.from_resource(data)
    source = attributes.get("source")
    if source is not None and source != f"{STORAGE_SOURCE_PREFIX}{stored.bucket}":
        raise InvalidEvent(f"event source {source!r} does not name bucket {stored.bucket!r}")
    return stored


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"storage object field {key!r} must be a non-empty string, got {_kind(value)}")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"storage object field {key!r} must be a string, got {_kind(value)}")
    return value


def _int64(data: Mapping[str, Any], key: str, *, required: bool, default: int = 0) -> int:
    """JSON API int64 fields arrive as decimal strings; some samples send numbers, so take both."""
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"storage object field {key!r} is missing")
        return default
    if isinstance(value, bool):
        raise InvalidEvent(f"storage object field {key!r} must be an integer, got bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise InvalidEvent(f"storage object field {key!r} must be a decimal integer, got {value!r:.40}")
    if number < 0:
        raise InvalidEvent(f"storage object field {key!r} must not be negative")
    return number
