"""The platform services the functions use, as small interfaces with a cloud and a local side.

Stages depend on these interfaces only; `functions.adapters.build_platform(config)` picks the
implementation from the configuration. Errors are sorted into the two kinds the design cares about:
`TransientError` (raise, so the platform retries the event) and `AlreadyExists` (the work was done
already: a redelivery, acknowledged quietly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class TransientError(RuntimeError):
    """A fault that may pass: the function raises so that the event is delivered again."""


class AlreadyExists(RuntimeError):
    """The resource exists already (HTTP 409): a duplicate request that was done before."""


class NotFound(RuntimeError):
    """The object or resource does not exist."""


class TooLarge(ValueError):
    """The object is larger than the reader allowed (a ValueError, as an object name it cannot hold is)."""


@dataclass(frozen=True)
class JobRef:
    """A launched job: its platform id and full resource name."""

    job_id: str
    name: str
    kind: str  # "preprocess" | "training"


@dataclass(frozen=True)
class PreprocessJob:
    """What the Dataflow job API says of a preprocessing job (its name is the run id)."""

    job_id: str
    name: str
    state: str  # currentState: JOB_STATE_RUNNING, JOB_STATE_DONE, JOB_STATE_FAILED, ...
    labels: dict[str, str] = field(default_factory=dict)

    # The states a batch job does not leave (JobState in
    # https://cloud.google.com/dataflow/docs/reference/rest/v1b3/projects.jobs#jobstate).
    TERMINAL = ("JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED",
                "JOB_STATE_DRAINED", "JOB_STATE_STOPPED")

    @property
    def terminal(self) -> bool:
        return self.state in self.TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.state == "JOB_STATE_DONE"


@dataclass(frozen=True)
class TrainingJob:
    """What the job API says of a training job: the truth behind a log line."""

    job_id: str
    name: str
    state: str  # JOB_STATE_SUCCEEDED, JOB_STATE_FAILED, JOB_STATE_CANCELLED, JOB_STATE_RUNNING, ...
    labels: dict[str, str]
    base_output_uri: str
    error: str = ""

    TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")

    @property
    def terminal(self) -> bool:
        return self.state in self.TERMINAL


@dataclass(frozen=True)
class ModelVersion:
    model: str  # projects/P/locations/R/models/M
    version_id: str

    @property
    def versioned_name(self) -> str:
        return f"{self.model}@{self.version_id}"

    @classmethod
    def from_name(cls, versioned_name: str) -> "ModelVersion":
        """The version a MODEL@VERSION name (as ledgers and deployment records keep it) names."""
        model, _, version_id = versioned_name.rpartition("@")
        return cls(model=model, version_id=version_id)


@dataclass(frozen=True)
class RegisteredVersion(ModelVersion):
    """A model version as the registry holds it: where its artifacts are, its labels and aliases."""

    artifact_uri: str
    labels: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeployedModel:
    id: str
    model: str  # projects/P/locations/R/models/M
    version_id: str

    @property
    def versioned_name(self) -> str:
        return f"{self.model}@{self.version_id}"


@dataclass(frozen=True)
class EndpointState:
    """What the endpoint API says it serves: the deployed models and the traffic split."""

    deployed: tuple[DeployedModel, ...]
    traffic_split: dict[str, int]

    def champion(self) -> DeployedModel | None:
        """The deployed model taking the most traffic (the one a canary bakes beside), if any."""
        serving = [d for d in self.deployed if self.traffic_split.get(d.id, 0) > 0]
        return max(serving, key=lambda d: self.traffic_split[d.id], default=None)

    def get(self, deployed_model_id: str) -> DeployedModel | None:
        return next((d for d in self.deployed if d.id == deployed_model_id), None)


@dataclass(frozen=True)
class DeployOperation:
    name: str  # projects/P/locations/R/endpoints/E/operations/O
    done: bool = False
    error: str = ""
    deployed_model_id: str = ""
    response: dict = field(default_factory=dict)


class Storage(Protocol):
    """The pipeline bucket."""

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; NotFound if absent; TooLarge if larger than max_bytes; ValueError for a
        name that is no object's."""

    def write(self, name: str, data: bytes, content_type: str = "application/json") -> None:
        """Create or replace an object, visible only when complete."""

    def create(self, name: str, data: bytes, content_type: str = "application/json") -> bool:
        """Create-only write: False (and nothing written) when the object exists already."""

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Object names under a prefix, sorted."""

    def list_folders(self, prefix: str) -> list[str]:
        """The names ending in "/" directly under a prefix that ends in "/" (a delimiter listing)."""

    def delete(self, name: str) -> None: ...


class Jobs(Protocol):
    """Launching preprocessing (Dataflow) and training (Vertex AI CustomJob), never waiting."""

    def launch_preprocess(
        self, run_id: str, source: str, out_uri: str, limit: int | None, labels: dict[str, str]
    ) -> JobRef:
        """Start the Beam pipeline with the run id as its job name; AlreadyExists if running."""

    def launch_training(
        self, run_id: str, manifest_uri: str, base_output_uri: str, trainer_args: list[str],
        labels: dict[str, str],
    ) -> JobRef: ...

    def get_preprocess_job(self, job_id: str) -> PreprocessJob:
        """A Dataflow job by id; NotFound if the API knows no such job."""

    def find_training_jobs(self, run_id: str) -> list[JobRef]:
        """Training jobs labelled with this run id, in any state."""

    def get_training_job(self, job_id: str) -> TrainingJob: ...


class Models(Protocol):
    """Model Registry and the endpoint."""

    def upload_version(self, model_name: str, artifact_uri: str, labels: dict[str, str]) -> ModelVersion:
        """Register the SavedModel as a new version of the named model (the first creates it)."""

    def find_version(self, model_name: str, run_id: str) -> ModelVersion | None:
        """The version labelled with this run id, if one was uploaded already."""

    def get_version(self, versioned_name: str) -> RegisteredVersion:
        """A version by name (MODEL@VERSION or MODEL@ALIAS); NotFound if there is none."""

    def start_deploy(
        self, version: ModelVersion, endpoint_id: str, traffic_split: dict[str, int], display_name: str
    ) -> DeployOperation:
        """Start deploying the version to the endpoint with the endpoint's whole new split ("0": the
        version deployed); returns at once with the operation."""

    def get_operation(self, name: str) -> DeployOperation: ...

    def get_endpoint(self, endpoint_id: str) -> EndpointState:
        """The endpoint's deployed models and split; NotFound if the endpoint does not exist."""

    def undeploy(self, endpoint_id: str, deployed_model_id: str, traffic_split: dict[str, int]) -> None:
        """Start undeploying a model, the rest of the traffic split as given; NotFound if it is gone."""

    def move_aliases(self, version: ModelVersion, aliases: list[str]) -> None:
        """Put the aliases on this version (taking them from the versions that held them)."""


class Tasks(Protocol):
    """Cloud Tasks: work scheduled for later, so that no function waits."""

    def schedule_publish(self, task_id: str, topic: str, message: dict, at: datetime) -> bool:
        """At `at`, publish `message` (JSON) to `topic`; False if a task of this id exists already."""


class ServingMetrics(Protocol):
    """Cloud Monitoring's serving figures of the endpoint's deployed models."""

    def figures(self, endpoint_id: str, deployed_model_ids: list[str], start: datetime,
                end: datetime) -> dict[str, dict]:
        """{deployed model id: {"requests", "errors", "latency_p99_ms"}} over [start, end)."""


@dataclass
class Platform:
    storage: Storage
    jobs: Jobs
    models: Models
    tasks: Tasks
    metrics: ServingMetrics
