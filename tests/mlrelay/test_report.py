"""`mlrelay report` and `render_report`: one self-contained page per run, each plot or why it is absent.

The runs are written into a temporary bucket directory with the run store, in the formats the
stages and the trainer write (ledger records, comparison.json, metrics.json, release records,
training_report.json), so the report reads what a real run leaves.
"""
from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from events.ledger import LedgerEvent
from functions.local_adapters import LocalStorage
from functions.run_store import RunStore, comparison_name, metrics_name
from mlrelay.cli import main
from mlrelay.report import NoSuchRun, read_facts, render_report
from functions.run_store import training_report_name
from mlrelay.report.facts import TRAINING_REPORT_FORMAT
from mlrelay.report.page import PLOTS

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
PREVIOUS = "run-20261201-090000-aaaaaaaaaa"
RUN = "run-20261201-100000-bbbbbbbbbb"
FAILED = "run-20261201-110000-cccccccccc"
REJECTED = "run-20261201-120000-dddddddddd"
MODEL = "projects/p/locations/us-central1/models/babyweight"
FAILURE = "the training job 42 failed: OOM killed while reading eval.csv-00000-of-00001"


def record(runs: RunStore, run_id: str, stage: str, state: str, at: datetime, **details) -> None:
    runs.append(LedgerEvent(run_id, stage, state, at, cause_event_id="e", details=details,
                            job_ids=details.pop("job_ids", {})))


def training_details(rows_read: int) -> dict:
    return {"job_ids": {"train": "7"}, "rows": {"train": int(rows_read * 0.78), "eval": int(rows_read * 0.19)},
            "input": {"rows_read": rows_read, "rows_valid": int(rows_read * 0.97),
                      "rows_dropped": rows_read - int(rows_read * 0.97)},
            "data_check": {"passed": True, "reason": "data in line with the last good run",
                           "checks": [{"name": "rows_read", "value": rows_read, "bound": [2000.0, 6000.0],
                                       "passed": True}]}}


def slices(base: float) -> dict:
    return {"gestation_weeks<37": {"rmse": base + 0.6, "rows": 104},
            "plurality=Single(1)": {"rmse": base - 0.02, "rows": 968},
            "plurality=Twins(2)": {"rmse": base + 0.5, "rows": 16}}


def write_training_report(runs: RunStore, run_id: str, sample_rows: int = 300) -> dict:
    rng = random.Random(7)
    sample = []
    for _ in range(sample_rows):
        weeks = rng.randint(30, 43)
        plurality = rng.choice(["Single(1)"] * 8 + ["Twins(2)", "Triplets(3)"])
        true = 7.3 + (weeks - 39) * 0.4 + rng.gauss(0, 1)
        sample.append({"true": true, "predicted": true + rng.gauss(0, 0.9), "gestation_weeks": weeks,
                       "plurality": plurality, "is_male": rng.choice(["true", "false", "Unknown"]),
                       "mother_age": rng.randint(16, 45)})
    document = {"format": TRAINING_REPORT_FORMAT,
                "evaluations": [{"examples_seen": 1000 * i, "train_loss": 1 + 2 / i, "eval_loss": 1.1 + 2 / i,
                                 "eval_rmse": (1.1 + 2 / i) ** 0.5} for i in range(1, 5)],
                "slices": {name: {"rows": s["rows"], "rmse": s["rmse"]} for name, s in slices(1.2).items()},
                "sample": sample}
    runs.storage.write(training_report_name(run_id), json.dumps(document).encode())
    return document


