"""A Dataflow failure line ends its run failed only when the job API agrees; it touches nothing
that is not a run of the bucket, and never a run that has ended."""
from __future__ import annotations

import pytest

from functions.platform import TransientError
from functions.stages.preprocess import confirm_failure
from functions.stages.start import start_run
from tests.fakes.runs import message


def started(config, platform) -> tuple[str, str]:
    result = start_run(config, platform, message(b"{}"))
    return result.run_id, result.job


def test_a_failed_dataflow_job_fails_its_run(env, runs):
    config, platform = env
    run, job = started(config, platform)
    platform.jobs.end_preprocess(job, "JOB_STATE_FAILED")
    result = confirm_failure(config, platform, job, "e", "Workflow failed. Causes: out of disk")
    assert result.action == "recorded"
    (status,) = runs.statuses(run)
    assert status.state.value == "failed" and "JOB_STATE_FAILED: Workflow failed. Causes: out of disk" in status.reason


@pytest.mark.parametrize("state", ["JOB_STATE_CANCELLED", "JOB_STATE_DRAINED"])
def test_a_cancelled_or_drained_job_fails_its_run_too(env, runs, state):
    config, platform = env
    run, job = started(config, platform)
    platform.jobs.end_preprocess(job, state)
    assert confirm_failure(config, platform, job, "e", "").action == "recorded"
    assert state in runs.statuses(run)[0].reason


def test_a_forged_failure_of_a_job_that_succeeded_changes_nothing(env, runs):
    config, platform = env
    run, job = started(config, platform)
    platform.jobs.end_preprocess(job, "JOB_STATE_DONE")
    result = confirm_failure(config, platform, job, "forged", "Workflow failed.")
    assert result.action == "ignored" and "JOB_STATE_DONE" in result.detail
    assert runs.statuses(run)[0].state.value == "preprocessing"


def test_a_failure_line_before_the_job_state_changed_is_retried(env, runs):
    config, platform = env
    run, job = started(config, platform)
    with pytest.raises(TransientError, match="JOB_STATE_RUNNING"):
        confirm_failure(config, platform, job, "early", "Workflow failed.")
    assert runs.statuses(run)[0].state.value == "preprocessing"


def test_a_run_that_has_ended_is_not_failed_again(env, runs):
    config, platform = env
    run, job = started(config, platform)
    platform.jobs.end_preprocess(job, "JOB_STATE_FAILED")
    assert [confirm_failure(config, platform, job, e, "x").action.value for e in ("a", "b")] == \
        ["recorded", "duplicate"]
    assert runs.statuses(run)[0].records == 3  # requested, preprocessing, failed: once


def test_a_job_the_api_does_not_know_or_of_no_run_is_ignored(env, runs):
    config, platform = env
    assert confirm_failure(config, platform, "2026-11-27_00_00_00-1", "e", "x").action == "ignored"
    other = platform.jobs.launch_preprocess("some-other-job", "s", "gs://x/", None, {}).job_id
    platform.jobs.end_preprocess(other, "JOB_STATE_FAILED")
    result = confirm_failure(config, platform, other, "e", "x")
    assert result.action == "ignored" and "not a run of this bucket" in result.detail
    assert runs.run_ids() == []
