"""A job outlives the local cloud that ran it: its record stays on disk, and the next cloud on the
state directory runs it again to the end the cloud would have given it (never left RUNNING)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from events.log_entries import JobKind, JobOutcome, classify
from local_cloud.child_processes import alive
from local_cloud.jobs.runner import JobRunner
from tests.conftest import wait_until

# Sleeps on its first run (the one the cloud's end interrupts) and succeeds on its second.
SECOND_TIME_LUCKY = textwrap.dedent("""
    import os, sys, time
    mark = sys.argv[1]
    if not os.path.exists(mark):
        open(mark, "w").close()
        time.sleep(60)
    print("trained")
""")


def custom_job(mark) -> dict:
    return {"displayName": "t", "labels": {"run_id": "r"}, "jobSpec": {"workerPoolSpecs": [{
        "containerSpec": {"imageUri": "x", "command": ["python", "-c", SECOND_TIME_LUCKY], "args": [str(mark)]}}]}}


def ended(entries: list[dict]):
    return [classify(e) for e in list(entries) if classify(e) is not None]


def test_a_job_unfinished_when_the_cloud_stopped_is_resumed_and_ends_as_the_cloud_would(tmp_path):
    first: list[dict] = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", first.append)
    job = runner.create_custom_job(custom_job(tmp_path / "mark"))
    wait_until(lambda: (tmp_path / "mark").exists(), 30, "the job's first run")
    runner.stop()
    assert ended(first) == []  # stopping the cloud is not the job's end
    record = json.loads((tmp_path / "state" / "jobs" / f"{job.job_id}.json").read_text())
    assert record["state"] == "JOB_STATE_RUNNING"

    second: list[dict] = []
    again = JobRunner(tmp_path / "state", tmp_path / "buckets", second.append)
    assert again.get(job.job_id).state == "JOB_STATE_RUNNING"  # what the API answers meanwhile
    assert [j.job_id for j in again.resume()] == [job.job_id]
    try:
        wait_until(lambda: ended(second), 30, "the resumed job's end")
    finally:
        again.stop()
    (end,) = ended(second)
    assert (end.kind, end.outcome, end.job_id) == (JobKind.VERTEX_CUSTOM_JOB, JobOutcome.SUCCEEDED, job.job_id)
    resumed = again.get(job.job_id)
    assert resumed.state == "JOB_STATE_SUCCEEDED" and resumed.restarts == 1
    assert JobRunner(tmp_path / "state", tmp_path / "buckets", list().append).get(job.job_id).state == \
        "JOB_STATE_SUCCEEDED"  # and the record says so


def test_a_finished_job_is_not_run_again(tmp_path):
    (tmp_path / "mark").touch()  # the job ends at once
    entries: list[dict] = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    runner.create_custom_job(custom_job(tmp_path / "mark"))
    wait_until(lambda: ended(entries), 30, "the job's end")
    runner.stop()
    assert JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append).resume() == []


def test_a_job_being_cancelled_when_the_cloud_went_ends_cancelled(tmp_path):
    entries: list[dict] = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    job = runner.create_custom_job(custom_job(tmp_path / "mark"))
    wait_until(lambda: (tmp_path / "mark").exists(), 30, "the job's first run")
    record_path = tmp_path / "state" / "jobs" / f"{job.job_id}.json"
    runner.stop()
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "state": "JOB_STATE_CANCELLING"}))  # cancel asked, then the crash
    later: list[dict] = []
    again = JobRunner(tmp_path / "state", tmp_path / "buckets", later.append)
    assert again.resume() == []
    assert again.get(job.job_id).state == "JOB_STATE_CANCELLED"
    (end,) = ended(later)
    assert end.outcome == JobOutcome.CANCELLED


KILLED_CLOUD = textwrap.dedent("""
    import sys, threading, time
    from local_cloud import child_processes
    def start():
        proc = child_processes.popen([sys.executable, "-c", "import time; time.sleep(120)"], state_dir=sys.argv[1])
        print(proc.pid, flush=True)
    worker = threading.Thread(target=start)  # a short-lived thread, as a request's
    worker.start(); worker.join()
    time.sleep(120)
""")


def test_a_child_dies_with_the_cloud_not_with_the_thread_that_started_it(tmp_path):
    cloud = subprocess.Popen([sys.executable, "-c", KILLED_CLOUD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = int(cloud.stdout.readline())
    try:
        os.kill(child, 0)  # alive after the thread that started it ended
        from local_cloud.child_processes import stale_processes

        assert stale_processes(tmp_path) == [child]
    finally:
        cloud.kill()
        cloud.wait()
    wait_until(lambda: not alive(child), 10, "the child's death with its parent")


def test_a_new_cloud_kills_what_an_earlier_one_left(tmp_path):
    from local_cloud.child_processes import STATE_VARIABLE, stale_processes, sweep_stale

    # A grandchild the parent-death signal does not reach: marked, but not a child of a cloud.
    orphan = subprocess.Popen(["sleep", "120"], env={**os.environ, STATE_VARIABLE: str(tmp_path.resolve())},
                              start_new_session=True)
    other = subprocess.Popen(["sleep", "120"], env={**os.environ, STATE_VARIABLE: str(tmp_path / "elsewhere")})
    try:
        assert sweep_stale(tmp_path) == [orphan.pid]
        assert orphan.wait(5) == -signal.SIGKILL
        assert other.poll() is None  # another directory's cloud is left alone
        assert stale_processes(tmp_path) == []
    finally:
        for proc in (orphan, other):
            proc.kill()
            proc.wait()

