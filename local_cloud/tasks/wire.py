"""Cloud Tasks' JSON on the wire: timestamps, durations and enums, as pure functions.

Timestamps (``scheduleTime``, ``createTime``, an Attempt's ``dispatchTime``...) are
google.protobuf.Timestamp in proto3 JSON: RFC 3339, "Z" or an offset, up to nine fractional
digits; Cloud Tasks truncates ``scheduleTime`` to the microsecond and ``createTime`` to the second
(https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks, the Task
resource). Durations (``dispatchDeadline``, a RetryConfig's ``minBackoff``...) are
google.protobuf.Duration: seconds with up to nine fractional digits and an "s" ("0.100s").
Both are kept here as whole microseconds, so that no float rounding moves a time.

Enums: a proto3 JSON parser takes an enum's name or its number, and Google's client libraries
send numbers: the GAPIC REST transport serialises with ``use_integers_for_enums`` and asks for
``$alt=json;enum-encoding=int`` (google.api_core.rest_helpers.transcode_request). The discovery
document lists the names only, so a body is brought to names before it is checked, and an answer
is given in numbers when the caller asked for them. The numbers are the protos'
(google/cloud/tasks/v2/target.proto, task.proto, queue.proto); the tests hold this table against
the client library's own enums.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import re
from datetime import datetime, timezone
from typing import Any

from model_server.errors import invalid

MICROS = 1_000_000

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))")
_DURATION = re.compile(r"(-)?(\d+)(?:\.(\d{1,9}))?s")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799


def parse_timestamp(text: Any, field: str = "timestamp") -> int:
    """An RFC 3339 timestamp as microseconds since the epoch (finer digits truncated)."""
    match = _TIMESTAMP.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"{field}: {text!r} is not an RFC 3339 timestamp such as 2030-01-01T00:00:00.5Z")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)  # checks the calendar (no leap second)
    except ValueError:
        raise invalid(f"{field}: {text!r} is not a date and time that exists") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second))
    if match.group(9):
        offset = int(match.group(10)) * 3600 + int(match.group(11)) * 60
        seconds -= offset if match.group(9) == "+" else -offset
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise invalid(f"{field}: {text!r} is outside the range of google.protobuf.Timestamp")
    return seconds * MICROS + int((match.group(7) or "").ljust(6, "0")[:6])


def format_timestamp(micros: int) -> str:
    """Microseconds since the epoch in RFC 3339 UTC, with 0, 3 or 6 fractional digits as
    protobuf's JSON printer writes them."""
    seconds, fraction = divmod(micros, MICROS)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return moment + _fraction(fraction) + "Z"


def parse_duration(text: Any, field: str = "duration") -> int:
    """A google.protobuf.Duration in JSON ("0.100s", "3600s") as microseconds."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise invalid(f"{field}: {text!r} is not a duration such as '600s' or '0.100s'")
    micros = int(match.group(2)) * MICROS + int((match.group(3) or "").ljust(6, "0")[:6])
    return -micros if match.group(1) else micros


def format_duration(micros: int) -> str:
    """Microseconds as a google.protobuf.Duration in JSON ("3600s", "0.100s")."""
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), MICROS)
    return f"{sign}{seconds}{_fraction(fraction)}s"


def _fraction(micros: int) -> str:
    if micros == 0:
        return ""
    if micros % 1000 == 0:
        return f".{micros // 1000:03d}"
    return f".{micros:06d}"


def decode_bytes(text: Any) -> bytes:
    """A proto3 JSON ``bytes`` value: standard or URL-safe base64, padded or not; ValueError if
    it is none of them."""
    if not isinstance(text, str):
        raise ValueError("bytes are given as base64 text")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not valid base64") from None


# --- enums -----------------------------------------------------------------------------------------

# Each enum's names in the order of their numbers (0, 1, 2...), as the protos number them.
HTTP_METHOD = ("HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
TASK_VIEW = ("VIEW_UNSPECIFIED", "BASIC", "FULL")
QUEUE_STATE = ("STATE_UNSPECIFIED", "RUNNING", "PAUSED", "DISABLED")
URI_SCHEME = ("SCHEME_UNSPECIFIED", "HTTP", "HTTPS")
URI_OVERRIDE_ENFORCE_MODE = ("URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED", "IF_NOT_EXISTS", "ALWAYS")

# Where the enums are, schema by schema of the discovery document: a field is an enum (its
# names) or a message (its schema's name; a trailing "[]" for a list of them).
SCHEMA_FIELDS: dict[str, dict[str, Any]] = {
    "CreateTaskRequest": {"responseView": TASK_VIEW, "task": "Task"},
    "Task": {"view": TASK_VIEW, "httpRequest": "HttpRequest", "appEngineHttpRequest": "AppEngineHttpRequest"},
    "HttpRequest": {"httpMethod": HTTP_METHOD},
    "AppEngineHttpRequest": {"httpMethod": HTTP_METHOD},
    "Queue": {"state": QUEUE_STATE, "httpTarget": "HttpTarget"},
    "HttpTarget": {"httpMethod": HTTP_METHOD, "uriOverride": "UriOverride"},
    "UriOverride": {"scheme": URI_SCHEME, "uriOverrideEnforceMode": URI_OVERRIDE_ENFORCE_MODE},
    "ListTasksResponse": {"tasks": "Task[]"},
    "ListQueuesResponse": {"queues": "Queue[]"},
}


def enum_name(names: tuple[str, ...], value: Any, field: str) -> Any:
    """An enum value given as its number, as its name; any other value as it is (the schema
    check judges it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
        raise invalid(f"{field}: {value} is not a value of the enum ({', '.join(names)})")
    return value


def enums_to_names(schema: str, value: Any, path: str = "") -> Any:
    """`value` (a body of schema `schema`) with every enum given by number given by name."""
    return _convert(schema, value, path, to_numbers=False)


def enums_to_numbers(schema: str, value: Any) -> Any:
    """`value` with every enum given by name given by number (``enum-encoding=int``)."""
    return _convert(schema, value, "", to_numbers=True)


def _convert(schema: str, value: Any, path: str, *, to_numbers: bool) -> Any:
    fields = SCHEMA_FIELDS.get(schema)
    if fields is None or not isinstance(value, dict):
        return value
    converted = dict(value)
    for name, kind in fields.items():
        if name not in value or value[name] is None:
            continue
        where = f"{path}.{name}" if path else name
        item = value[name]
        if isinstance(kind, tuple):
            if to_numbers:
                converted[name] = kind.index(item) if item in kind else item
            else:
                converted[name] = enum_name(kind, item, where)
        elif kind.endswith("[]"):
            if isinstance(item, list):
                converted[name] = [_convert(kind[:-2], element, f"{where}[{index}]", to_numbers=to_numbers)
                                   for index, element in enumerate(item)]
        else:
            converted[name] = _convert(kind, item, where, to_numbers=to_numbers)
    return converted
