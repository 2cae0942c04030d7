"""The reconcile sweep drives on a run whose event was lost, from what the APIs say, through the
stage code the event would have reached: once, never a second launch, and never a run that is
still working or has ended."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from functions.stages.reconcile import sweep
from functions.stages.start import start_run
from functions.stages.training import start_training
from tests.fakes.runs import message, write_manifest
from tests.functions.stages.chain import (
    deploy_ends, end_training, good_figures, last_operation, serving_champion, status, trained,
)


def later(seconds: float = 0) -> datetime:
    """A moment past the sweep's quiet time (the default 600 s), plus `seconds`."""
    return datetime.now(timezone.utc) + timedelta(seconds=601 + seconds)


def swept(config, platform, at: datetime | None = None, event: str = "tick") -> dict[str, str]:
    return sweep(config, platform, event, now=at or later()).extra["runs"]


def preprocessing(config, platform, tag: str = "m-1") -> tuple[str, str]:
    result = start_run(config, platform, message(b"{}", message_id=tag))
    return result.run_id, result.job


def test_a_lost_manifest_event_costs_one_sweep_and_launches_training_once(env):
    config, platform = env
    run, job = preprocessing(config, platform)
    write_manifest(platform.storage, run)  # its finalize event is lost
    assert swept(config, platform) == {}  # the job is still running: nothing to do
    platform.jobs.end_preprocess(job, "JOB_STATE_DONE")

    assert swept(config, platform, event="t1") == {run: "launched"}
    assert status(config, platform, run).state.value == "training"
    assert swept(config, platform, event="t2") == {}  # training: its job runs
    # The lost event turns up after all: a duplicate, no second job.
    assert start_training(config, platform, write_manifest(platform.storage, run)).action == "duplicate"
    assert len(platform.jobs.training_calls) == 1
    training = next(e for e in _ledger(config, platform, run) if e.state.value == "training")
    assert training.cause_event_id == "reconcile:t1"


@pytest.mark.parametrize("state", ["JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_FAILED"])
def test_a_job_that_ended_without_a_line_the_sink_forwards_fails_its_run(env, state):
    config, platform = env
    run, job = preprocessing(config, platform)
    platform.jobs.end_preprocess(job, state)
    assert swept(config, platform) == {run: f"recorded: Dataflow job {job} ended {state}"}
    assert status(config, platform, run).state.value == "failed"
    assert swept(config, platform) == {}  # ended: never looked at again
    assert platform.jobs.training_calls == []


def test_a_job_done_without_a_manifest_fails_the_run_with_that_reason(env):
    config, platform = env
    run, job = preprocessing(config, platform)
    platform.jobs.end_preprocess(job, "JOB_STATE_DONE")
    swept(config, platform)
    assert "wrote no manifest" in status(config, platform, run).reason


def test_a_run_that_wrote_lately_is_not_looked_at(env):
    config, platform = env
    run, job = preprocessing(config, platform)
    platform.jobs.end_preprocess(job, "JOB_STATE_FAILED")
    assert swept(config, platform, at=datetime.now(timezone.utc) + timedelta(seconds=30)) == {}
    assert status(config, platform, run).state.value == "preprocessing"
    short = replace(config, reconcile_after_seconds=10)
    assert run in swept(short, platform, at=datetime.now(timezone.utc) + timedelta(seconds=30))


def test_a_lost_training_end_deploys_the_model_through_the_gate_once(env):
    config, platform = env
    run, job = trained(config, platform, "m-1")
    assert swept(config, platform) == {run: "launched"}  # the gate passed, the deploy started
    assert status(config, platform, run).state.value == "deploying"
    assert end_training(config, platform, job).action == "duplicate"  # the line arrives late
    assert len(platform.models.deploys) == 1


def test_a_failed_training_job_ends_its_run_failed(env):
    config, platform = env
    run, launched = _training(config, platform)
    platform.jobs.finish(launched, "JOB_STATE_FAILED", "Replica workerpool0-0 exited with status 137.")
    assert "status 137" in swept(config, platform)[run]
    assert status(config, platform, run).state.value == "failed"


def test_a_lost_deploy_end_puts_the_model_in_service(env):
    config, platform = env
    run, job = trained(config, platform, "m-1")
    end_training(config, platform, job)
    assert swept(config, platform) == {}  # the operation is not done
    platform.models.complete(last_operation(platform))
    assert swept(config, platform) == {run: "recorded"}
    assert status(config, platform, run).state.value == "deployed"


def test_a_lost_bake_end_ends_the_bake_once_the_task_is_overdue(env):
    config, platform = env
    config = replace(config, bake_seconds=5)
    serving_champion(config, platform)
    run, job = trained(config, platform, "m-canary", candidate=0.9, champion=1.0)
    end_training(config, platform, job)
    deploy_ends(config, platform)
    assert status(config, platform, run).state.value == "baking"
    good_figures(platform)
    quick = replace(config, reconcile_after_seconds=10)
    # Quiet for 12 s, but the task is due 5 s after the bake began and overdue 10 s after that.
    assert swept(quick, platform, at=datetime.now(timezone.utc) + timedelta(seconds=12)) == {}
    assert swept(quick, platform, at=datetime.now(timezone.utc) + timedelta(seconds=16)) == {run: "recorded: promoted"}
    assert status(config, platform, run).state.value == "deployed"


def _training(config, platform) -> tuple[str, str]:
    run, _ = preprocessing(config, platform)
    launched = start_training(config, platform, write_manifest(platform.storage, run))
    return run, launched.job


def _ledger(config, platform, run):
    from functions.run_store import RunStore

    return RunStore(platform.storage, config.bucket).ledger(run)[run]



def test_a_run_whose_start_event_gave_up_before_its_launch_is_launched_once(env):
    from functions.platform import TransientError as Unavailable

    config, platform = env
    platform.jobs.fail_next = Unavailable("Dataflow is unavailable")
    with pytest.raises(Unavailable):  # every delivery failed like this one: the event is dead-lettered
        start_run(config, platform, message(b"{}", message_id="m-dead"))
    (stuck,) = [s for s in _statuses(config, platform)]
    assert stuck.state.value == "requested" and platform.jobs.preprocess_calls == []

    assert swept(config, platform) == {stuck.run_id: "launched"}
    assert status(config, platform, stuck.run_id).state.value == "preprocessing"
    # The start event delivered late after all (the same message): its run has launched, nothing twice.
    assert start_run(config, platform, message(b"{}", message_id="m-dead")).action == "duplicate"
    assert len(platform.jobs.preprocess_calls) == 1


def _statuses(config, platform):
    from functions.run_store import RunStore

    return RunStore(platform.storage, config.bucket).statuses()


def test_a_replayed_start_event_carries_on_the_run_its_first_delivery_left_and_a_second_does_nothing(env):
    from functions.platform import TransientError as Unavailable

    config, platform = env
    config = replace(config, debounce_seconds=60)
    platform.jobs.fail_next = Unavailable("Dataflow is unavailable")
    with pytest.raises(Unavailable):
        start_run(config, platform, message(b'{"limit": 500}', message_id="m-first"))
    (stuck,) = _statuses(config, platform)

    replayed = start_run(config, platform, message(b'{"limit": 500}', message_id="m-replay"))  # a new message
    assert (replayed.action, replayed.run_id) == ("launched", stuck.run_id)
    again = start_run(config, platform, message(b'{"limit": 500}', message_id="m-replay-2"))
    assert again.action == "rejected" and "not run again" in again.detail
    assert len(platform.jobs.preprocess_calls) == 1
