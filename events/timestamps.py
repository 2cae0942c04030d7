"""RFC 3339 timestamps as Google Cloud writes them, and the sortable stamp used in object names.

Cloud Storage writes milliseconds ("2020-04-23T07:38:57.230Z"), Pub/Sub and Cloud Logging up to
nanoseconds ("2014-10-02T15:01:23.045123456Z"); Python's datetime keeps microseconds, so extra
digits are truncated (never rounded, so a time never moves into the next second).
See https://cloud.google.com/pubsub/docs/reference/rest/v1/PubsubMessage (publishTime).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
_STAMP = re.compile(r"^(\d{8})T(\d{6})\.(\d{6})Z$", re.ASCII)
_STAMP_FORMAT = "%Y%m%dT%H%M%S"

TimeLike = datetime | str


def parse_rfc3339(text: str) -> datetime:
    """An aware UTC datetime from an RFC 3339 string; ValueError naming the text otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 time string, got {type(text).__name__}")
    match = _RFC3339.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text[:64]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz
        )
    except ValueError as err:
        raise ValueError(f"not a valid time: {text[:64]!r} ({err})") from None
    return moment.astimezone(timezone.utc)


def to_utc(value: TimeLike) -> datetime:
    """Accept an aware datetime or an RFC 3339 string; naive datetimes are refused (ambiguous)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: give a timezone-aware time (UTC)")
        return value.astimezone(timezone.utc)
    return parse_rfc3339(value)


def format_rfc3339(value: TimeLike, digits: int = 6) -> str:
    """RFC 3339 in UTC with a 'Z' and `digits` (0, 3 or 6) fractional digits."""
    if digits not in (0, 3, 6):
        raise ValueError("digits must be 0, 3 or 6")
    moment = to_utc(value)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    return text + "Z"


def sortable_stamp(value: TimeLike) -> str:
    """Fixed-width UTC stamp that sorts as text in time order: 20261127T045219.123456Z."""
    moment = to_utc(value)
    return moment.strftime(_STAMP_FORMAT) + f".{moment.microsecond:06d}Z"


def parse_sortable_stamp(text: str) -> datetime:
    """Inverse of `sortable_stamp`; ValueError when the text is not one."""
    match = _STAMP.fullmatch(text)
    if not match:
        raise ValueError(f"not a stamp like 20261127T045219.123456Z: {text[:64]!r}")
    try:
        moment = datetime.strptime(f"{match.group(1)}T{match.group(2)}", _STAMP_FORMAT)
    except ValueError as err:
        raise ValueError(f"not a valid stamp: {text!r} ({err})") from None
    return moment.replace(microsecond=int(match.group(3)), tzinfo=timezone.utc)
