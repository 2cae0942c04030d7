"""Run ids: stable across redeliveries, distinct across triggers, valid as job names and labels."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from events.errors import InvalidEvent
from events.pubsub import PubsubMessage, gcs_notification_attributes
from events.run_id import (
    is_run_id,
    run_id_for_message,
    run_id_for_start_message,
    run_id_for_trigger_object,
    run_id_from_object_name,
    run_id_time,
    run_prefix,
)

WHEN = datetime(2026, 11, 27, 4, 52, 19, 654321, tzinfo=timezone.utc)
DATAFLOW_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def test_format_carries_the_event_time_and_a_hash():
    run_id = run_id_for_message("mlrelay-start", "2070443601311540", WHEN)
    assert re.fullmatch(r"run-20261127-045219-[0-9a-f]{10}", run_id)
    assert run_id_time(run_id) == WHEN.replace(microsecond=0)
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


def test_run_id_from_object_names():
    run_id = "run-20261127-045219-0123456789"
    assert run_id_from_object_name(f"runs/{run_id}/preprocess/_MANIFEST.json") == run_id
    assert run_id_from_object_name(f"runs/{run_id}/events/20261127T045219.123456Z-train.json") == run_id
    assert run_prefix(run_id) == f"runs/{run_id}/"
    for name in [f"runs/{run_id}", f"runs/{run_id}/", "runs/not-a-run/x.json", "triggers/go.json",
                 f"data/runs/{run_id}/x", f"runs//{run_id}/x"]:
        assert run_id_from_object_name(name) is None, name


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="generation"):
        run_id_for_trigger_object("b", "n", "12x", WHEN)
    with pytest.raises(ValueError, match="non-empty"):
        run_id_for_message("", "1", WHEN)
    with pytest.raises(ValueError, match="naive"):
        run_id_for_message("t", "1", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not a run id"):
        run_id_time("run-2026")
    with pytest.raises(ValueError, match="not a run id"):
        run_prefix("../etc")


def test_start_messages_name_runs_by_what_triggered_them():
    upload = gcs_notification_attributes("bkt", "triggers/go.json", 1764219139123456, WHEN)
    first = PubsubMessage(b"{}", upload, "m-1", "2026-11-27T04:52:20Z")
    redelivered_elsewhere = PubsubMessage(b"{}", upload, "m-2", "2026-11-27T04:55:00Z")
    expected = run_id_for_trigger_object("bkt", "triggers/go.json", 1764219139123456, WHEN)
    assert run_id_for_start_message(first, "mlrelay-start") == expected
    assert run_id_for_start_message(redelivered_elsewhere, "mlrelay-start") == expected

    scheduled = PubsubMessage(b"{}", {}, "555", "2026-11-27T05:00:00.5Z")
    assert run_id_for_start_message(scheduled, "mlrelay-start") == run_id_for_message(
        "mlrelay-start", "555", "2026-11-27T05:00:00Z")
    with pytest.raises(InvalidEvent, match="messageId and publishTime"):
        run_id_for_start_message(PubsubMessage(b"{}"), "mlrelay-start")
