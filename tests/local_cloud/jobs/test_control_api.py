"""The job API over the local job runner: custom jobs, Flex Template launches, Google's errors, and
request bodies and answers held against the APIs' discovery documents."""
from __future__ import annotations

import sys

from werkzeug.test import Client

from local_cloud import discovery
from local_cloud.jobs.control_api import ControlApi
from local_cloud.jobs.runner import JobRunner
from tests.conftest import wait_until


def test_the_job_api_runs_a_custom_job_and_refuses_a_second_active_dataflow_job_of_one_name(tmp_path):
    entries: list = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    client = Client(ControlApi(runner))
    body = {"displayName": "t", "labels": {"run_id": "r1"}, "jobSpec": {
        "workerPoolSpecs": [{"pythonPackageSpec": {"executorImageUri": "python:3.11", "packageUris": ["gs://b/t.tar.gz"],
                                                   "pythonModule": "json.tool", "args": ["--help"]}}],
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


LAUNCH_PATH = "/v1b3/projects/p/locations/r/flexTemplates:launch"
JOBS_PATH = "/v1/projects/p/locations/r/customJobs"


def test_bodies_outside_the_discovery_schemas_are_refused_before_anything_runs(tmp_path):
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", lambda entry: None)
    client = Client(ControlApi(runner))
    launch = {"launchParameter": {"jobName": "run-x", "parameters": {"source": "s", "out": "o"}}}
    job = {"displayName": "t", "jobSpec": {"workerPoolSpecs": [{"replicaCount": "1", "pythonPackageSpec": {
        "executorImageUri": "python:3.11", "packageUris": ["gs://b/t.tar.gz"], "pythonModule": "json.tool"}}]}}
    refused = [
        (LAUNCH_PATH, {"launchParameter": dict(launch["launchParameter"], containerSpecGcsPth="gs://b/t.json")},
         "launchParameter.containerSpecGcsPth: unknown field"),
        (LAUNCH_PATH, {"launchParameter": dict(launch["launchParameter"], environment={"maxWorkers": "3"})},
         "launchParameter.environment.maxWorkers: expected a JSON number without a fraction"),
        (LAUNCH_PATH, {"launchParameter": {"parameters": {"source": "s", "out": "o"}}},
         "launchParameter.jobName: required field missing"),
        (JOBS_PATH, {**job, "jobSpec": {"workerPoolSpecs": [{"replicaCount": 1}]}},
         "jobSpec.workerPoolSpecs[0].replicaCount: expected a JSON string of digits (int64), got 1"),
        (JOBS_PATH, {**job, "lables": {"run_id": "r"}}, "lables: unknown field"),
        (JOBS_PATH, {**job, "jobSpec": {**job["jobSpec"], "scheduling": {"strategy": "CHEAP"}}},
         "jobSpec.scheduling.strategy: 'CHEAP' is not a value of the enum"),
        (f"{JOBS_PATH}/1:cancel", {"force": True}, "force: unknown field"),
    ]
    for path, body, message in refused:
        answer = client.post(path, json=body)
        assert answer.status_code == 400, (body, answer.get_json())
        assert answer.get_json()["error"]["code"] == 400 and answer.get_json()["error"]["status"] == "INVALID_ARGUMENT"
        assert message in answer.get_json()["error"]["message"], answer.get_json()
    assert runner.list_custom_jobs() == [] and runner.get("1") is None
    runner.stop()


def test_the_job_api_answers_in_the_documented_response_schemas(tmp_path):
    entries: list = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    client = Client(ControlApi(runner))
    job = {"displayName": "t", "labels": {"run_id": "r1"}, "jobSpec": {"workerPoolSpecs": [{
        "machineSpec": {"machineType": "n1-standard-4"}, "replicaCount": "1",
        "pythonPackageSpec": {"executorImageUri": "python:3.11", "packageUris": ["gs://b/t.tar.gz"],
                              "pythonModule": "json.tool", "args": ["--help"]}}]}}
    created = client.post(JOBS_PATH, json=job).get_json()
    job_id = created["name"].rsplit("/", 1)[-1]
    wait_until(lambda: any(str(e.get("textPayload", "")).startswith("Job ") for e in list(entries)), 20,
               "the custom job's terminal line")
    launched = client.post(LAUNCH_PATH, json={"launchParameter": {"jobName": "run-x", "parameters": {
        "source": sys.executable, "out": str(tmp_path / "out")}}}).get_json()
    answers = [
        ("aiplatform.projects.locations.customJobs.create", created),
        ("aiplatform.projects.locations.customJobs.get", client.get(f"{JOBS_PATH}/{job_id}").get_json()),
        ("aiplatform.projects.locations.customJobs.list", client.get(JOBS_PATH).get_json()),
        ("dataflow.projects.locations.flexTemplates.launch", launched),
        ("dataflow.projects.locations.jobs.get",
         client.get(f"/v1b3/projects/p/locations/r/jobs/{launched['job']['id']}").get_json()),
    ]
    for method_id, answer in answers:
        assert discovery.response_errors(method_id, answer) == [], (method_id, answer)
    runner.stop()
