"""The job API over the local job runner: custom jobs, Flex Template launches, Google's errors."""
from __future__ import annotations

import sys

from werkzeug.test import Client

from local_cloud.jobs.control_api import ControlApi
from local_cloud.jobs.runner import JobRunner
from tests.conftest import wait_until


def test_the_job_api_runs_a_custom_job_and_refuses_a_second_active_dataflow_job_of_one_name(tmp_path):
    entries: list = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    client = Client(ControlApi(runner))
    body = {"displayName": "t", "labels": {"run_id": "r1"}, "jobSpec": {
        "workerPoolSpecs": [{"pythonPackageSpec": {"pythonModule": "json.tool", "args": ["--help"]}}],
        "baseOutputDirectory": {"outputUriPrefix": "gs://b/runs/r1/train/"}}}
    created = client.post("/v1/projects/p/locations/r/customJobs", json=body).get_json()
    job_id = created["name"].rsplit("/", 1)[-1]
    wait_until(lambda: any("textPayload" in i and i["textPayload"].startswith("Job ") for i in list(entries)), 20,
               "the custom job's terminal line")
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
