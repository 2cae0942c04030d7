"""Run ids derived from what triggered the run, so every redelivery of a trigger names the same run.

Format: `run-YYYYMMDD-HHMMSS-<10 hex>`, the event's UTC time (ids sort by time) and the start of a
SHA-256 of the trigger's identity: (bucket, object, generation) for a trigger file, (topic, message
id) for a Pub/Sub message. Both parts come from the event, never from the clock of the function
handling it, so a redelivered event maps to the run already started. The id is 30 characters of
[a-z0-9-], starts with a letter and ends with a hex digit: a valid Dataflow job name
(`[a-z]([-a-z0-9]{0,1022}[a-z0-9])?`) and a valid label value (at most 63 characters of lowercase
letters, digits, '-' and '_'), so it can name the Dataflow job and label the Vertex AI job.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime

from events.timestamps import TimeLike, to_utc

# Written without backslashes so the same text also serves in Cloud Logging filters.
RUN_ID_REGEX = r"^run-([0-9]{8})-([0-9]{6})-([0-9a-f]{10})$"
RUN_ID_PATTERN = re.compile(RUN_ID_REGEX)
_HASH_CHARS = 10


def _run_id(time: TimeLike, *identity: str) -> str:
    moment = to_utc(time)
    # The unit separator cannot appear in bucket, object or topic names given as text, so
    # ("a", "bc") and ("ab", "c") never hash alike.
    digest = hashlib.sha256("\x1f".join(identity).encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"run-{moment:%Y%m%d-%H%M%S}-{digest}"


def run_id_for_trigger_object(bucket: str, name: str, generation: int | str, time: TimeLike) -> str:
    """The run a trigger file starts: one run per object generation (re-uploading starts a new one)."""
    if not bucket or not name:
        raise ValueError("bucket and object name must be non-empty")
    generation_text = str(generation)
    if not (generation_text.isascii() and generation_text.isdigit()):
        raise ValueError(f"generation must be a decimal integer, got {generation!r}")
    return _run_id(time, "gcs", bucket, name, str(int(generation_text)))


def run_id_for_message(topic: str, message_id: str, time: TimeLike) -> str:
    """The run a Pub/Sub message starts (message ids are unique within a topic)."""
    if not topic or not message_id:
        raise ValueError("topic and message id must be non-empty")
    return _run_id(time, "pubsub", topic, message_id)


def is_run_id(text: object) -> bool:
    """Whether `text` is a run id with a real calendar time."""
    if not isinstance(text, str):
        return False
    match = RUN_ID_PATTERN.fullmatch(text)
    if not match:
        return False
    try:
        datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True
