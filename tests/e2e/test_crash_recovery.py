"""kill -9 of `mlrelay up` at each stage boundary, then `mlrelay up` again on the same directory.

Every event is delivered twice. The runs go one after another on one state directory, each killed at
its own moment: during preprocessing, during training, just after the training job ended, during the
deploy, during the canary's bake. After each restart the run must reach a terminal state with one job
per stage, no process of the killed cloud may be left, and the endpoint must hold what the ledgers
say: one model at 100 % once every run has ended. The drills are `bench.recovery`'s, which times them.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bench.recovery import MOMENTS, PREDICTIONS_BEFORE_CRASH, REQUEST, CloudProcess, crash_and_recover, wait_for
from local_cloud.child_processes import stale_processes

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    local = CloudProcess(tmp_path_factory.mktemp("crash") / "state", duplicate_deliveries=2).start()
    yield local
    local.stop()
    assert stale_processes(local.root) == [], "processes of the local cloud outlived its stop"


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_run_killed_at_each_boundary_ends_after_a_restart_with_one_job_per_stage(cloud, moment):
    crash = crash_and_recover(cloud, moment, 3000 + list(MOMENTS).index(moment))
    run = crash["run_id"]
    print(f"{moment}: {run} ended {crash['state']} {crash['recovery_s']:.1f} s after the restart")

    assert crash["orphans_left"] == [], "processes of the killed cloud outlived it"
    (status,) = cloud.runs().statuses(run)
    assert crash["state"] == "deployed", status.to_dict()
    assert status.anomalies == ()
    records = cloud.job_records(run)
    assert sorted(r["kind"] for r in records) == ["dataflow", "vertex"], records  # resumed, never relaunched
    assert all(r["state"] in ("JOB_STATE_DONE", "JOB_STATE_SUCCEEDED") for r in records), records
    served = cloud.endpoint()
    assert len(served["deployedModels"]) == 1 and list(served["trafficSplit"].values()) == [100], served
    assert served["deployedModels"][0]["id"] == cloud.runs().deployed_record(run)["deployed_model_id"]
    if moment == "during-the-bake":  # the verdict, made after the restart, counted what came before it
        assert crash["served_before_crash"] == PREDICTIONS_BEFORE_CRASH
        (deployed,) = [e for e in cloud.runs().ledger(run)[run] if e.state.value == "deployed"]
        counted = sum(figures["requests"] for figures in deployed.details["figures"].values())
        assert counted == PREDICTIONS_BEFORE_CRASH, deployed.details["figures"]


def function_pids(cloud, target: str) -> list[int]:
    """The pids of a function's server (functions-framework, and its workers), by its --target."""
    found = []
    for pid in stale_processes(cloud.root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--target" in argv and argv[argv.index(b"--target") + 1] == target.encode():
            found.append(pid)
    return found


def test_a_function_server_that_dies_is_started_again_and_the_next_trigger_runs(cloud):
    dead = function_pids(cloud, "start_pipeline")
    for pid in dead:
        os.kill(pid, signal.SIGKILL)
    run = cloud.trigger("after-a-function-died", numTrainExamples=3100)  # delivered once the server is back
    assert cloud.wait_ended(run) == "deployed"
    assert function_pids(cloud, "start_pipeline") and not set(dead) & set(function_pids(cloud, "start_pipeline"))


def test_a_trigger_file_written_while_no_cloud_runs_starts_a_run_when_one_starts(cloud):
    cloud.stop()
    path = cloud.root / "buckets" / "mlrelay" / "triggers" / "while-down.json"
    path.write_text(json.dumps({**REQUEST, "numTrainExamples": 3200}))
    cloud.start()
    uri = "gs://mlrelay/triggers/while-down.json"
    run = wait_for(lambda: cloud.runs().find_run_for_trigger(uri), 60, f"the run of {uri}")
    assert cloud.wait_ended(run) == "deployed"
