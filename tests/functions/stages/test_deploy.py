"""Deploying a trained model once, and the deploy operation's end recorded once."""
from __future__ import annotations

from functions.platform import DeployOperation
from functions.run_store import metrics_name
from functions.stages.deploy import finish_deploy
from functions.stages.start import start_run
from functions.stages.training import finish_training, start_training
from tests.fakes.runs import message, training_ended, write_manifest


def trained_run(config, platform):
    run = start_run(config, platform, message(b"{}")).run_id
    start_training(config, platform, write_manifest(platform.storage, run))
    job_id = next(iter(platform.jobs.jobs))
    platform.jobs.finish(job_id, "JOB_STATE_SUCCEEDED")
    return run, job_id


def state(runs, run_id):
    (status,) = runs.statuses(run_id)
    return status


def test_success_registers_one_version_and_starts_one_deploy_then_the_operation_ends_it(env, runs):
    config, platform = env
    run, job_id = trained_run(config, platform)
    platform.storage.write(metrics_name(run), b'{"eval_rmse": 1.01}')
    for _ in range(3):
        finish_training(config, platform, training_ended(job_id))
    assert len(platform.models.uploads) == 1 and len(platform.models.deploys) == 1
    model_name, artifact, labels = platform.models.uploads[0]
    assert artifact == f"gs://b/runs/{run}/train/model/" and labels == {"run_id": run}
    assert state(runs, run).state.value == "deploying"
    deploying = next(e for e in runs.ledger(run)[run] if e.state.value == "deploying")
    assert deploying.details["metrics"] == {"eval_rmse": 1.01}

    op_name = next(iter(platform.models.operations))
    platform.models.operations[op_name] = DeployOperation(op_name, done=True, deployed_model_id="77")
    assert finish_deploy(config, platform, op_name, "e").action == "recorded"
    assert finish_deploy(config, platform, op_name, "e").action == "duplicate"
    assert state(runs, run).state.value == "deployed"


def test_a_failed_deploy_fails_the_run(env, runs):
    config, platform = env
    run, job_id = trained_run(config, platform)
    finish_training(config, platform, training_ended(job_id))
    op_name = next(iter(platform.models.operations))
    platform.models.operations[op_name] = DeployOperation(op_name, done=True, error="model failed to load")
    finish_deploy(config, platform, op_name, "e")
    status = state(runs, run)
    assert status.state.value == "failed" and "model failed to load" in status.reason


def test_an_operation_that_is_not_ours_is_ignored(env):
    config, platform = env
    assert finish_deploy(config, platform, "projects/p/locations/r/endpoints/e/operations/9", "e").action == "ignored"


def test_a_model_created_by_another_run_meanwhile_is_uploaded_to_as_a_new_version(env, runs):
    config, platform = env
    run, job_id = trained_run(config, platform)
    platform.models.model_created_concurrently = True
    result = finish_training(config, platform, training_ended(job_id))
    assert result.action == "launched"
    assert len(platform.models.uploads) == 1 and len(platform.models.deploys) == 1
    assert state(runs, run).state.value == "deploying"
