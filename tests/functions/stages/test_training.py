"""Training: launched once on a good manifest, and its end confirmed with the job API."""
from __future__ import annotations

import json

import pytest

from events.log_entries import JobOutcome
from functions.platform import TrainingJob, TransientError
from functions.run_store import RunStore
from functions.stages.start import start_run
from functions.stages.training import finish_training, start_training
from functions.triggers import ManifestWritten
from tests.fakes.runs import message, training_ended, write_manifest
from tests.functions.stages.chain import champion_arg, serving_champion, start_and_launch_training, status, twice


def state(runs: RunStore, run_id: str) -> str:
    (status,) = runs.statuses(run_id)
    return status.state.value


def training_run(config, platform):
    run = start_run(config, platform, message(b"{}")).run_id
    start_training(config, platform, write_manifest(platform.storage, run))
    return run, next(iter(platform.jobs.jobs))


def test_a_manifest_launches_training_once_with_the_run_label(env, runs):
    config, platform = env
    run = start_run(config, platform, message(b'{"batchSize": 64}')).run_id
    written = write_manifest(platform.storage, run)
    first = start_training(config, platform, written)
    second = start_training(config, platform, written)
    assert (first.action, second.action) == ("launched", "duplicate")
    (run_id, manifest_uri, base, args, labels), = platform.jobs.training_calls
    assert manifest_uri == f"gs://b/{written.object_name}" and base == f"gs://b/runs/{run}/train/"
    assert labels == {"run_id": run} and args[args.index("--batch-size") + 1] == "64"
    (status,) = runs.statuses(run)
    assert status.state.value == "training"
    training = next(e for e in runs.ledger(run)[run] if e.state.value == "training")
    assert training.details["rows"] == {"train": 10, "eval": 4}
    assert training.details["input"]["rows_read"] == 8


def test_a_bad_manifest_fails_the_run_and_launches_nothing(env, runs):
    config, platform = env
    run = start_run(config, platform, message(b"{}")).run_id
    result = start_training(config, platform, write_manifest(platform.storage, run,
                                                             splits={"train": {"shards": [], "rows": 0}}))
    assert result.action == "rejected" and "train" in result.detail
    assert state(runs, run) == "failed"
    assert platform.jobs.training_calls == []


def test_a_manifest_without_its_run_or_in_another_bucket_launches_nothing(env, runs):
    config, platform = env
    orphan = "run-20261127-050000-abcdef0123"
    result = start_training(config, platform, write_manifest(platform.storage, orphan))
    assert result.action == "rejected" and "request.json" in result.detail
    run = start_run(config, platform, message(b"{}")).run_id
    written = write_manifest(platform.storage, run)
    elsewhere = ManifestWritten(written.event_id, "elsewhere", written.object_name, run)
    assert start_training(config, platform, elsewhere).action == "ignored"
    assert platform.jobs.training_calls == []


