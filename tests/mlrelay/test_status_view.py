"""`mlrelay status RUN`: the run view of a deployed, a gate-rejected, a failed and a training run,
built from records in a bucket directory through the real run store."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from events.ledger import LedgerEvent
from functions.local_adapters import LocalStorage
from functions.run_store import RunStore, comparison_name, metrics_name, request_name
from mlrelay.cli import main
from mlrelay.run_view import NoSuchRun, progress_name, run_view
from mlrelay.status_view import format_run_view

BUCKET = "mlrelay"
DEPLOYED = "run-20261127-080000-0123456789"
REJECTED = "run-20261127-090000-abcdefabcd"
FAILED = "run-20261127-100000-0000000000"
TRAINING = "run-20261127-110000-1111111111"
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
CHAMPION = "projects/p/locations/r/models/babyweight@1"
CANDIDATE = "projects/p/locations/r/models/babyweight@2"
INPUT = {"limit": 50000, "rows_dropped": 1503, "rows_read": 50000, "rows_valid": 48497}
SPLITS = {"eval": 18940, "train": 78054}
DATA_CHECK = {"passed": True, "reason": "data in line with the last good run (4 checks passed)",
              "checks": [{"name": "rows_read", "passed": True, "value": 50000, "bound": [25000.0, 75000.0]}]}


def bucket(root: Path) -> tuple[RunStore, Path]:
    """The bucket directory the CLI reads under --root ROOT (ROOT/buckets/mlrelay)."""
    directory = root / "buckets" / BUCKET
    return RunStore(LocalStorage(directory), BUCKET), directory


def record(runs: RunStore, run_id: str, stage: str, state: str, seconds: float, **details) -> None:
    hour = int(run_id[13:15]) - 8
    job_ids = details.pop("job_ids", {})
    runs.append(LedgerEvent(run_id, stage, state, T0 + timedelta(hours=hour, seconds=seconds),
                            job_ids=job_ids, details=details))


def start(runs: RunStore, run_id: str) -> None:
    runs.storage.write(request_name(run_id), json.dumps({
        "runId": run_id, "origin": {"kind": "trigger-file", "object": "gs://mlrelay/triggers/nightly.json"},
        "request": {"limit": 50000, "source": "data/natality.parquet"}}).encode())
    record(runs, run_id, "request", "requested", 0, origin={"kind": "trigger-file"})
    record(runs, run_id, "preprocess", "preprocessing", 0.5, job_ids={"preprocess": "df-7"})


def trained(runs: RunStore, run_id: str, rmse: float, champion_rmse: float) -> None:
    record(runs, run_id, "train", "training", 3.5, job_ids={"train": "4242"}, rows=SPLITS, input=INPUT,
           data_check=DATA_CHECK, champion=CHAMPION)
    metrics = {"eval_rmse": rmse, "baseline_rmse": 1.3164, "bayes_floor": 1.0343, "best_possible_rmse": 1.0424,
               "eval_examples": 18940,
               "train_examples_seen": 466944, "train_time_s": 5.7}
    runs.storage.write(metrics_name(run_id), json.dumps(metrics).encode())
    runs.storage.write(comparison_name(run_id), json.dumps({
        "format": "mlrelay-model-comparison/1", "eval_rows": 18940, "mean_baseline_rmse": 1.3164,
        "candidate": {"rmse": rmse, "slices": {"plurality=Twins(2)": {"rmse": 1.06, "rows": 310}}},
        "champion": {"artifact_uri": "gs://mlrelay/runs/x/train/model", "rmse": champion_rmse,
                     "slices": {"plurality=Twins(2)": {"rmse": 1.05, "rows": 310}}}}).encode())


@pytest.fixture()
def root(tmp_path) -> Path:
    runs, _ = bucket(tmp_path)
    # A canary that baked and was promoted.
    start(runs, DEPLOYED)
    trained(runs, DEPLOYED, 1.0480, 1.0712)
    gate = {"blessed": True, "reason": "blessed: candidate RMSE 1.048 is 20.4 % below the mean baseline's 1.316",
            "checks": [{"name": "rmse_vs_champion", "passed": True, "value": 1.048, "bound": 1.0926}]}
    record(runs, DEPLOYED, "deploy", "deploying", 15.0, job_ids={"train": "4242"}, gate=gate,
           model_version=CANDIDATE, rollout="canary", traffic_split={"0": 10, "1": 90},
           metrics={"eval_rmse": 1.0480})
    record(runs, DEPLOYED, "release", "baking", 20.0, model_version=CANDIDATE, champion="1", deployed_model_id="2",
           bake_ends="2026-11-27T08:00:25+00:00", traffic_split={"1": 90, "2": 10})
    record(runs, DEPLOYED, "release", "deployed", 26.0, model_version=CANDIDATE, champion="1", deployed_model_id="2",
           traffic_split={"2": 100}, figures={"1": {"requests": 180, "errors": 0, "latency_p99_ms": 12.5},
                                              "2": {"requests": 20, "errors": 0, "latency_p99_ms": 13.0}},
           bake={"promote": True, "reason": "promote: 20 requests, no errors",
                 "checks": [{"name": "error_rate", "passed": True, "value": 0.0, "bound": 0.01}]})
    runs.record_release("2026-11-27T08:00:20Z", DEPLOYED, "canary",
                        {"time": "2026-11-27T08:00:20+00:00", "from": {"1": 100}, "to": {"1": 90, "2": 10},
                         "by": "on_training_complete", "why": "passed the gate"})
    runs.record_release("2026-11-27T08:00:26Z", DEPLOYED, "promoted",
                        {"time": "2026-11-27T08:00:26+00:00", "from": {"1": 90, "2": 10}, "to": {"2": 100},
                         "by": "on_release_event (bake end)", "why": "promote: 20 requests, no errors"})
    # A candidate the gate turned down.
    start(runs, REJECTED)
    trained(runs, REJECTED, 1.2000, 1.0480)
    gate = {"blessed": False, "reason": "not blessed: candidate RMSE 1.200 is 14.5 % worse than the champion's 1.048",
            "checks": [{"name": "rmse_vs_champion", "passed": False, "value": 1.2, "bound": 1.0689}]}
    record(runs, REJECTED, "deploy", "rejected", 15.0, gate=gate, model_version="projects/p/locations/r/models/babyweight@3",
           reason=f"gate: {gate['reason']}", metrics={"eval_rmse": 1.2})
    # A preprocessing job that failed, its error spanning lines.
    start(runs, FAILED)
    record(runs, FAILED, "preprocess", "failed", 40.0, reason="Dataflow job df-7 failed:\n  Traceback ...\n  KeyError: 'plurality'")
    # A run that is training now, its trainer reporting progress.
    start(runs, TRAINING)
    record(runs, TRAINING, "train", "training", 3.5, job_ids={"train": "5151"}, rows=SPLITS, input=INPUT,
           data_check=DATA_CHECK)
    runs.storage.write(progress_name(TRAINING), json.dumps({
        "format": "mlrelay.training-progress/v1", "examples_seen": 155648, "examples_total": 466944,
        "evaluations_done": 2, "evaluations_total": 6, "last_eval_rmse": 1.0375,
        "updated": "2026-11-27T11:00:09Z"}).encode())
    return tmp_path


def test_a_deployed_canary_shows_every_figure(root):
    runs, _ = bucket(root)
    view = run_view(runs, DEPLOYED)
    json.dumps(view, allow_nan=False)  # JSON-able as it is
    assert view["state"] == "deployed" and view["terminal"] and "reason" not in view
    assert view["request"] == {"limit": 50000, "source": "data/natality.parquet"}
    assert view["origin"]["object"] == "gs://mlrelay/triggers/nightly.json"
    assert view["job_ids"] == {"preprocess": "df-7", "train": "4242"}
    assert list(view["stages"]) == ["request", "preprocess", "train", "deploy", "release"]
    assert view["stages"]["train"] == {"state": "training", "start": "2026-11-27T08:00:03.500000Z",
                                       "end": "2026-11-27T08:00:15.000000Z", "seconds": 11.5}
    assert view["rows"] == {"read": 50000, "dropped": 1503, "valid": 48497, "limit": 50000, "splits": SPLITS}
    assert view["eval"]["rmse"] == 1.048 and view["eval"]["champion"]["rmse"] == 1.0712
    assert view["eval"]["champion"]["version"] == CHAMPION
    assert view["eval"]["baseline_rmse"] == 1.3164 and view["eval"]["bayes_floor"] == 1.0343
    assert view["eval"]["best_possible_rmse"] == 1.0424
    assert view["eval"]["slices"]["plurality=Twins(2)"] == {"rmse": 1.06, "rows": 310, "champion_rmse": 1.05}
    assert view["gate"]["blessed"] and view["data_check"]["passed"]
    assert view["release"]["rollout"] == "canary" and view["release"]["bake"]["promote"]
    assert view["release"]["figures"]["2"]["requests"] == 20
    assert [change["action"] for change in view["release"]["changes"]] == ["canary", "promoted"]
    assert view["model_version"] == CANDIDATE and view["traffic_split"] == {"2": 100}
    assert "training_progress" not in view

    text = format_run_view(view)
    for words in ("run run-20261127-080000-0123456789: deployed", "from trigger-file gs://mlrelay/triggers/nightly.json",
                  "train       training       08:00:03.500 → 08:00:15.000    11.50 s  job 4242",
                  "rows: read 50,000, dropped 1,503, valid 48,497; train 78,054, eval 18,940",
                  "candidate RMSE       1.0480 lb", "champion RMSE        1.0712 lb (candidate -2.2 %)  [babyweight@1]",
                  "predicting the mean  1.3164 lb", "Bayes floor          1.0343 lb (candidate 1.013 × floor)",
                  "best possible        1.0424 lb on these rows (candidate 1.0054 ×)",
                  "gate: blessed: candidate RMSE 1.048", "release: canary, baking until 2026-11-27 08:00:25",
                  "bake verdict: promote: 20 requests, no errors", "deployed model 2: 20 requests, 0 errors, p99 13.0 ms",
                  "canary     1:100% → 1:90% 2:10%", "endpoint traffic 2:100%", "data check: passed"):
        assert words in text, (words, text)
    assert "reason:" not in text


def test_a_gate_rejection_says_why_on_one_line(root):
    runs, _ = bucket(root)
    view = run_view(runs, REJECTED)
    assert view["state"] == "rejected"
    assert view["reason"] == "gate: not blessed: candidate RMSE 1.200 is 14.5 % worse than the champion's 1.048"
    assert view["gate"]["blessed"] is False and view["eval"]["rmse"] == 1.2
    assert "release" not in view
    text = format_run_view(view)
    assert text.splitlines()[1] == f"  reason: {view['reason']}"
    assert "NO  rmse_vs_champion" in text and "champion RMSE        1.0480 lb (candidate +14.5 %)" in text


def test_a_failed_run_has_its_reason_and_nothing_it_never_reached(root):
    runs, _ = bucket(root)
    view = run_view(runs, FAILED)
    assert view["state"] == "failed"
    assert view["reason"] == "Dataflow job df-7 failed: Traceback ... KeyError: 'plurality'"
    for absent in ("eval", "gate", "release", "rows", "data_check", "model_version", "training_progress"):
        assert absent not in view, absent
    text = format_run_view(view)
    assert "  reason: Dataflow job df-7 failed: Traceback ... KeyError: 'plurality'" in text
    assert "RMSE" not in text and "gate" not in text


def test_a_training_run_shows_the_trainers_progress(root):
    runs, _ = bucket(root)
    view = run_view(runs, TRAINING)
    assert view["state"] == "training" and view["stages"]["train"]["end"] is None
    assert view["training_progress"] == {"examples_seen": 155648, "examples_total": 466944, "evaluations_done": 2,
                                         "evaluations_total": 6, "last_eval_rmse": 1.0375,
                                         "updated": "2026-11-27T11:00:09Z", "fraction": 0.3333}
    assert ("training: 155,648 of 466,944 examples (33%), evaluation 2 of 6, last eval RMSE 1.0375"
            in format_run_view(view))


@pytest.mark.parametrize("body", [b"{not json", b"[]", json.dumps({"format": "other/v9", "examples_seen": 1}).encode(),
                                  json.dumps({"format": "mlrelay.training-progress/v1"}).encode(),
                                  json.dumps({"format": "mlrelay.training-progress/v1", "examples_seen": "many"}).encode()])
def test_a_malformed_progress_file_is_no_progress(root, body):
    runs, _ = bucket(root)
    runs.storage.write(progress_name(TRAINING), body)
    view = run_view(runs, TRAINING)
    assert view["state"] == "training" and "training_progress" not in view


def test_an_unknown_run_is_one_clear_line(root, capsys):
    runs, _ = bucket(root)
    missing = "run-20261127-120000-9999999999"
    with pytest.raises(NoSuchRun):
        run_view(runs, missing)
    assert main(["status", missing, "--root", str(root)]) == 2
    assert main(["status", missing, "--root", str(root), "--follow"]) == 2
    err = capsys.readouterr().err
    assert err == f"mlrelay status: no run {missing}\n" * 2


def test_the_cli_prints_the_view_as_text_and_as_json(root, capsys):
    assert main(["status", REJECTED, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {REJECTED}: rejected\n  reason: gate: not blessed: candidate RMSE 1.200")
    assert main(["status", REJECTED, "--root", str(root), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["run_id"] == REJECTED and view["gate"]["checks"][0]["value"] == 1.2


def test_the_table_of_runs_has_rmse_and_decision_columns(root, capsys):
    assert main(["status", "--root", str(root)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("run-")}
    assert "RMSE 1.0480  promoted" in lines[DEPLOYED]
    assert "RMSE 1.2000  gate rejected" in lines[REJECTED] and "reason: gate: not blessed" in lines[REJECTED]
    assert "RMSE -" in lines[FAILED] and "reason: Dataflow job df-7 failed: Traceback" in lines[FAILED]
    assert main(["status", "--root", str(root), "--json"]) == 0
    rows = {row["run_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[DEPLOYED]["eval_rmse"] == 1.048 and rows[DEPLOYED]["decision"] == "promoted"
    assert rows[TRAINING]["state"] == "training" and rows[TRAINING]["eval_rmse"] is None


def test_a_record_redelivered_after_the_end_changes_nothing_shown(root):
    runs, _ = bucket(root)
    record(runs, FAILED, "train", "training", 50.0, job_ids={"train": "late"})  # a late redelivery
    view = run_view(runs, FAILED)
    assert view["state"] == "failed" and list(view["stages"]) == ["request", "preprocess"]
    assert view["stages"]["preprocess"]["state"] == "failed" and "anomalies" not in view
