"""Fakes of the job and model APIs (the network boundary of the functions' platform).

Each records what it was asked and can fail on demand; storage in tests is the real local
adapter on a temporary bucket directory, so only the remote services are stood in for.
"""
from __future__ import annotations

import threading
import time

from functions.platform import (
    AlreadyExists,
    DeployedModel,
    DeployOperation,
    EndpointState,
    JobRef,
    ModelVersion,
    NotFound,
    RegisteredVersion,
    PreprocessJob,
    TrainingJob,
)


class FakeJobs:
    def __init__(self):
        self.preprocess_calls = []
        self.training_calls = []
        self.jobs: dict[str, TrainingJob] = {}
        self.dataflow: dict[str, PreprocessJob] = {}
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
            job_id = f"df-{len(self.preprocess_calls)}"
            self.dataflow[job_id] = PreprocessJob(job_id, run_id, "JOB_STATE_RUNNING", dict(labels))
            return JobRef(job_id, run_id, "preprocess")

    def get_preprocess_job(self, job_id):
        if job_id not in self.dataflow:
            raise NotFound(f"no Dataflow job {job_id}")
        return self.dataflow[job_id]

    def end_preprocess(self, job_id, state):
        job = self.dataflow[job_id]
        self.dataflow[job_id] = PreprocessJob(job.job_id, job.name, state, job.labels)

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
        if job_id not in self.jobs:
            raise NotFound(f"no custom job {job_id}")
        return self.jobs[job_id]

    def finish(self, job_id, state, error=""):
        job = self.jobs[job_id]
        self.jobs[job_id] = TrainingJob(job.job_id, job.name, state, job.labels, job.base_output_uri, error)


class FakeModels:
    """The registry and one endpoint: deploys end when a test calls `complete`, as the cloud's do later."""

    def __init__(self):
        self.model_created_concurrently = False
        self.uploads = []
        self.deploys = []
        self.undeploys = []
        self.alias_moves = []
        self.operations: dict[str, DeployOperation] = {}
        self.deployed: list[DeployedModel] = []
        self.split: dict[str, int] = {}
        self.aliases: dict[str, set[str]] = {}  # version name -> aliases
        self.endpoint_exists = True

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

    def get_version(self, versioned_name):
        model, _, version_id = versioned_name.rpartition("@")
        if not version_id.isdigit():  # MODEL@ALIAS: the version holding the alias
            version_id = next((name.rpartition("@")[2] for name, held in self.aliases.items()
                               if version_id in held and name.rpartition("@")[0] == model), "")
        index = int(version_id) - 1 if version_id.isdigit() else -1
        if not 0 <= index < len(self.uploads):
            raise NotFound(f"no version {versioned_name}")
        name, artifact_uri, labels = self.uploads[index]
        return RegisteredVersion(model, version_id, artifact_uri, dict(labels),
                                 tuple(sorted(self.aliases.get(versioned_name, ()))))

    def start_deploy(self, version, endpoint_id, traffic_split, display_name):
        # Vertex answers 400 to a split that names models not deployed or does not sum to 100.
        _check_split(traffic_split, {"0"} | {d.id for d in self.deployed}, "deployModel")
        self.deploys.append((version, endpoint_id, dict(traffic_split), display_name))
        name = f"projects/p/locations/r/endpoints/{endpoint_id}/operations/{len(self.deploys)}"
        self.operations[name] = DeployOperation(name)
        return self.operations[name]

    def complete(self, name, error=""):
        """End a deploy operation as the cloud would: the model joins the endpoint with its split."""
        index = int(name.rsplit("/", 1)[1]) - 1
        version, _, split, _ = self.deploys[index]
        if self.operations[name].done:  # ended already: the cloud ends an operation once
            return self.operations[name]
        if error:
            self.operations[name] = DeployOperation(name, done=True, error=error)
            return self.operations[name]
        new_id = f"dm{index + 1}"
        self.deployed.append(DeployedModel(new_id, version.model, version.version_id))
        self.split = {(new_id if k == "0" else k): v for k, v in split.items()}
        self.operations[name] = DeployOperation(name, done=True, deployed_model_id=new_id)
        return self.operations[name]

    def get_operation(self, name):
        return self.operations[name]

    def get_endpoint(self, endpoint_id):
        if not self.endpoint_exists:
            raise NotFound(f"endpoint {endpoint_id}")
        return EndpointState(tuple(self.deployed), dict(self.split))

    def undeploy(self, endpoint_id, deployed_model_id, traffic_split):
        if all(d.id != deployed_model_id for d in self.deployed):
            raise NotFound(f"no deployed model {deployed_model_id}")
        remaining = {d.id for d in self.deployed if d.id != deployed_model_id}
        if remaining or traffic_split:  # the last model leaves an empty split
            _check_split(traffic_split, remaining, "undeployModel")
        self.undeploys.append((deployed_model_id, dict(traffic_split)))
        self.deployed = [d for d in self.deployed if d.id != deployed_model_id]
        self.split = dict(traffic_split)

    def move_aliases(self, version, aliases):
        self.alias_moves.append((version.versioned_name, list(aliases)))
        for held in self.aliases.values():
            held.difference_update(aliases)
        self.aliases.setdefault(version.versioned_name, set()).update(aliases)


def _check_split(split, known, method):
    if not set(split) <= known or sum(split.values()) != 100 or any(v < 0 for v in split.values()):
        raise ValueError(f"{method}: INVALID_ARGUMENT: traffic split {split} must give 100 % among {sorted(known)}")


class FakeTasks:
    def __init__(self):
        self.scheduled: dict[str, tuple] = {}

    def schedule_publish(self, task_id, topic, message, at):
        if task_id in self.scheduled:
            return False
        self.scheduled[task_id] = (topic, message, at)
        return True


class FakeMetrics:
    """Serving figures a test sets per deployed model; the windows asked for are recorded."""

    def __init__(self):
        self.figures_by_model: dict[str, dict] = {}
        self.asked = []

    def figures(self, endpoint_id, deployed_model_ids, start, end):
        self.asked.append((endpoint_id, list(deployed_model_ids), start, end))
        return {m: dict(self.figures_by_model.get(m, {"requests": 0, "errors": 0, "latency_p99_ms": None}))
                for m in deployed_model_ids}
