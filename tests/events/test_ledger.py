"""The run ledger: records to JSON and back, and folding records in any order."""
import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from events.errors import InvalidEvent
from events.ledger import (
    LEGAL_TRANSITIONS,
    LedgerEvent,
    RunState,
    fold,
    is_legal_transition,
)

RUN = "run-20261127-045219-0123456789"
T0 = datetime(2026, 11, 27, 4, 52, 19, 123456, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def record(stage, state, seconds, **extra) -> LedgerEvent:
    return LedgerEvent(RUN, stage, RunState(state), at(seconds), **extra)


HAPPY = [
    record("request", "requested", 0, cause_event_id="msg-1"),
    record("preprocess", "preprocessing", 2, job_ids={"dataflow": "2026-11-27_04_52_21-123"}),
    record("train", "training", 300, job_ids={"vertex": "456"}, timings={"launch_s": 1.5}),
    record("deploy", "deploying", 900, job_ids={"deploy_operation": "op-9"}),
    record("deploy", "deployed", 1500, details={"model_version": "3"}),
]


def test_record_round_trips_through_json():
    event = record("train", "training", 300, cause_event_id="e-7", job_ids={"vertex": "456"},
                   details={"metrics": {"rmse": 1.07}}, timings={"launch_s": 0.25})
    data = event.to_json()
    assert isinstance(data, bytes)
    decoded = json.loads(data)
    assert decoded["format"] == "mlrelay.ledger/v1"
    assert decoded["time"] == "2026-11-27T04:57:19.123456Z"
    assert decoded["state"] == "training"
    assert LedgerEvent.from_json(data) == event


def test_happy_path_folds_to_deployed_with_stage_times():
    status = fold(HAPPY)
    assert status.state is RunState.DEPLOYED and status.terminal
    assert status.anomalies == ()
    assert status.job_ids == {"dataflow": "2026-11-27_04_52_21-123", "vertex": "456", "deploy_operation": "op-9"}
    seconds = {name: timing.seconds for name, timing in status.stages.items()}
    assert seconds == {"request": 2.0, "preprocess": 298.0, "train": 600.0, "deploy": 600.0}
    assert status.started == T0 and status.updated == at(1500) and status.records == 5


def test_any_order_folds_the_same():
    rng = random.Random(7)
    expected = fold(HAPPY)
    for _ in range(20):
        shuffled = HAPPY[:]
        rng.shuffle(shuffled)
        assert fold(shuffled) == expected


def test_run_in_progress_reports_open_stage():
    status = fold(HAPPY[:3])
    assert status.state is RunState.TRAINING and not status.terminal
    assert status.stages["train"].start == at(300) and status.stages["train"].end is None
    assert status.stages["train"].seconds is None


def test_terminal_wins_over_later_redeliveries():
    events = HAPPY + [record("train", "training", 1600), record("preprocess", "preprocessing", 1700)]
    status = fold(events)
    assert status.state is RunState.DEPLOYED and status.anomalies == ()
    failed_then_redelivered = [
        record("request", "requested", 0),
        record("preprocess", "preprocessing", 2),
        record("preprocess", "failed", 60, details={"reason": "Workflow failed."}),
        record("preprocess", "preprocessing", 90),  # a redelivered start event
    ]
    status = fold(failed_then_redelivered)
    assert status.state is RunState.FAILED and status.reason == "Workflow failed."
    assert status.stages["preprocess"].end == at(60)


def test_late_earlier_state_never_moves_a_run_backwards():
    events = HAPPY[:3] + [record("preprocess", "preprocessing", 400)]
    status = fold(events)
    assert status.state is RunState.TRAINING and status.anomalies == ()


def test_rejected_request_is_terminal_at_the_request_stage():
    status = fold([record("request", "rejected", 0, details={"reason": "batchSize: 0 is less than the minimum of 1"})])
    assert status.state is RunState.REJECTED
    assert status.reason == "batchSize: 0 is less than the minimum of 1"
    assert status.stages["request"].seconds == 0.0


def test_conflicting_terminals_keep_the_first_and_report_the_other():
    events = HAPPY + [record("deploy", "failed", 1600, details={"reason": "late"})]
    status = fold(events)
    assert status.state is RunState.DEPLOYED
    assert len(status.anomalies) == 1 and "failed" in status.anomalies[0] and "deployed" in status.anomalies[0]


def test_skipped_stage_is_reported_as_an_anomaly():
    status = fold([record("request", "requested", 0), record("train", "training", 10)])
    assert status.state is RunState.TRAINING
    assert status.anomalies == ("illegal transition requested -> training at 2026-11-27T04:52:29.123456Z",)


def test_transition_table():
    assert is_legal_transition(None, RunState.REQUESTED)
    assert is_legal_transition(None, RunState.REJECTED)
    assert not is_legal_transition(None, RunState.TRAINING)
    assert is_legal_transition(RunState.TRAINING, RunState.TRAINING)
    assert is_legal_transition(RunState.TRAINING, RunState.REJECTED)
    assert not is_legal_transition(RunState.DEPLOYED, RunState.FAILED)
    assert all(not LEGAL_TRANSITIONS[state] for state in (RunState.DEPLOYED, RunState.REJECTED,
                                                          RunState.ROLLED_BACK, RunState.FAILED))


@pytest.mark.parametrize("path, state, reason", [
    # a blessed candidate beside a champion: a canary, then promoted or rolled back
    ([("deploy", "deploying", 900), ("release", "baking", 1000), ("release", "deployed", 1900)], "deployed", None),
    ([("deploy", "deploying", 900), ("release", "baking", 1000),
      ("release", "rolled-back", 1900, "bake: roll back: errors")], "rolled-back", "bake: roll back: errors"),
    ([("deploy", "deploying", 900), ("release", "baking", 1000), ("release", "failed", 1900, "canary gone")],
     "failed", "canary gone"),
    # the gate, or a canary already baking, stops the candidate after training
    ([("deploy", "rejected", 900, "gate: not blessed")], "rejected", "gate: not blessed"),
    # the data check stops a run whose manifest arrived, before any training
    ([("train", "rejected", 250, "data check: data unlike")], "rejected", "data check: data unlike"),
], ids=["promoted", "rolled-back", "canary-lost", "gate", "data-check"])
def test_the_release_paths_fold_without_anomalies(path, state, reason):
    events = HAPPY[:2] + ([HAPPY[2]] if path[0][0] != "train" else [])
    for stage, name, seconds, *why in path:
        events.append(record(stage, name, seconds, details={"reason": why[0]} if why else {}))
    status = fold(events)
    assert status.state is RunState(state) and status.terminal == (state != "baking")
    assert status.anomalies == () and status.reason == reason
    assert fold(list(reversed(events))) == status


def test_a_baking_run_is_not_ended_and_its_release_stage_is_open():
    status = fold(HAPPY[:4] + [record("release", "baking", 1000)])
    assert status.state is RunState.BAKING and not status.terminal
    assert status.stages["deploy"].end == at(1000) and status.stages["release"].end is None
    late = fold(HAPPY[:4] + [record("release", "baking", 1000), record("deploy", "deploying", 1100)])
    assert late.state is RunState.BAKING and late.anomalies == (), "a redelivered deploy never moves it back"


def test_release_states_happen_only_in_their_stages():
    for stage, state in [("train", "baking"), ("deploy", "rolled-back"), ("release", "rejected")]:
        with pytest.raises(InvalidEvent, match="cannot happen in stage"):
            record(stage, state, 1)


def test_fold_refuses_nothing_or_mixed_runs():
    with pytest.raises(ValueError, match="at least one"):
        fold([])
    other = LedgerEvent("run-20261127-045219-abcdefabcd", "request", RunState.REQUESTED, T0)
    with pytest.raises(ValueError, match="several runs"):
        fold([HAPPY[0], other])


# --- the queue -------------------------------------------------------------------------------------

QUEUED = record("request", "queued", 1, details={"reason": "2 runs active: queued at position 1", "position": 1})


def test_a_queued_run_waits_in_the_request_stage_and_says_why():
    status = fold([HAPPY[0], QUEUED])
    assert status.state is RunState.QUEUED and not status.terminal and status.anomalies == ()
    assert status.reason == "2 runs active: queued at position 1"
    assert status.stages["request"].end is None


def test_a_queued_run_started_later_folds_like_any_other_in_any_order():
    events = [HAPPY[0], QUEUED, *HAPPY[1:]]
    status = fold(events)
    assert status.state is RunState.DEPLOYED and status.anomalies == () and status.reason is None
    assert status.stages["request"].end == at(2), "the request stage lasts until preprocessing starts"
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert fold(shuffled) == status
    assert fold([HAPPY[0], QUEUED, HAPPY[1], record("request", "queued", 5)]).state is RunState.PREPROCESSING, (
        "a late queued record never moves a started run back")


def test_a_queued_run_may_be_refused_or_fail_but_not_skip_preprocessing():
    assert is_legal_transition(RunState.REQUESTED, RunState.QUEUED)
    assert is_legal_transition(RunState.QUEUED, RunState.QUEUED)
    assert LEGAL_TRANSITIONS[RunState.QUEUED] == {RunState.PREPROCESSING, RunState.REJECTED, RunState.FAILED}
    assert not is_legal_transition(None, RunState.QUEUED)
    assert not is_legal_transition(RunState.QUEUED, RunState.TRAINING)
    assert not is_legal_transition(RunState.PREPROCESSING, RunState.QUEUED)
    refused = fold([HAPPY[0], QUEUED, record("request", "rejected", 9, details={"reason": "cancelled"})])
    assert refused.state is RunState.REJECTED and refused.reason == "cancelled" and refused.anomalies == ()
    with pytest.raises(InvalidEvent, match="cannot happen in stage"):
        record("preprocess", "queued", 1)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"run_id": "run-1"}, "not a run id"),
        ({"stage": "party"}, "unknown stage"),
        ({"state": "exploded"}, "unknown state"),
        ({"stage": "request", "state": "training"}, "cannot happen in stage"),
        ({"time": "yesterday"}, "time"),
        ({"time": 5}, "RFC 3339 string"),
        ({"format": "other/v9"}, "format"),
        ({"job_ids": {"vertex": 456}}, "job_ids"),
        ({"timings": {"launch_s": "slow"}}, "timings"),
        ({"details": []}, "details"),
    ],
)
def test_malformed_records_are_refused(change, words):
    good = json.loads(HAPPY[2].to_json())
    with pytest.raises(InvalidEvent, match=words):
        LedgerEvent.from_json({**good, **change})


def test_records_that_are_not_json_objects_are_refused():
    for raw in [b"\xff", b"[]", "not json", json.dumps({"format": "mlrelay.ledger/v1"})]:
        with pytest.raises(InvalidEvent):
            LedgerEvent.from_json(raw)
    with pytest.raises(InvalidEvent, match="details are not JSON"):
        record("train", "training", 1, details={"x": float("nan")})
