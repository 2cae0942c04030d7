"""RFC 3339 times as Google Cloud writes them, and the sortable ledger stamp."""
from datetime import datetime, timedelta, timezone

import pytest

from events.timestamps import format_rfc3339, parse_rfc3339, parse_sortable_stamp, sortable_stamp


def test_nanoseconds_are_truncated_never_rounded():
    moment = parse_rfc3339("2014-10-02T15:01:59.999999999Z")
    assert moment == datetime(2014, 10, 2, 15, 1, 59, 999999, tzinfo=timezone.utc)


def test_offsets_become_utc():
    assert parse_rfc3339("2026-11-27T05:52:19+01:00") == datetime(2026, 11, 27, 4, 52, 19, tzinfo=timezone.utc)


def test_formats_with_chosen_precision():
    moment = datetime(2026, 11, 27, 4, 52, 19, 123456, tzinfo=timezone(timedelta(hours=-5)))
    assert format_rfc3339(moment, 3) == "2026-11-27T09:52:19.123Z"
    assert format_rfc3339(moment, 0) == "2026-11-27T09:52:19Z"
    assert format_rfc3339("2026-11-27T09:52:19Z") == "2026-11-27T09:52:19.000000Z"


def test_stamp_is_fixed_width_sortable_and_reversible():
    early = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    late = early + timedelta(microseconds=999_999)
    assert sortable_stamp(early) == "20260102T030405.000006Z"
    assert sortable_stamp(early) < sortable_stamp(late)
    assert parse_sortable_stamp(sortable_stamp(late)) == late


@pytest.mark.parametrize(
    "text", ["2026-11-27", "2026-13-01T00:00:00Z", "2026-11-27T04:52:19", "2026-11-27T04:52:19.Z",
             "\uff12\uff10\uff12\uff16-11-27T04:52:19Z", "", "2026-02-30T00:00:00Z"]
)
def test_bad_times_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize("text", ["20260102T030405Z", "20260102T030405.000006Z\n", "20261302T030405.000006Z"])
def test_bad_stamps_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_sortable_stamp(text)
