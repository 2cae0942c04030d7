"""The benchmark suite: its figures are computed right, and each benchmark runs on a tiny size.

The ``--quick`` runs check that every benchmark works end to end and returns its documented
keys with sane values; they time nothing (the figures of a tiny run mean nothing).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from bench import boosted_baseline, coldstart, demo, handoff, linear_baseline, polling, preprocess, report, serve, train
from bench import seeds as seed_spread
from bench.preprocess_baseline import same_rows
from bench.processes import process_tree, tree_rss_bytes
from bench.settings import BenchSettings
from functions.config import Config
from functions.platform import DeployOperation, JobRef, ModelVersion, Platform, TrainingJob
from tests.conftest import REPO

REPO_ROOT = REPO


# --- the figures ------------------------------------------------------------------------------------


def test_latency_summary_interpolates_percentiles_and_skips_missing_values():
    summary = report.latency_summary([float(v) for v in range(1, 101)] + [None])
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p95_ms"] == pytest.approx(95.05)
    assert summary["max_ms"] == 100.0 and summary["mean_ms"] == pytest.approx(50.5)
    assert report.latency_summary([])["p50_ms"] is None
    with pytest.raises(ValueError, match="finite"):
        report.latency_summary([1.0, float("nan")])


def test_ratio_and_rate_refuse_to_divide_by_nothing():
    assert report.ratio(30_000, 60.0, 1) == 500.0
    assert report.ratio(1.0, 0) is None and report.ratio(None, 2.0) is None
    assert report.per_second(1_000_000, 4.0) == 250_000.0
    assert report.per_second(10, 0) is None


def test_tables_align_numbers_right_and_reject_ragged_rows():
    text = report.format_table("title", ["name", "ms"], [["a", 1.5], ["longer", 1234.0], ["none", None]], ["a note"])
    lines = text.splitlines()
    assert lines[0] == "title" and lines[-1] == "  a note"
    assert lines[3].endswith(" 1.50") and lines[4].endswith("1,234") and lines[5].endswith("-")
    assert len({len(line) for line in lines[1:6]}) == 1
    with pytest.raises(ValueError, match="cells"):
        report.format_table("t", ["a", "b"], [["only one"]])


def test_polled_runs_are_spread_among_the_event_driven_ones():
    order = handoff.interleave(8, 2)
    assert order.count("polled") == 2 and order.count("event") == 8
    first, second = [i for i, kind in enumerate(order) if kind == "polled"]
    assert 1 <= first <= 3 and 5 <= second <= 8
    assert handoff.interleave(0, 1) == ["polled"]
    with pytest.raises(ValueError):
        handoff.interleave(-1, 0)


def test_the_polling_design_is_reported_at_half_its_interval_against_the_event_p50():
    event = [{"handoffs_ms": {"trigger_to_preprocess": 40.0, "manifest_to_training": 60.0,
                              "training_to_deploy": 120.0, "deploy_to_deployed": 10.0}}] * 3
    polled = [{"handoffs_ms": {"manifest_to_training": 900.0, "training_to_deploy": 1100.0,
                               "deploy_to_deployed": 1000.0}}]
    figures = handoff.summarize(event, polled, poll_interval_s=60.0, measure_interval_s=2.0)
    assert figures["manifest_to_training"]["polling_expected_ms"] == 30_000.0
    assert figures["manifest_to_training"]["ratio"] == 500.0
    assert figures["training_to_deploy"]["polling_measured"]["mean_over_half_interval"] == 1.1
    assert figures["trigger_to_preprocess"]["polling_expected_ms"] is None
    assert figures["trigger_to_preprocess"]["polling_measured"] is None


def test_terminal_times_key_jobs_and_deploy_operations_by_their_own_ids(tmp_path):
    from events.log_entries import JobOutcome
    from local_cloud.logging.entries import deploy_model_audit_entry, vertex_job_log_entry, vertex_job_terminal_entry

    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    entries = [
        vertex_job_log_entry("p", "111", "epoch 1/1", start, "a"),
        vertex_job_terminal_entry("p", "111", JobOutcome.SUCCEEDED, start + timedelta(seconds=1), "b"),
        deploy_model_audit_entry("p", "us-central1", "babyweight", "7", start + timedelta(seconds=2), "c"),
        deploy_model_audit_entry("p", "us-central1", "babyweight", "8", start + timedelta(seconds=3), "d"),
    ]
    log_file = tmp_path / "entries.jsonl"
    log_file.write_text("\n".join(json.dumps(e) for e in entries) + "\nnot json\n")
    times = handoff.terminal_times(log_file)
    assert times[(handoff.training_kind(), "111")] == start + timedelta(seconds=1)
    assert times[(handoff.deploy_kind(), "8")] == start + timedelta(seconds=3)
    assert len(times) == 3
    assert handoff.terminal_times(tmp_path / "missing.jsonl") == {}


def test_a_handoff_is_split_into_publishing_queueing_and_the_function():
    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    ms = timedelta(milliseconds=1)
    result = {"handoffs_ms": {"manifest_to_training": 50.0, "training_to_deploy": 30.0},
              "events": {"manifest_to_training": ("storage", "runs/r/preprocess/_MANIFEST.json"),
                         "training_to_deploy": ("job-events", "vertex", "42")},
              "launched": {"manifest_to_training": start + 50 * ms, "training_to_deploy": start + 30 * ms}}
    deliveries = {("storage", "runs/r/preprocess/_MANIFEST.json"): (start + 8 * ms, start + 10 * ms)}
    parts = handoff.breakdown(result, deliveries)
    assert parts == {"manifest_to_training": {"to_publish_ms": 8.0, "queued_ms": 2.0, "in_function_ms": 40.0}}


# --- the polling orchestrator, against fakes ---------------------------------------------------------


class FakeStorage:
    def __init__(self, manifest_after_checks: int):
        self.checks = 0
        self.manifest_after_checks = manifest_after_checks

    def exists(self, name: str) -> bool:
        assert name.startswith("polled/") and name.endswith("/preprocess/_MANIFEST.json")
        self.checks += 1
        return self.checks >= self.manifest_after_checks


class FakeJobs:
    def __init__(self, final_state: str):
        self.final_state = final_state
        self.launched: list[tuple] = []
        self.gets = 0

    def launch_preprocess(self, run_id, source, out_uri, limit, labels):
        self.launched.append(("preprocess", run_id, out_uri, labels))
        return JobRef("df-1", "df-1", "preprocess")

    def launch_training(self, run_id, manifest_uri, base_output_uri, trainer_args, labels):
        self.launched.append(("training", manifest_uri, tuple(trainer_args), labels))
        return JobRef("42", "projects/p/locations/l/customJobs/42", "training")

    def get_training_job(self, job_id):
        self.gets += 1
        state = "JOB_STATE_RUNNING" if self.gets < 2 else self.final_state
        return TrainingJob(job_id, f"customJobs/{job_id}", state, {}, "", "boom" if state == "JOB_STATE_FAILED" else "")


class FakeModels:
    def __init__(self):
        self.deploys = []

    def upload_version(self, model_name, artifact_uri, labels):
        return ModelVersion(f"projects/p/locations/l/models/{model_name}", "1")

    def start_deploy(self, version, endpoint_id, traffic_split, display_name):
        self.deploys.append((version.versioned_name, endpoint_id, traffic_split))
        return DeployOperation("projects/p/locations/l/endpoints/e/operations/9", False)

    def get_operation(self, name):
        return DeployOperation(name, True, deployed_model_id="5")


def test_the_poller_launches_each_stage_only_after_a_check_finds_the_last_one_done():
    sleeps: list[float] = []
    jobs, models = FakeJobs("JOB_STATE_SUCCEEDED"), FakeModels()
    platform = Platform(storage=FakeStorage(manifest_after_checks=3), jobs=jobs, models=models, tasks=None,
                        metrics=None)  # the polled chain has no release stage
    orchestrator = polling.PollingOrchestrator(platform, Config(), 2.5, sleep=sleeps.append)
    run = orchestrator.run("polled-1", {"numTrainExamples": 500, "batchSize": 100})
    assert [launch[0] for launch in jobs.launched] == ["preprocess", "training"]
    assert jobs.launched[0][3] == {"polled_run": "polled-1"}, "a run_id label would make the chain's functions act"
    assert jobs.launched[1][1] == "gs://mlrelay/polled/polled-1/preprocess/_MANIFEST.json"
    assert models.deploys == [("projects/p/locations/l/models/babyweight-polled@1", "babyweight-polled", {"0": 100})]
    assert run.polls == 3 + 2 + 1 and sleeps == [2.5] * run.polls
    times = [run.launched[state] for state in ("preprocessing", "training", "deploying", "deployed")]
    assert times == sorted(times)


def test_a_failed_training_job_ends_the_polled_run_with_its_reason():
    platform = Platform(storage=FakeStorage(1), jobs=FakeJobs("JOB_STATE_FAILED"), models=FakeModels(), tasks=None,
                        metrics=None)
    orchestrator = polling.PollingOrchestrator(platform, Config(), 1.0, sleep=lambda s: None)
    with pytest.raises(polling.PolledRunFailed, match="JOB_STATE_FAILED: boom"):
        orchestrator.run("polled-2", {})
    with pytest.raises(ValueError, match="positive"):
        polling.PollingOrchestrator(platform, Config(), 0)


# --- the baselines -----------------------------------------------------------------------------------


def test_output_rows_compare_as_multisets(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (first / "train.csv-00000-of-00001").write_bytes(b"x,1\ny,2\ny,2\n")
    (first / "eval.csv-00000-of-00001").write_bytes(b"z,3\n")
    (second / "train.csv-00000-of-00002").write_bytes(b"y,2\n")
    (second / "train.csv-00001-of-00002").write_bytes(b"x,1\ny,2")
    (second / "eval.csv-00000-of-00001").write_bytes(b"z,3\n")
    assert same_rows(first, second) == {"train": True, "eval": True}
    (second / "train.csv-00000-of-00002").write_bytes(b"x,1\n")
    assert same_rows(first, second)["train"] is False, "one row counted twice must not pass"


def test_least_squares_on_the_one_hot_features_recovers_an_additive_truth():
    rng = np.random.default_rng(0)
    n = 4000
    split = linear_baseline.Split(
        label=np.zeros(n),
        is_male=rng.choice(["True", "False", "Unknown"], n).astype(object),
        plurality=rng.choice(["Single(1)", "Twins(2)", "Multiple(2+)"], n).astype(object),
        mother_age=rng.integers(12, 50, n).astype(float),
        gestation_weeks=rng.integers(20, 48, n).astype(float),
    )
    truth = (7.0 + 0.3 * (split.is_male == "True") - 1.5 * (split.plurality != "Single(1)")
             + 0.01 * np.clip(split.mother_age, 14, 44) + 0.2 * (np.clip(split.gestation_weeks, 16, 46) - 40))
    split = linear_baseline.Split(truth, split.is_male, split.plurality, split.mother_age, split.gestation_weeks)
    codes = linear_baseline.feature_codes(split)
    assert codes.shape == (n, 4) and codes.min() >= 0 and codes.max() < linear_baseline.WIDTH == 3 + 6 + 31 + 31
    fit = linear_baseline.fit(split)
    assert linear_baseline.rmse(fit.predict(split), truth) < 1e-9
    bad = linear_baseline.Split(truth[:1], np.array(["Maybe"], dtype=object), split.plurality[:1],
                                split.mother_age[:1], split.gestation_weeks[:1])
    with pytest.raises(ValueError, match="is_male has values"):
        linear_baseline.feature_codes(bad)


def test_boosted_trees_learn_an_interaction_the_one_hot_linear_fit_cannot():
    rng = np.random.default_rng(1)
    n = 6000
    features = dict(
        is_male=rng.choice(["True", "False", "Unknown"], n).astype(object),
        plurality=rng.choice(["Single(1)", "Twins(2)"], n).astype(object),
        mother_age=rng.integers(15, 45, n).astype(float),
        gestation_weeks=rng.integers(30, 44, n).astype(float),
    )
    truth = 7.0 + np.where(features["plurality"] == "Single(1)", 0.25, -0.1) * (features["gestation_weeks"] - 37)
    split = linear_baseline.Split(label=truth + rng.normal(0, 0.1, n), **features)
    boosted = boosted_baseline.fit(split)
    linear = linear_baseline.fit(split)
    boosted_error = linear_baseline.rmse(boosted.predict(split), truth)
    assert boosted_error < 0.05 < linear_baseline.rmse(linear.predict(split), truth)
    assert 0 < boosted.trees <= boosted_baseline.MAX_TREES and boosted.fit_s > 0
    assert boosted.settings["learning_rate"] == 0.05


def test_seed_spread_is_max_minus_min_with_the_sample_standard_deviation():
    summary = seed_spread.spread([1, 2, 3], [1.040, 1.046, 1.043], floor=1.0348)
    assert summary["seeds"] == [1, 2, 3] and summary["eval_rmse"] == [1.04, 1.046, 1.043]
    assert summary["spread_lb"] == 0.006 and summary["std_lb"] == 0.003 and summary["mean_lb"] == 1.043
    assert summary["rmse_over_floor"][0] == round(1.040 / 1.0348, 4)
    assert seed_spread.spread([1], [1.05])["std_lb"] is None
    with pytest.raises(ValueError, match="one RMSE per seed"):
        seed_spread.spread([1, 2], [1.05])


def test_slice_spread_is_relative_and_skips_slices_the_gate_would_skip():
    seeds = [{"a": {"rows": 2000, "rmse": 1.0}, "b": {"rows": 40, "rmse": 2.0}, "c": {"rows": 10, "rmse": 1.0},
              "only-here": {"rows": 5000, "rmse": 1.0}},
             {"a": {"rows": 2000, "rmse": 1.002}, "b": {"rows": 40, "rmse": 2.2}, "c": {"rows": 10, "rmse": 3.0}}]
    summary = seed_spread.slice_spread(seeds, min_rows=30)
    assert set(summary["slices"]) == {"a", "b"}, "c is under min_rows; only-here was scored by one seed"
    assert summary["slices"]["a"]["spread_fraction"] == pytest.approx(0.002 / 1.001, abs=1e-6)
    assert summary["slices"]["b"] == {"rows": 40, "mean_lb": 2.1, "spread_lb": 0.2, "spread_fraction": 0.095238}
    assert summary["widest"] == "b"
    assert seed_spread.slice_spread(seeds, min_rows=5000)["widest"] is None


def test_a_load_client_retries_a_refused_connection_then_gives_up():
    import socket

    from bench.serve_load import CONNECT_ATTEMPTS, _event_loop_run, _warm_connection, http_request

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resets: list[str] = []
    request = http_request("127.0.0.1", port, "/x:predict", b"{}")
    assert _event_loop_run(_warm_connection("127.0.0.1", port, request, resets)) is None
    assert len(resets) == CONNECT_ATTEMPTS and "ConnectionRefusedError" in resets[0]


def test_cpu_steal_is_the_stolen_share_of_the_ticks_between_two_readings():
    from bench.processes import machine_cpu_ticks, steal_percent

    assert steal_percent((1000, 10), (2000, 260)) == 25.0
    assert steal_percent((1000, 10), (1000, 10)) is None  # no time passed
    assert steal_percent(None, (2000, 260)) is None
    reading = machine_cpu_ticks()
    if Path("/proc/stat").exists():
        total, stolen = reading
        assert 0 <= stolen <= total
    else:
        assert reading is None


# --- cold start helpers ---------------------------------------------------------------------------


def test_importtime_lines_give_the_direct_imports_of_a_module_by_cost():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:        10 |         10 | unrelated",
        "import time:       100 |        100 |     json.decoder",
        "import time:       300 |        400 |   json",
        "import time:     50000 |      90000 |   heavy",
        "import time:      2000 |      95000 | target",
    ])
    assert coldstart.parse_importtime(stderr, "target") == [("heavy", 90.0), ("json", 0.4)]
    assert coldstart.parse_importtime(stderr, "absent") == []


def test_the_functions_dependency_closure_is_found_and_measured():
    names = coldstart.requirement_names((REPO_ROOT / "functions" / "requirements.txt").read_text())
    assert "functions-framework" in names and not any(name.startswith("#") for name in names)
    closure = coldstart.dependency_closure(["functions-framework"])
    assert {"functions-framework", "flask", "werkzeug"} <= set(closure)
    assert coldstart.installed_bytes(closure["flask"]) > 10_000
    with pytest.raises(ValueError, match="not installed"):
        coldstart.dependency_closure(["surely-not-an-installed-distribution"])


def test_the_memory_of_a_process_tree_includes_its_children():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in process_tree(os.getpid())
        total, count = tree_rss_bytes(os.getpid())
        assert count >= 2 and total > tree_rss_bytes(child.pid)[0] > 0
    finally:
        child.kill()
        child.wait()


# --- each benchmark, on a tiny size -------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> BenchSettings:
    return BenchSettings(work_dir=tmp_path_factory.mktemp("bench"), quick=True)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_preprocess_benchmark_compares_beam_with_pyarrow_on_the_same_rows(quick):
    result = preprocess.run(quick)
    assert result["outputs_equal"] is True
    assert result["output_rows"] > 0.9 * 2 * result["rows"]
    for side in ("beam", "baseline"):
        figures = result[side]
        assert _positive(figures["rows_per_s"]) and _positive(figures["cpu_s_per_million_rows"])
        assert figures["process_wall_s"] >= figures["transform_s"]
    assert result["beam"]["records"] == result["baseline"]["records"]
    assert 0 < result["ratio"] < 100 and isinstance(result["target_met"], bool)
    # The marginal cost comes from a second run on three times the rows: fixed plus marginal
    # cost gives back the small run's CPU, whatever the noise in either.
    for side in ("beam", "baseline"):
        figures = result[side]
        assert figures["large"]["rows"] == preprocess.MARGINAL_FACTOR * result["rows"]
        assert figures["large"]["cpu_s"] > 0
        assert figures["fixed_cpu_s"] + figures["marginal_cpu_s_per_million_rows"] * result["rows"] / 1e6 == (
            pytest.approx(figures["cpu_s"], abs=0.01))
    assert isinstance(result["marginal_cpu_target_met"], bool)
    assert "Beam" in preprocess.table(result) and "marginal CPU s per million rows" in preprocess.table(result)


@pytest.mark.slow
def test_train_benchmark_reports_the_trainer_and_least_squares_against_the_bayes_floor(quick):
    result = train.run(quick)
    assert 1.0 < result["bayes_floor"] < 1.5
    for side in ("trainer", "linear"):
        assert _positive(result[side]["examples_per_s"])
        assert 0.95 < result[side]["rmse_over_floor"] < 1.5
    assert result["linear"]["eval_rmse"] < result["trainer"]["baseline_rmse"]
    assert Path(quick.artifacts["model_dir"], "saved_model.pb").exists()
    assert "least squares" in train.table(result)


@pytest.mark.slow
def test_train_benchmark_reports_its_peers_and_one_rmse_per_seed(quick):
    result = train.run(quick, seeds=2)
    floor = result["bayes_floor"]
    for side in ("linear", "boosted"):
        figures = result[side]
        assert np.isfinite(figures["eval_rmse"]) and _positive(figures["fit_s"])
        # A tiny eval split can land a little under its floor by chance; never far under.
        assert 0.95 < figures["rmse_over_floor"] < 1.5
        assert figures["rmse_over_floor"] == pytest.approx(figures["eval_rmse"] / floor, abs=1e-4)
    assert result["boosted"]["trees"] > 0 and result["boosted"]["library"].startswith("lightgbm ")
    seeds = result["seeds"]
    assert seeds["seeds"] == [1, 2] and len(seeds["eval_rmse"]) == 2 and len(seeds["process_wall_s"]) == 2
    assert seeds["eval_rmse"][0] == result["trainer"]["eval_rmse"]
    assert seeds["spread_lb"] == pytest.approx(max(seeds["eval_rmse"]) - min(seeds["eval_rmse"]), abs=2e-5)
    assert seeds["std_lb"] is not None and seeds["std_lb"] >= 0
    by_slice = seeds["by_slice"]
    assert by_slice["min_rows"] == 30 and by_slice["slices"], "the gate's slices, each across both seeds"
    assert all(entry["rows"] >= 30 and entry["spread_fraction"] >= 0 for entry in by_slice["slices"].values())
    # The oracle is the generator's own conditional mean on the same rows: no peer beats it by
    # more than chance on a tiny split, and every ratio to it is the ratio of the two RMSEs.
    assert 0.98 < result["oracle_rmse"] / floor < 1.1
    for side in ("trainer", "linear", "boosted"):
        assert result[side]["rmse_over_oracle"] == pytest.approx(
            result[side]["eval_rmse"] / result["oracle_rmse"], abs=1e-4)
        assert result[side]["rmse_over_oracle"] > 0.99
    assert result["best"] in ("trainer", "linear", "boosted")
    # Fresh rows: a sample no model saw, every row of its two splits, scored for all three models.
    fresh = result["fresh"]
    assert fresh["rows"] > 1.8 * fresh["records"] and fresh["seed"] != 13
    assert 0.95 < fresh["oracle_over_floor"] < 1.05
    for side in ("trainer", "linear", "boosted"):
        assert fresh["models"][side]["rmse_over_floor"] == pytest.approx(
            fresh["models"][side]["rmse"] / fresh["bayes_floor"], abs=1e-4)
        assert fresh["models"][side]["rmse_over_oracle"] > 0.99
    text = train.table(result)
    assert "boosted trees" in text and "seeds 1..2" in text and "RMSE / oracle" in text and "fresh rows" in text


@pytest.mark.slow
def test_serve_benchmark_loads_the_endpoint_from_another_process(quick):
    result = serve.run(quick)
    assert result["model"] == "exported by the train benchmark"
    assert result["failures"] == 0
    for clients in ("1", "4", "16"):
        single, batch = result["http_single"][clients], result["http_batch"][clients]
        assert single["requests"] > 0 and 0 < single["p50_ms"] <= single["p99_ms"]
        assert _positive(batch["instances_per_s"])
    assert _positive(result["in_process_model"]["batch_instances_per_s"])
    assert 0 < result["in_process_model"]["single"]["p50_ms"] < 1000
    direct = result["container_direct_16_clients"]
    assert direct["single"]["requests"] > 0 and _positive(direct["batch"]["instances_per_s"])
    assert set(result["target_met"]) == {"p99", "throughput"}
    steal = result["cpu_steal_pct_16_clients"]
    assert steal is None or 0 <= steal <= 100
    assert "16 client" in serve.table(result) and "steal" in serve.table(result)


@pytest.mark.slow
def test_coldstart_benchmark_times_imports_functions_and_mlrelay_up(quick):
    result = coldstart.run(quick)
    assert set(result["import_s"]) == set(coldstart.FUNCTIONS) == set(result["serving_s"])
    assert all(0 < seconds < 30 for seconds in result["import_s"].values())
    assert all(0 < seconds < 60 for seconds in result["serving_s"].values())
    assert result["heaviest_imports"] and result["heaviest_imports"][0]["ms"] > 0
    assert result["dependencies"]["mib"] > 1 and result["dependencies"]["distributions"] > 5
    assert 0 < result["up_own_ready_s"] <= result["up_ready_s"] < 120
    assert "mlrelay up" in coldstart.table(result)


@pytest.mark.slow
def test_handoff_benchmark_measures_event_driven_and_polled_runs(quick):
    result = handoff.run(quick)
    assert result["runs"]["failed"] == [] and result["runs"]["event_driven"] == 1 and result["runs"]["polled"] == 1
    for name in handoff.HANDOFFS:
        figures = result["handoffs"][name]
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"] < 60_000, name
    for name in handoff.POLLED_HANDOFFS:
        figures = result["handoffs"][name]
        assert figures["polling_expected_ms"] == 30_000.0 and figures["ratio"] > 1
        assert 0 < figures["polling_measured"]["mean_ms"] < 10_000
    assert "polling @60s" in handoff.table(result)


@pytest.mark.slow
def test_demo_benchmark_reports_stages_and_the_peak_memory_of_the_local_cloud(quick):
    result = demo.run(quick)
    assert set(result["stages_s"]) == set(demo.STAGES)
    assert all(seconds >= 0 for seconds in result["stages_s"].values())
    assert result["demo_wall_s"] >= sum(result["stages_s"].values())
    assert result["peak_processes"] >= 4, "the function servers count towards the local cloud's memory"
    assert 0.1 < result["peak_rss_gib"] < 16
    assert "peak memory" in demo.table(result)


# --- the command line ----------------------------------------------------------------------------------


def run_mlrelay(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The `mlrelay` command, run as a user runs it; `mlrelay bench` becomes `python -m bench`."""
    return subprocess.run([sys.executable, "-m", "mlrelay.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_mlrelay_bench_refuses_unknown_benchmarks_and_bad_options():
    refused = run_mlrelay("bench", "nope")
    assert refused.returncode == 2 and "no benchmark nope" in refused.stderr
    refused = run_mlrelay("bench", "--runs", "0", "handoff")
    assert refused.returncode == 2 and "--runs must be positive" in refused.stderr
    refused = run_mlrelay("bench", "--seeds", "0", "train")
    assert refused.returncode == 2 and "--seeds must be positive" in refused.stderr
    helped = run_mlrelay("bench", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: mlrelay bench")


@pytest.mark.slow
def test_mlrelay_bench_json_prints_one_object_keyed_by_benchmark(tmp_path):
    captured = run_mlrelay("bench", "preprocess", "--quick", "--json", "--work-dir", str(tmp_path), timeout=600)
    assert captured.returncode == 0, captured.stderr
    document = json.loads(captured.stdout)
    assert set(document) == {"preprocess", "_run"}
    assert document["preprocess"]["outputs_equal"] is True and document["preprocess"]["wall_s"] > 0
    assert document["_run"]["quick"] is True and document["_run"]["machine"]["cpus"] >= 1
    assert "preprocess:" in captured.stderr, "the tables go to stderr when stdout carries JSON"