def deployed_run(runs: RunStore, run_id: str, start: datetime, rows_read: int, version: int, model_id: str,
                 champion_id: str | None) -> None:
    runs.create_request(run_id, {"runId": run_id, "origin": {"kind": "message", "topic": "mlrelay-start",
                                                            "messageId": f"m{version}"},
                                 "request": {"source": "data/natality.parquet", "limit": 4000}})
    record(runs, run_id, "request", "requested", start,
           origin={"kind": "message", "topic": "mlrelay-start", "messageId": f"m{version}"})
    record(runs, run_id, "preprocess", "preprocessing", start + timedelta(seconds=0.1), job_ids={"preprocess": "d1"},
           output=f"gs://b/runs/{run_id}/preprocess/")
    record(runs, run_id, "train", "training", start + timedelta(seconds=2.4), **training_details(rows_read))
    gate = {"blessed": True, "reason": "blessed: candidate RMSE 1.221 is 9.1 % below the mean baseline's 1.343",
            "checks": [{"name": "rmse_below_mean_baseline", "value": 1.22, "bound": 1.27, "passed": True}]}
    record(runs, run_id, "deploy", "deploying", start + timedelta(seconds=7.6), gate=gate,
           model_version=f"{MODEL}@{version}", rollout="canary" if champion_id else "first")
    runs.storage.write(metrics_name(run_id), json.dumps({"eval_rmse": 1.2207, "baseline_rmse": 1.343}).encode())
    runs.storage.write(comparison_name(run_id), json.dumps({
        "format": "mlrelay-model-comparison/1", "eval_rows": 1000, "mean_baseline_rmse": 1.343,
        "candidate": {"rmse": 1.2207, "slices": slices(1.2207)},
        "champion": {"artifact_uri": "gs://b/runs/x/train/model", "rmse": 1.2246, "slices": slices(1.2246)}
        if champion_id else None}).encode())
    released = start + timedelta(seconds=10.7)
    if champion_id:
        record(runs, run_id, "release", "baking", released, traffic_split={champion_id: 90, model_id: 10})
        runs.record_release(released, run_id, "canary", {
            "time": released.isoformat(), "by": "on_training_complete", "deployed_model_id": model_id,
            "model_version": f"{MODEL}@{version}", "from": {champion_id: 100},
            "to": {champion_id: 90, model_id: 10}, "why": "passed the gate; bakes"})
        promoted = released + timedelta(seconds=3)
        record(runs, run_id, "release", "deployed", promoted,
               bake={"promote": True, "reason": "promote: the canary served 40 requests, no errors"})
        runs.record_release(promoted, run_id, "promoted", {
            "time": promoted.isoformat(), "by": "on_release_event (bake end)", "deployed_model_id": model_id,
            "model_version": f"{MODEL}@{version}", "from": {champion_id: 90, model_id: 10},
            "to": {model_id: 100}, "retired": [champion_id], "why": "promote: the canary served 40 requests"})
    else:
        record(runs, run_id, "deploy", "deployed", released, model_version=f"{MODEL}@{version}")
        runs.record_release(released, run_id, "first", {
            "time": released.isoformat(), "by": "on_training_complete", "deployed_model_id": model_id,
            "model_version": f"{MODEL}@{version}", "from": {}, "to": {model_id: 100},
            "why": "the first model on the endpoint, through the gate"})


@pytest.fixture
def bucket(tmp_path):
    runs = RunStore(LocalStorage(tmp_path / "buckets" / "mlrelay"), "mlrelay")
    deployed_run(runs, PREVIOUS, T0, rows_read=4000, version=1, model_id="1", champion_id=None)
    deployed_run(runs, RUN, T0 + timedelta(hours=1), rows_read=4400, version=2, model_id="2", champion_id="1")
    start = T0 + timedelta(hours=2)
    record(runs, FAILED, "request", "requested", start, origin={"kind": "trigger-file", "object": "gs://b/triggers/x"})
    record(runs, FAILED, "preprocess", "preprocessing", start + timedelta(seconds=0.2))
    record(runs, FAILED, "train", "training", start + timedelta(seconds=2), **training_details(4000))
    record(runs, FAILED, "train", "failed", start + timedelta(seconds=9), reason=FAILURE)
    record(runs, REJECTED, "request", "rejected", T0 + timedelta(hours=3),
           origin={"kind": "trigger-file", "object": "gs://b/triggers/bad.json"},
           reason="the request is not valid: numEvals must be 1 or more")
    return runs


