"""The run store: every bucket path made in one place, and runs read back through it."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from events.ledger import LedgerEvent, RunState
from functions import run_store
from functions.run_store import (
    deployment_index_name,
    ledger_name,
    ledger_prefix,
    manifest_name,
    manifest_run_id,
    parse_ledger_name,
    run_prefix,
)

RUN = "run-20261127-045219-0123456789"
T0 = datetime(2026, 11, 27, 4, 52, 19, 123456, tzinfo=timezone.utc)


def event(stage, state, seconds, run_id=RUN, **extra) -> LedgerEvent:
    return LedgerEvent(run_id, stage, RunState(state), T0 + timedelta(seconds=seconds), **extra)


def test_the_layout_is_the_one_design_md_gives():
    assert run_prefix(RUN) == f"runs/{RUN}/"
    assert run_store.request_name(RUN) == f"runs/{RUN}/request.json"
    assert manifest_name(RUN) == f"runs/{RUN}/preprocess/_MANIFEST.json"
    assert run_store.train_prefix(RUN) == f"runs/{RUN}/train/"
    assert run_store.metrics_name(RUN) == f"runs/{RUN}/train/metrics.json"
    assert run_store.launch_marker_name(RUN, "train") == f"runs/{RUN}/train/_LAUNCHED"
    assert deployment_index_name("projects/p/locations/r/endpoints/e/operations/42") == "deployments/42.json"
    with pytest.raises(ValueError, match="not a run id"):
        run_prefix("../etc")
    with pytest.raises(ValueError):
        run_store.launch_marker_name(RUN, "request")


def test_ledger_names_sort_by_time_within_the_run_and_parse_back():
    names = [ledger_name(RUN, T0 + timedelta(seconds=s), stage)
             for s, stage in ((0, "request"), (2, "preprocess"), (300, "train"), (900, "deploy"))]
    assert names[0] == f"runs/{RUN}/events/20261127T045219.123456Z-request.json"
    assert all(name.startswith(ledger_prefix(RUN)) for name in names)
    assert sorted(reversed(names)) == names
    assert parse_ledger_name(names[2]) == (RUN, T0 + timedelta(seconds=300), "train")
    for other in [f"runs/{RUN}/request.json", f"runs/{RUN}/events/x-train.json",
                  f"runs/{RUN}/events/20261127T045219.123456Z-party.json", "triggers/a.json"]:
        assert parse_ledger_name(other) is None


def test_objects_are_told_apart_by_name_alone():
    assert manifest_run_id(manifest_name(RUN)) == RUN
    for name in [f"runs/{RUN}/preprocess/train.csv-00000-of-00001", f"runs/{RUN}/preprocess/_MANIFEST.json.tmp",
                 "runs/run-x/preprocess/_MANIFEST.json", f"runs/{RUN}/a/preprocess/_MANIFEST.json",
                 f"tmp/runs/{RUN}/preprocess/_MANIFEST.json", None]:
        assert manifest_run_id(name) is None, name


def test_requests_are_created_once_and_read_back_validated(runs):
    doc = {"runId": RUN, "origin": {"kind": "trigger-file", "object": "gs://b/triggers/a.json"},
           "request": {"limit": 5}}
    assert runs.create_request(RUN, doc) is True
    assert runs.create_request(RUN, {**doc, "request": {"limit": 6}}) is False
    assert runs.read_request(RUN).limit == 5
    assert runs.request_origin(RUN) == doc["origin"]
    assert runs.has_run(RUN) and runs.run_ids() == [RUN]
    assert runs.find_run_for_trigger("gs://b/triggers/a.json") == RUN
    assert runs.find_run_for_trigger("gs://b/triggers/other.json") is None


def test_a_half_written_or_missing_request_has_no_origin_and_no_trigger_finds_it(runs, tmp_path):
    runs.storage.write(run_store.request_name(RUN), b"{half")
    assert runs.request_origin(RUN) == {}
    (tmp_path / "b" / "runs" / "run-20261127-080100-0000000000").mkdir()  # a run with no request yet
    (tmp_path / "b" / "runs" / "not-a-run").mkdir()
    assert runs.request_origin("run-20261127-080100-0000000000") == {}
    assert runs.run_ids() == [RUN, "run-20261127-080100-0000000000"]
    assert runs.find_run_for_trigger("gs://b/triggers/a.json") is None


def test_the_ledger_folds_every_readable_record_of_each_run(runs):
    other = "run-20261127-050000-abcdef0123"
    for record in (event("request", "requested", 0), event("preprocess", "preprocessing", 2),
                   event("request", "requested", 5, run_id=other)):
        runs.append(record)
    runs.storage.write(f"{ledger_prefix(RUN)}20261127T050000.000000Z-train.json", b"not a record")
    assert {run_id: len(events) for run_id, events in runs.ledger().items()} == {RUN: 2, other: 1}
    assert [s.run_id for s in runs.statuses()] == [RUN, other]
    (status,) = runs.statuses(RUN)
    assert status.state is RunState.PREPROCESSING


def test_a_trigger_is_looked_for_again_skipping_the_runs_found_to_be_anothers(runs):
    run_a, run_b, run_c = (f"run-20261127-05000{i}-{i:010x}" for i in range(3))
    for run_id, uri in ((run_a, "gs://b/triggers/other.json"), (run_b, "gs://b/triggers/mine.json")):
        runs.create_request(run_id, {"origin": {"object": uri}})
    runs.storage.write(run_store.request_name(run_c), b"{half written")
    others: set[str] = set()
    assert runs.find_run_for_trigger("gs://b/triggers/none.json", others) is None
    assert others == {run_a, run_b}, "a request being written (run_c) is looked at again next time"
    assert runs.find_run_for_trigger("gs://b/triggers/mine.json", set()) == run_b
    assert runs.find_run_for_trigger("gs://b/triggers/mine.json", {run_b}) is None


def test_deployments_are_indexed_by_operation_and_recorded_once(runs):
    op = "projects/p/locations/r/endpoints/e/operations/42"
    assert runs.deployment(op) is None
    runs.index_deployment(op, RUN, "projects/p/locations/r/models/m@3")
    assert runs.deployment(op) == {"run_id": RUN, "operation": op, "model_version": "projects/p/locations/r/models/m@3"}
    assert runs.mark_deployed(RUN, runs.deployment(op)) is True
    assert runs.mark_deployed(RUN, runs.deployment(op)) is False


def test_stage_outputs_are_read_from_their_places(runs):
    assert runs.read_metrics(RUN) == {}
    runs.storage.write(run_store.metrics_name(RUN), json.dumps({"eval_rmse": 1.04}).encode())
    assert runs.read_metrics(RUN) == {"eval_rmse": 1.04}
    runs.storage.write(manifest_name(RUN), b'{"format": "x"}')
    assert runs.read_manifest(RUN) == {"format": "x"}


def test_only_trigger_files_are_read_as_triggers(runs):
    runs.storage.write("triggers/a.json", b"{}")
    assert runs.read_trigger("triggers/a.json", max_bytes=10) == b"{}"
    with pytest.raises(ValueError):
        runs.read_trigger(run_store.request_name(RUN), max_bytes=10)
    for walks_out in ("triggers/../../../../etc/passwd", "triggers/a/../../runs/x.json", "triggers//a.json",
                      "triggers/./a.json", "triggers/"):
        assert not run_store.is_trigger_name(walks_out), walks_out
    assert run_store.is_trigger_name("triggers/nightly/2026-12-01.json")


def test_release_names_are_the_run_stores(runs):
    assert run_store.comparison_name(RUN) == f"runs/{RUN}/train/comparison.json"
    assert run_store.launch_marker_name(RUN, "release") == f"runs/{RUN}/release/_LAUNCHED"
    assert run_store.rollback_marker_name("rollback-e-1", "launched") == "rollbacks/rollback-e-1/_LAUNCHED"
    assert run_store.rollback_marker_name("rollback-e-1", "done") == "rollbacks/rollback-e-1/_DONE"
    assert run_store.release_record_name(T0, RUN, "rolled-back") == (
        f"releases/20261127T045219.123456Z-{RUN}-rolled-back.json")
    with pytest.raises(ValueError):
        run_store.rollback_marker_name("rollback-e-1", "begun")
    with pytest.raises(ValueError):
        run_store.release_record_name(T0, RUN, "../promoted")


def test_the_comparison_is_read_from_the_trainers_output(runs):
    with pytest.raises(run_store.NotFound):
        runs.read_comparison(RUN)
    runs.storage.write(run_store.comparison_name(RUN), b'{"format": "mlrelay-model-comparison/1"}')
    assert runs.read_comparison(RUN) == {"format": "mlrelay-model-comparison/1"}
    runs.storage.write(run_store.comparison_name(RUN), b"{not json")
    with pytest.raises(ValueError):
        runs.read_comparison(RUN)


def test_releases_are_recorded_once_each_and_read_back_oldest_first(runs):
    runs.record_release(T0 + timedelta(seconds=5), RUN, "promoted", {"to": {"dm2": 100}})
    runs.record_release(T0, RUN, "canary", {"to": {"dm2": 10, "dm1": 90}})
    runs.record_release(T0, RUN, "canary", {"to": {"changed": 100}})  # a redelivery keeps the first record
    assert runs.releases() == [{"action": "canary", "run_id": RUN, "to": {"dm2": 10, "dm1": 90}},
                               {"action": "promoted", "run_id": RUN, "to": {"dm2": 100}}]


def test_the_deployed_record_and_the_last_run_in_service(runs):
    other, rolled = "run-20261127-045219-abcdefabcd", "run-20261127-045219-bbbbbbbbbb"
    assert runs.deployed_record(RUN) is None and runs.last_serving_run(other_than=RUN) is None
    runs.mark_deployed(RUN, {"kind": "canary", "deployed_model_id": "dm2"})
    assert runs.deployed_record(RUN) == {"kind": "canary", "deployed_model_id": "dm2"}
    for run_id, states in [(RUN, ("requested", "deployed")), (other, ("requested", "deployed")),
                           (rolled, ("requested", "rolled-back"))]:
        for offset, state in enumerate(states):
            stage = {"requested": "request", "deployed": "deploy", "rolled-back": "release"}[state]
            seconds = {RUN: 10, other: 20, rolled: 30}[run_id] + offset
            runs.append(event(stage, state, seconds, run_id=run_id))
    assert runs.last_serving_run(other_than="run-20261127-045219-cccccccccc").run_id == other
    assert runs.last_serving_run(other_than=other).run_id == RUN, "a rolled-back run never served all traffic"


def test_an_endpoint_has_one_release_slot_taken_over_only_from_a_holder_that_ended(runs):
    first, second = "run-20261127-050000-aaaaaaaaaa", "run-20261127-050001-bbbbbbbbbb"
    assert runs.claim_release_slot("e", first) is None
    assert runs.claim_release_slot("e", first) is None  # a redelivery holds it still
    assert runs.claim_release_slot("e", second) == first
    runs.free_release_slot("e", second)  # not the holder: nothing happens
    assert runs.claim_release_slot("e", second) == first
    # the holder ended without freeing it (a crash after its last record): the slot is taken over
    runs.append(LedgerEvent(run_id=first, stage="request", state=RunState.REJECTED,
                            time=datetime(2026, 11, 27, 5, tzinfo=timezone.utc), cause_event_id="x",
                            details={"reason": "r"}))
    assert runs.claim_release_slot("e", second) is None
    runs.free_release_slot("e", second)
    assert runs.claim_release_slot("e", "rollback-1") is None
    assert runs.claim_release_slot("e", first) == "rollback-1"
