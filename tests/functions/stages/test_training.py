"""Training: launched once on a good manifest, and its end confirmed with the job API."""
from __future__ import annotations

import pytest

from events.log_entries import JobOutcome
from functions.platform import TrainingJob, TransientError
from functions.run_store import RunStore
from functions.stages.start import start_run
from functions.stages.training import finish_training, start_training
from functions.triggers import ManifestWritten
from tests.fakes.runs import message, training_ended, write_manifest


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
