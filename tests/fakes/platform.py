"""Fakes of the job and model APIs (the network boundary of the functions' platform).

Each records what it was asked and can fail on demand; storage in tests is the real local
adapter on a temporary bucket directory, so only the remote services are stood in for.
"""
from __future__ import annotations

import threading
import time

from functions.platform import AlreadyExists, DeployOperation, JobRef, ModelVersion, TrainingJob


class FakeJobs:
    def __init__(self):
        self.preprocess_calls = []
        self.training_calls = []
        self.jobs: dict[str, TrainingJob] = {}
        self.fail_next: Exception | None = None
        self.launch_delay_s = 0.0
        self.lock = threading.Lock()

    def _maybe_fail(self):
        time.sleep(self.launch_delay_s)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def launch_preprocess(self, run_id, source, out_uri, limit, labels):
        self._maybe_fail()
        with self.lock:
            self.preprocess_calls.append((run_id, source, out_uri, limit, labels))
            return JobRef(f"df-{len(self.preprocess_calls)}", run_id, "preprocess")

    def launch_training(self, run_id, manifest_uri, base_output_uri, trainer_args, labels):
        self._maybe_fail()
        with self.lock:
            self.training_calls.append((run_id, manifest_uri, base_output_uri, trainer_args, labels))
            job_id = f"{1000 + len(self.training_calls)}"
            self.jobs[job_id] = TrainingJob(job_id, f"projects/p/locations/r/customJobs/{job_id}",
                                            "JOB_STATE_RUNNING", dict(labels), base_output_uri)
            return JobRef(job_id, self.jobs[job_id].name, "training")

    def find_training_jobs(self, run_id):
        return [JobRef(j.job_id, j.name, "training") for j in self.jobs.values() if j.labels.get("run_id") == run_id]

    def get_training_job(self, job_id):
        return self.jobs[job_id]

    def finish(self, job_id, state, error=""):
        job = self.jobs[job_id]
        self.jobs[job_id] = TrainingJob(job.job_id, job.name, state, job.labels, job.base_output_uri, error)


class FakeModels:
    def __init__(self):
        self.model_created_concurrently = False
        self.uploads = []
        self.deploys = []
        self.operations: dict[str, DeployOperation] = {}

    def upload_version(self, model_name, artifact_uri, labels):
        if self.model_created_concurrently:
            # another run created the model after our look: this upload (as a new model) is refused
            self.model_created_concurrently = False
            raise AlreadyExists(f"model {model_name} already exists")
        self.uploads.append((model_name, artifact_uri, labels))
        return ModelVersion(f"projects/p/locations/r/models/{model_name}", str(len(self.uploads)))

    def find_version(self, model_name, run_id):
        for i, (name, _, labels) in enumerate(self.uploads):
            if name == model_name and labels.get("run_id") == run_id:
                return ModelVersion(f"projects/p/locations/r/models/{name}", str(i + 1))
        return None

    def start_deploy(self, version, endpoint_id, traffic_percent, display_name):
        self.deploys.append((version, endpoint_id, traffic_percent, display_name))
        name = f"projects/p/locations/r/endpoints/{endpoint_id}/operations/{len(self.deploys)}"
        self.operations[name] = DeployOperation(name)
        return self.operations[name]

    def get_operation(self, name):
        return self.operations[name]
