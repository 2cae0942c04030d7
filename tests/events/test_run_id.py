"""Run ids: stable across redeliveries, distinct across triggers, valid as job names and labels."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from events.run_id import (
    is_run_id,
    run_id_for_message,
    run_id_for_trigger_object,
)

WHEN = datetime(2026, 11, 27, 4, 52, 19, 654321, tzinfo=timezone.utc)
DATAFLOW_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def test_format_carries_the_event_time_and_a_hash():
    run_id = run_id_for_message("mlrelay-start", "2070443601311540", WHEN)
    assert re.fullmatch(r"run-20261127-045219-[0-9a-f]{10}", run_id)
    assert DATAFLOW_JOB_NAME.match(run_id) and LABEL_VALUE.match(run_id) and len(run_id) == 30


def test_redelivery_maps_to_the_same_run():
    first = run_id_for_trigger_object("bkt", "triggers/go.json", 1764219139123456, WHEN)
    again = run_id_for_trigger_object("bkt", "triggers/go.json", "1764219139123456", "2026-11-27T04:52:19.654321Z")
    assert first == again
    assert run_id_for_message("t", "m1", WHEN) == run_id_for_message("t", "m1", WHEN.astimezone(timezone(timedelta(hours=9))))


def test_different_triggers_get_different_runs():
    ids = {
        run_id_for_trigger_object("bkt", "triggers/go.json", 1, WHEN),
        run_id_for_trigger_object("bkt", "triggers/go.json", 2, WHEN),  # re-uploaded
        run_id_for_trigger_object("bkt", "triggers/go2.json", 1, WHEN),
        run_id_for_trigger_object("bkt2", "triggers/go.json", 1, WHEN),
        run_id_for_message("mlrelay-start", "1", WHEN),
        run_id_for_message("mlrelay-start", "2", WHEN),
        run_id_for_message("other-topic", "1", WHEN),
        run_id_for_message("ab", "c", WHEN),
        run_id_for_message("a", "bc", WHEN),
    }
    assert len(ids) == 9


def test_ids_sort_by_event_time():
    earlier = run_id_for_message("t", "zzz", WHEN)
    later = run_id_for_message("t", "aaa", WHEN + timedelta(seconds=1))
    assert sorted([later, earlier]) == [earlier, later]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("run-20261127-045219-0123456789", True),
        ("run-20261127-045219-0123456789a", False),
        ("run-20261127-045219-012345678G", False),
        ("run-20261127-045219-ABCDEF0123", False),
        ("run-20261327-045219-0123456789", False),  # month 13
        ("run-20261127-246019-0123456789", False),  # hour 24
        ("Run-20261127-045219-0123456789", False),
        ("run-20261127-045219-0123456789\n", False),
        ("", False),
        (None, False),
        (12, False),
    ],
)
def test_is_run_id(text, expected):
    assert is_run_id(text) is expected


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="generation"):
        run_id_for_trigger_object("b", "n", "12x", WHEN)
    with pytest.raises(ValueError, match="non-empty"):
        run_id_for_message("", "1", WHEN)
    with pytest.raises(ValueError, match="naive"):
        run_id_for_message("t", "1", datetime(2026, 1, 1))