class Page(HTMLParser):
    """What the report holds: its figures (with an <svg> or a 'not recorded' note, and a caption),
    and every URL an attribute or a style names."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.current: str | None = None
        self.in_caption = False
        self.urls: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "data") and value and not value.startswith(("#", "data:")):
                self.urls.append(value)
        if tag == "figure":
            self.current = attrs["data-plot"]
            self.figures[self.current] = {"svg": 0, "missing": "missing" in attrs.get("class", ""), "caption": ""}
        elif tag == "svg" and self.current:
            self.figures[self.current]["svg"] += 1
        elif tag == "figcaption":
            self.in_caption = True

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.in_caption = False
        elif tag == "figure":
            self.current = None

    def handle_data(self, data):
        if self.in_caption and self.current:
            self.figures[self.current]["caption"] += data


def assert_self_contained(text: str) -> None:
    assert not re.search(r"https?://", text), re.search(r".{80}https?://.{80}", text, re.S)
    assert not re.search(r"@import|url\((?!#)", text)
    assert not Page(text).urls
    assert "<script" not in text
    assert "default-src 'none'" in text  # and the page forbids fetching, should a reference creep in


def test_a_run_with_a_training_report_has_all_seven_plots(bucket):
    write_training_report(bucket, RUN)
    text = render_report(bucket, RUN)
    assert_self_contained(text)
    page = Page(text)
    assert list(page.figures) == list(PLOTS)
    for name, figure in page.figures.items():
        assert figure["svg"] == 1 and not figure["missing"], name
        assert figure["caption"].strip(), name
    assert "not recorded for this run" not in text
    assert len(re.findall(r"<svg\b", text)) == 7
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "two plots share an id"
    # the facts around the plots
    assert "deployed" in text and "promote: the canary served 40 requests, no errors" in text
    assert PREVIOUS in text  # the data counts are compared with the run that served before
    assert "+10.0 %" in text  # 4400 rows read against 4000
    assert "1.2207" in text and "babyweight@2" in text


def test_without_a_training_report_the_plots_that_need_it_say_not_recorded(bucket):
    page = Page(render_report(bucket, RUN))
    needs_report = {"learning-curves", "predicted-vs-actual", "residuals"}
    for name, figure in page.figures.items():
        assert figure["missing"] == (name in needs_report), name
        assert figure["svg"] == (0 if name in needs_report else 1), name
        assert figure["caption"].strip()
    text = render_report(bucket, RUN)
    assert text.count("not recorded for this run: it has no training_report.json") == 3
    assert_self_contained(text)


def test_a_training_report_of_another_format_is_not_drawn_and_is_named(bucket):
    bucket.storage.write(training_report_name(RUN), json.dumps({"format": "other/v9", "sample": []}).encode())
    text = render_report(bucket, RUN)
    assert "training_report.json is not mlrelay.training-report/v1" in text
    assert Page(text).figures["learning-curves"]["missing"]


def test_a_failed_runs_report_shows_its_reason(bucket):
    text = render_report(bucket, FAILED)
    assert_self_contained(text)
    assert "Why it failed:" in text and FAILURE in text
    page = Page(text)
    assert not page.figures["stage-timeline"]["missing"]
    assert not page.figures["data-counts"]["missing"]
    assert page.figures["slice-rmse"]["missing"]  # no comparison.json: training did not finish
    assert page.figures["release-timeline"]["missing"]


def test_a_request_rejected_on_arrival_has_a_report_of_its_one_record(bucket):
    text = render_report(bucket, REJECTED)
    assert "numEvals must be 1 or more" in text and "gs://b/triggers/bad.json" in text
    assert_self_contained(text)


def test_bucket_text_is_escaped(bucket):
    run_id = "run-20261201-130000-eeeeeeeeee"
    record(bucket, run_id, "request", "rejected", T0 + timedelta(hours=4),
           origin={"kind": "trigger-file", "object": "gs://b/triggers/<script>alert(1)</script>"},
           reason="bad <img src=x onerror=alert(1)>")
    text = render_report(bucket, run_id)
    assert "<script>" not in text and "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_the_data_counts_compare_with_the_run_serving_at_the_time(bucket):
    # PREVIOUS served when RUN was checked; RUN itself is newer, so PREVIOUS's report has none before it
    assert read_facts(bucket, RUN).previous.run_id == PREVIOUS
    assert read_facts(bucket, PREVIOUS).previous is None
    assert read_facts(bucket, FAILED).previous.run_id == RUN


def test_the_release_timeline_has_this_runs_traffic_changes_and_the_one_that_retired_its_model(bucket):
    assert [r["action"] for r in read_facts(bucket, RUN).releases] == ["canary", "promoted"]
    assert [r["action"] for r in read_facts(bucket, PREVIOUS).releases] == ["first", "canary", "promoted"]


def test_an_unknown_run_is_no_such_run(bucket):
    with pytest.raises(NoSuchRun):
        render_report(bucket, "run-20261201-235959-ffffffffff")
    with pytest.raises(NoSuchRun):
        render_report(bucket, "../../etc/passwd")


def test_the_command_writes_the_file_and_prints_its_path_and_size(bucket, tmp_path, capsys, monkeypatch):
    write_training_report(bucket, RUN)
    monkeypatch.chdir(tmp_path)
    assert main(["report", RUN, "--root", str(tmp_path)]) == 0
    written = tmp_path / f"mlrelay-report-{RUN}.html"
    out = capsys.readouterr().out
    assert str(written) in out and f"{written.stat().st_size:,} bytes" in out
    assert written.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", RUN, "--root", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").exists()


def test_the_command_refuses_an_unknown_run_in_one_line(bucket, tmp_path, capsys):
    assert main(["report", "run-20261201-235959-ffffffffff", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run run-20261201-235959-ffffffffff" in err
