"""A Dataflow failure ends its run failed, and touches nothing that is not a run of the bucket."""
from __future__ import annotations

from functions.stages.preprocess import fail_preprocess
from functions.stages.start import start_run
from tests.fakes.runs import message


def test_a_failed_dataflow_job_fails_its_run(env, runs):
    config, platform = env
    run = start_run(config, platform, message(b"{}")).run_id
    result = fail_preprocess(config, platform, run, "e", reason="Dataflow job 7 failed: Workflow failed.")
    assert result.action == "recorded"
    (status,) = runs.statuses(run)
    assert status.state.value == "failed" and "Workflow failed." in status.reason


def test_a_job_that_names_no_run_of_the_bucket_is_ignored(env, runs):
    config, platform = env
    for name in ("run-20261127-050000-abcdef0123", "some-other-job", "../../etc"):
        assert fail_preprocess(config, platform, name, "e", reason="failed").action == "ignored"
    assert runs.run_ids() == []
