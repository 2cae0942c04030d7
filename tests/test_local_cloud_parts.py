"""The local cloud's parts on their own: bucket events, the scheduler, the log router, the job API."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from werkzeug.test import Client

from events.log_entry_builders import dataflow_job_message_entry, vertex_job_log_entry, vertex_job_terminal_entry
from events.log_entries import Outcome
from events.sink_filters import filter_for
from functions.local_adapters import LocalStorage
from local_cloud.bucket import BucketWatcher, object_name
from local_cloud.control_api import ControlApi
from local_cloud.jobs import JobRunner
from local_cloud.log_router import LogRouter, Sink
from local_cloud.scheduler import ScheduleEntry, Scheduler

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


class Collected:
    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


@pytest.fixture
def watched(tmp_path):
    got = Collected()
    watcher = BucketWatcher("b", tmp_path, got)
    watcher.start()
    yield tmp_path, got
    watcher.stop()


def names(items):
    return [item.name for item in items]


def test_a_file_is_finalized_when_closed_not_while_written(watched):
    root, got = watched
    (root / "runs").mkdir()
    time.sleep(0.2)
    with open(root / "runs" / "a.csv", "wb") as handle:
        handle.write(b"x" * 1000)
        handle.flush()
        time.sleep(0.3)
        assert "runs/a.csv" not in names(got.items)
        handle.write(b"y")
    assert got.wait_for(lambda items: "runs/a.csv" in names(items))
    resource = next(i for i in got.items if i.name == "runs/a.csv").resource
    assert resource["size"] == "1001" and resource["bucket"] == "b"
    assert resource["md5Hash"] == base64.b64encode(hashlib.md5(b"x" * 1000 + b"y").digest()).decode()
    assert int(resource["generation"]) > 0


def test_a_staged_write_is_one_finalize_of_the_final_name(watched):
    root, got = watched
    LocalStorage(root).write("triggers/t.json", b"{}")
    assert got.wait_for(lambda items: "triggers/t.json" in names(items))
    time.sleep(0.3)
    assert names(got.items).count("triggers/t.json") == 1
    assert not [n for n in names(got.items) if n.endswith(".mlrelay-part")]


def test_a_create_only_write_is_finalized_once_and_a_second_create_loses(watched):
    root, got = watched
    storage = LocalStorage(root)
    assert storage.create("runs/r/_LAUNCHED", b'{"owner": "a"}')
    assert not storage.create("runs/r/_LAUNCHED", b'{"owner": "b"}')
    assert got.wait_for(lambda items: "runs/r/_LAUNCHED" in names(items))
    time.sleep(0.3)
    assert names(got.items).count("runs/r/_LAUNCHED") == 1
    assert storage.read("runs/r/_LAUNCHED") == b'{"owner": "a"}'


def test_files_written_into_a_brand_new_directory_tree_are_not_missed(watched):
    root, got = watched
    deep = root / "runs" / "r1" / "preprocess"
    deep.mkdir(parents=True)
    for i in range(5):
        (deep / f"s{i}").write_bytes(b"z")
    assert got.wait_for(lambda items: {f"runs/r1/preprocess/s{i}" for i in range(5)} <= set(names(items)))


def test_object_names_refuse_paths_outside_the_bucket(tmp_path):
    assert object_name(tmp_path, tmp_path / "a" / "b") == "a/b"
    assert object_name(tmp_path, tmp_path.parent / "x") is None
    assert object_name(tmp_path, tmp_path / "runs" / ".x.json.0f.mlrelay-part") is None


def test_the_scheduler_publishes_at_each_due_minute_and_not_before():
    clock = [NOW + timedelta(seconds=58.5)]
    published = Collected()
    entry = ScheduleEntry("retrain", "* * * * *", "start", b'{"limit": 5}', {"origin": "cron"})
    scheduler = Scheduler([entry], lambda topic, data, attrs: published((topic, data, attrs)),
                          now=lambda: clock[0] + timedelta(seconds=time.monotonic() - base))
    base = time.monotonic()
    scheduler.start()
    try:
        assert published.wait_for(lambda items: len(items) == 1, timeout=5)
        assert published.items[0] == ("start", b'{"limit": 5}', {"origin": "cron"})
        assert scheduler.fired[0] == ("retrain", NOW + timedelta(minutes=1))
        time.sleep(0.5)
        assert len(published.items) == 1  # the next one is a minute away
    finally:
        scheduler.stop()


def test_a_bad_cron_expression_is_refused():
    with pytest.raises(ValueError, match="cron"):
        ScheduleEntry("bad", "every minute", "t", b"")


def test_the_router_forwards_only_what_the_sink_filter_matches(tmp_path):
    published = []
    router = LogRouter(tmp_path / "log.jsonl", [Sink("job-events", filter_for("job-events"), "events")],
                       lambda topic, data, attrs: published.append((topic, json.loads(data))))
    ordinary = vertex_job_log_entry("p", "1", "epoch 1/5 loss 1.2", NOW, "a", task_name="workerpool0-0")
    done = vertex_job_terminal_entry("p", "1", Outcome.SUCCEEDED, NOW, "b")
    dataflow_ok = dataflow_job_message_entry("p", "2", "run-20261127-050000-0123456789", "r",
                                             "Worker pool stopped.", NOW, "c")
    dataflow_failed = dataflow_job_message_entry("p", "2", "run-20261127-050000-0123456789", "r",
                                                 "Workflow failed. Causes: boom", NOW, "d", severity="ERROR")
    for entry in (ordinary, done, dataflow_ok, dataflow_failed):
        router.write(entry)
    assert [e["insertId"] for _, e in published] == ["b", "d"]
    assert len(router.entries()) == 4


def test_the_job_api_runs_a_custom_job_and_refuses_a_second_active_dataflow_job_of_one_name(tmp_path):
    entries = Collected()
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries)
    client = Client(ControlApi(runner))
    body = {"displayName": "t", "labels": {"run_id": "r1"}, "jobSpec": {
        "workerPoolSpecs": [{"pythonPackageSpec": {"pythonModule": "json.tool", "args": ["--help"]}}],
        "baseOutputDirectory": {"outputUriPrefix": "gs://b/runs/r1/train/"}}}
    created = client.post("/v1/projects/p/locations/r/customJobs", json=body).get_json()
    job_id = created["name"].rsplit("/", 1)[-1]
    assert entries.wait_for(lambda items: any("textPayload" in i and i["textPayload"].startswith("Job ")
                                              for i in items), timeout=20)
    got = client.get(f"/v1/projects/p/locations/r/customJobs/{job_id}").get_json()
    assert got["state"] == "JOB_STATE_SUCCEEDED" and got["labels"] == {"run_id": "r1"}
    listed = client.get('/v1/projects/p/locations/r/customJobs?filter=labels.run_id="r1"').get_json()
    assert [j["name"] for j in listed["customJobs"]] == [created["name"]]
    assert client.get('/v1/projects/p/locations/r/customJobs?filter=labels.run_id="r2"').get_json() == {"customJobs": []}
    assert client.get("/v1/projects/p/locations/r/customJobs/999").status_code == 404

    launch = {"launchParameter": {"jobName": "run-x", "parameters": {
        "source": sys.executable, "out": str(tmp_path / "out")}}}  # a source Beam cannot read: it fails
    first = client.post("/v1b3/projects/p/locations/r/flexTemplates:launch", json=launch)
    assert first.status_code == 200
    second = client.post("/v1b3/projects/p/locations/r/flexTemplates:launch", json=launch)
    assert second.status_code == 409 and second.get_json()["error"]["status"] == "ALREADY_EXISTS"
    runner.stop()


def test_the_job_api_answers_bad_requests_and_injected_faults_as_google_apis_do(tmp_path):
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", lambda entry: None)
    api = ControlApi(runner)
    client = Client(api)
    bad = client.post("/v1/projects/p/locations/r/customJobs", data=b"not json",
                      headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.get_json()["error"]["status"] == "INVALID_ARGUMENT"
    assert client.post("/v1/projects/p/locations/r/customJobs", json={"jobSpec": {}}).status_code == 400
    api.inject_fault("customJobs", 503, count=1)
    assert client.get("/v1/projects/p/locations/r/customJobs").status_code == 503
    assert client.get("/v1/projects/p/locations/r/customJobs").status_code == 200