def test_the_log_line_is_only_a_doorbell_the_api_decides(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    with pytest.raises(TransientError):
        finish_training(config, platform, training_ended(job_id))  # the API still says RUNNING
    assert platform.models.uploads == []


def test_a_failed_training_job_fails_the_run_and_deploys_nothing(env, runs):
    config, platform = env
    run, job_id = training_run(config, platform)
    platform.jobs.finish(job_id, "JOB_STATE_FAILED", "OOM")
    result = finish_training(config, platform, training_ended(job_id, JobOutcome.FAILED))
    assert result.action == "recorded"
    (status,) = runs.statuses(run)
    assert status.state.value == "failed" and "OOM" in status.reason
    assert platform.models.uploads == [] and platform.models.deploys == []


def test_an_unlabelled_job_is_ignored(env):
    config, platform = env
    platform.jobs.jobs["5"] = TrainingJob("5", "n", "JOB_STATE_SUCCEEDED", {}, "gs://b/x/")
    assert finish_training(config, platform, training_ended("5")).action == "ignored"
    assert platform.models.uploads == []


# --- the champion the trainer scores, and the data check against the last run in service ---------


def test_the_trainer_is_given_the_champions_artifacts_only_when_the_endpoint_has_one(env):
    config, platform = env
    first, _ = start_and_launch_training(config, platform, "m-none")
    assert champion_arg(platform, first) is None, "nothing serves: nothing to compare with"
    champion_run = serving_champion(config, platform, "m-champion")
    run, launched = start_and_launch_training(config, platform, "m-next")
    assert launched.action == "launched"
    assert champion_arg(platform, run) == f"gs://b/runs/{champion_run}/train/model/"
    training = next(e for e in runs_of(env).ledger(run)[run] if e.state.value == "training")
    assert training.details["champion"] == "projects/p/locations/r/models/babyweight@1"


def runs_of(env) -> RunStore:
    config, platform = env
    return RunStore(platform.storage, config.bucket)


# What the last run in service read: 1000 rows, 100 dropped, split 720/180.
SERVED = dict(splits={"train": {"shards": ["train.csv-00000-of-00001"], "rows": 720},
                      "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 180}},
              input={"rows_read": 1000, "rows_dropped": 100, "rows_valid": 900, "limit": None})


def manifest_like(rows_read: int, dropped: int, train: int, eval_rows: int) -> dict:
    return dict(splits={"train": {"shards": ["train.csv-00000-of-00001"], "rows": train},
                        "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": eval_rows}},
                input={"rows_read": rows_read, "rows_dropped": dropped, "rows_valid": rows_read - dropped,
                       "limit": None})


@pytest.mark.parametrize("request_body, manifest, outcome, words", [
    ({}, manifest_like(400, 40, 288, 72), "rejected", "rows read fell from 1000 to 400"),
    ({}, manifest_like(1000, 600, 320, 80), "rejected", "the filters dropped 60 % of the rows read"),
    ({}, manifest_like(1100, 110, 792, 198), "launched", "data in line with the last good run"),
    ({"limit": 400}, manifest_like(400, 40, 288, 72), "launched", "rows read not compared: the requests differ"),
    ({"source": "data/other.parquet"}, manifest_like(400, 40, 288, 72), "launched", "source data/other.parquet"),
], ids=["rows-halved", "dropped-share", "ordinary-growth", "other-limit", "other-source"])
def test_the_data_check_compares_with_the_last_run_in_service_before_any_training(env, request_body, manifest,
                                                                                  outcome, words):
    config, platform = env
    served = serving_champion(config, platform, "m-served", **SERVED)  # the last run in service
    calls = len(platform.jobs.training_calls)

    run = start_run(config, platform, message(json.dumps(request_body).encode(), message_id="m-next")).run_id
    written = write_manifest(platform.storage, run, **manifest)
    actions = twice(start_training, config, platform, written)

    folded = status(config, platform, run)
    assert folded.anomalies == ()
    if outcome == "rejected":
        assert actions == ["rejected", "duplicate"]
        assert len(platform.jobs.training_calls) == calls, "no training launched"
        assert folded.state == "rejected" and folded.reason.startswith("data check: data unlike the last good run")
        assert words in folded.reason and served in folded.reason
        check = next(e for e in runs_of(env).ledger(run)[run] if e.state.value == "rejected").details["data_check"]
        assert not check["passed"] and any(not c["passed"] for c in check["checks"])
    else:
        assert actions == ["launched", "duplicate"]
        assert len(platform.jobs.training_calls) == calls + 1
        training = next(e for e in runs_of(env).ledger(run)[run] if e.state.value == "training")
        assert training.details["data_check"]["passed"] and words in training.details["data_check"]["reason"]


def test_without_a_run_in_service_there_is_nothing_to_compare_with(env):
    config, platform = env
    run, job_id = training_run(config, platform)
    training = next(e for e in runs_of(env).ledger(run)[run] if e.state.value == "training")
    assert training.details["data_check"] == {"passed": True, "reason": "no earlier run to compare with",
                                              "checks": []}


def test_a_manifest_redelivered_after_the_launch_is_not_rejected_by_a_later_data_check(env):
    config, platform = env
    run = start_run(config, platform, message(b"{}", message_id="m-early")).run_id
    written = write_manifest(platform.storage, run, **manifest_like(400, 40, 288, 72))
    assert start_training(config, platform, written).action == "launched"  # nothing served yet
    serving_champion(config, platform, "m-served")  # now one serves, having read 8 rows
    # redelivered: the run's data is unlike the served run's, but its training is launched already
    assert start_training(config, platform, written).action == "duplicate"
    assert status(config, platform, run).state == "training"


def test_a_job_end_naming_a_job_the_api_does_not_know_is_ignored_not_retried(env):
    """A forged or foreign "Job completed successfully." line: acknowledged, nothing recorded."""
    config, platform = env
    result = finish_training(config, platform, training_ended("404404"))
    assert result.action == "ignored" and "not one the job API knows" in result.detail
    assert RunStore(platform.storage, config.bucket).statuses() == []
