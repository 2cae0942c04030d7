"""The Google Cloud side of the platform interfaces: Cloud Storage, Dataflow and Vertex AI.

Each adapter holds a real Google client (REST transport) that it makes on first use, never at
import: importing the clients costs more than the rest of a function's cold start together
(`google.cloud.aiplatform_v1` alone takes over a second), and a function that only ignores an
event should not pay for it. The request bodies come from `functions.request_bodies`, the same
builders the local side uses, turned into the client's messages from their REST JSON, so both
sides send the same work.

Errors are sorted as the design says (`platform_error`): 409 means the work exists already
(`AlreadyExists`), 404 `NotFound`, 429 and 5xx (and network faults) `TransientError` so the event
is delivered again; anything else (400, 403, ...) is a bug or a misconfiguration and raises a
`RuntimeError` with the API's message, so the function fails loudly.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from functions import request_bodies
from functions.api_resources import (
    endpoint_from_resource,
    operation_from_resource,
    preprocess_job_from_resource,
    training_job_from_resource,
    version_from_resource,
)
from functions.config import Config
from functions.platform import (
    AlreadyExists,
    DeployOperation,
    EndpointState,
    PreprocessJob,
    TooLarge,
    JobRef,
    ModelVersion,
    NotFound,
    RegisteredVersion,
    TrainingJob,
    TransientError,
)

# Every API call gets a deadline: the GAPIC clients default to none, and a hung connection must
# not use up the function's 540 s.
CALL_TIMEOUT_S = 60.0
# Model upload is a long-running operation that usually ends in seconds; the function waits for
# it this long at most, well under its 540 s limit, then raises so that the retry finds the
# version by its run label.
UPLOAD_TIMEOUT_S = 240.0
# How long Cloud Storage calls retry transient faults before the function gives up and raises.
STORAGE_RETRY_DEADLINE_S = 30.0


# --- errors -------------------------------------------------------------------------------------


def platform_error(exc: BaseException, action: str) -> BaseException:
    """The platform's kind of a Google client error, or `exc` itself when it is none of them.

    Works on both shapes an error arrives in: an HTTP error of a REST call, and the google.rpc
    status a long-running operation ended with (api_core gives both an HTTP `code`).
    """
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    import requests

    if isinstance(exc, api.GoogleAPICallError):
        code = exc.code
        detail = f"{action}: HTTP {code}: {exc.message}"
        if isinstance(exc, (api.Aborted, api.ServerError)) or code == 429 or (code or 0) >= 500:
            return TransientError(detail)  # Aborted is a 409 too, but a concurrency retry
        if code == 409:
            return AlreadyExists(detail)
        if code == 404:
            return NotFound(detail)
        return RuntimeError(detail)
    if isinstance(exc, (api.RetryError, TimeoutError, ConnectionError, auth.TransportError,
                        requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return TransientError(f"{action}: {type(exc).__name__}: {exc}")
    return exc


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Re-raise Google client errors as the platform's kinds (see `platform_error`)."""
    try:
        yield
    except (TransientError, AlreadyExists, NotFound):
        raise
    except Exception as exc:
        mapped = platform_error(exc, action)
        if mapped is exc:
            raise
        raise mapped from exc


class _LazyClient:
    """Makes a client on first use, once, even when requests of one instance run concurrently."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._client = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
        return self._client


def _message_dict(message: Any) -> dict:
    """A proto-plus or protobuf message as its REST JSON (camelCase names, enum names)."""
    from google.protobuf import json_format

    pb = type(message).pb(message) if hasattr(type(message), "pb") else message
    return json_format.MessageToDict(pb)


def vertex_endpoint(region: str) -> str:
    """Vertex AI's regional endpoint: https://cloud.google.com/vertex-ai/docs/reference/rest#service-endpoint"""
    return f"{region}-aiplatform.googleapis.com"


# --- Cloud Storage ------------------------------------------------------------------------------


class GcsStorage:
    """The pipeline bucket through google-cloud-storage.

    `create` is a create-only upload: the precondition ifGenerationMatch=0 makes Cloud Storage
    refuse (412) when a live object of that name exists, so of many concurrent writers exactly
    one wins (https://cloud.google.com/storage/docs/request-preconditions).
    """

    def __init__(self, bucket: str, client: Any = None, *, project: str | None = None,
                 retry_deadline_s: float = STORAGE_RETRY_DEADLINE_S):
        self.bucket_name = bucket
        self.retry_deadline_s = retry_deadline_s

        def make_client():
            from google.cloud import storage

            return storage.Client(project=project)

        self._client = _LazyClient(lambda: client) if client is not None else _LazyClient(make_client)
        self._bucket = _LazyClient(lambda: self._client.get().bucket(bucket))

    def _blob(self, name: str):
        if not name or name.startswith("/"):
            raise ValueError(f"not an object name of this bucket: {name!r}")
        return self._bucket.get().blob(name)

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_deadline_s)

    def _uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        blob = self._blob(name)
        with translated_errors(f"read {self._uri(name)}"):
            if max_bytes is None:
                return blob.download_as_bytes(retry=self._retry(), timeout=CALL_TIMEOUT_S)
            # One byte past the limit tells "too large" apart from "exactly the limit".
            data = blob.download_as_bytes(start=0, end=max_bytes, retry=self._retry(), timeout=CALL_TIMEOUT_S)
        if len(data) > max_bytes:
            raise TooLarge(f"{self._uri(name)} is larger than {max_bytes} bytes")
        return data

    def write(self, name: str, data: bytes, content_type: str = "application/json") -> None:
        blob = self._blob(name)
        with translated_errors(f"write {self._uri(name)}"):
            # Writes here replace an object with the same bytes when repeated, so a retried
            # upload is safe (the library retries only conditional uploads by default).
            blob.upload_from_string(data, content_type=content_type, retry=self._retry(),
                                    timeout=CALL_TIMEOUT_S)

    def create(self, name: str, data: bytes, content_type: str = "application/json") -> bool:
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob(name)
        with translated_errors(f"create {self._uri(name)}"):
            try:
                blob.upload_from_string(data, content_type=content_type, if_generation_match=0,
                                        retry=self._retry(), timeout=CALL_TIMEOUT_S)
            except PreconditionFailed:
                return False  # 412: the object exists; nothing was written
        return True

    def exists(self, name: str) -> bool:
        blob = self._blob(name)
        with translated_errors(f"look up {self._uri(name)}"):
            return blob.exists(retry=self._retry(), timeout=CALL_TIMEOUT_S)

    def list(self, prefix: str) -> list[str]:
        with translated_errors(f"list {self._uri(prefix)}"):
            blobs = self._client.get().list_blobs(self.bucket_name, prefix=prefix or None,
                                                  retry=self._retry(), timeout=CALL_TIMEOUT_S)
            return sorted(blob.name for blob in blobs)

    def list_folders(self, prefix: str) -> list[str]:
        with translated_errors(f"list {self._uri(prefix)}"):
            # With a delimiter, the listing's prefixes are the "folders" directly under `prefix`.
            # https://cloud.google.com/storage/docs/json_api/v1/objects/list (delimiter, prefixes)
            pages = self._client.get().list_blobs(self.bucket_name, prefix=prefix or None, delimiter="/",
                                                  retry=self._retry(), timeout=CALL_TIMEOUT_S)
            folders: set[str] = set()
            for page in pages.pages:
                folders.update(page.prefixes)
            return sorted(folders)

    def delete(self, name: str) -> None:
        blob = self._blob(name)
        try:
            with translated_errors(f"delete {self._uri(name)}"):
                blob.delete(retry=self._retry(), timeout=CALL_TIMEOUT_S)
        except NotFound:
            pass


# --- Dataflow -----------------------------------------------------------------------------------


class DataflowJobs:
    """Launches the preprocessing Flex Template; the run id is the job name.

    Dataflow refuses a second active job of one name (409 ALREADY_EXISTS), which makes a
    duplicate launch `AlreadyExists`.
    """

    def __init__(self, config: Config, *, api_endpoint: str | None = None, credentials: Any = None):
        self.config = config

        def make_client():
            from google.cloud import dataflow_v1beta3

            options = {"api_endpoint": api_endpoint} if api_endpoint else None
            return dataflow_v1beta3.FlexTemplatesServiceClient(
                transport="rest", client_options=options, credentials=credentials)

        def make_jobs_client():
            from google.cloud import dataflow_v1beta3

            options = {"api_endpoint": api_endpoint} if api_endpoint else None
            return dataflow_v1beta3.JobsV1Beta3Client(transport="rest", client_options=options,
                                                      credentials=credentials)

        self._client = _LazyClient(make_client)
        self._jobs = _LazyClient(make_jobs_client)

    def launch_request(self, run_id: str, source: str, out_uri: str, limit: int | None,
                       labels: dict[str, str]) -> dict:
        """LaunchFlexTemplateRequest as REST JSON: the launch body, with the URL's project and location."""
        return {"projectId": self.config.project, "location": self.config.region,
                **request_bodies.flex_template_launch(self.config, run_id, source, out_uri, limit, labels)}

    def launch_preprocess(self, run_id: str, source: str, out_uri: str, limit: int | None,
                          labels: dict[str, str]) -> JobRef:
        from google.cloud import dataflow_v1beta3

        request = dataflow_v1beta3.LaunchFlexTemplateRequest.from_json(
            json.dumps(self.launch_request(run_id, source, out_uri, limit, labels)))
        with translated_errors(f"launch Dataflow job {run_id}"):
            response = self._client.get().launch_flex_template(request=request, timeout=CALL_TIMEOUT_S)
        job = response.job
        return JobRef(job_id=job.id, name=job.name or run_id, kind="preprocess")

    def get_preprocess_job(self, job_id: str) -> PreprocessJob:
        from google.cloud import dataflow_v1beta3

        # The default view (JOB_VIEW_SUMMARY) holds the state and labels, all the chain reads.
        request = dataflow_v1beta3.GetJobRequest(project_id=self.config.project, location=self.config.region,
                                                 job_id=job_id)
        with translated_errors(f"get Dataflow job {job_id}"):
            job = self._jobs.get().get_job(request=request, timeout=CALL_TIMEOUT_S)
        return preprocess_job_from_resource(_message_dict(job))


# --- Vertex AI training -------------------------------------------------------------------------


class VertexJobs:
    """Vertex AI CustomJobs running the trainer package, found again by their run label."""

    def __init__(self, config: Config, *, api_endpoint: str | None = None, credentials: Any = None):
        self.config = config
        self.parent = f"projects/{config.project}/locations/{config.region}"
        endpoint = api_endpoint or vertex_endpoint(config.region)

        def make_client():
            from google.cloud import aiplatform_v1

            return aiplatform_v1.JobServiceClient(
                transport="rest", client_options={"api_endpoint": endpoint}, credentials=credentials)

        self._client = _LazyClient(make_client)

    def launch_training(self, run_id: str, manifest_uri: str, base_output_uri: str,
                        trainer_args: list[str], labels: dict[str, str]) -> JobRef:
        from google.cloud import aiplatform_v1

        body = request_bodies.custom_job(self.config, run_id, manifest_uri, base_output_uri, trainer_args,
                                         labels)
        custom_job = aiplatform_v1.CustomJob.from_json(json.dumps(body))
        with translated_errors(f"create the training job of {run_id}"):
            job = self._client.get().create_custom_job(parent=self.parent, custom_job=custom_job,
                                                       timeout=CALL_TIMEOUT_S)
        return JobRef(job_id=job.name.rsplit("/", 1)[-1], name=job.name, kind="training")

    def find_training_jobs(self, run_id: str) -> list[JobRef]:
        from google.cloud import aiplatform_v1

        # List filter syntax: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs/list
        request = aiplatform_v1.ListCustomJobsRequest(parent=self.parent, filter=f'labels.run_id="{run_id}"')
        with translated_errors(f"list the training jobs of {run_id}"):
            jobs = list(self._client.get().list_custom_jobs(request=request, timeout=CALL_TIMEOUT_S))
        return [JobRef(job_id=j.name.rsplit("/", 1)[-1], name=j.name, kind="training")
                for j in jobs if j.labels.get("run_id") == run_id]

    def get_training_job(self, job_id: str) -> TrainingJob:
        with translated_errors(f"get training job {job_id}"):
            job = self._client.get().get_custom_job(name=f"{self.parent}/customJobs/{job_id}",
                                                    timeout=CALL_TIMEOUT_S)
        return training_job_from_resource(_message_dict(job))


class GcpJobs:
    """The Jobs interface: preprocessing on Dataflow, training on Vertex AI."""

    def __init__(self, preprocess: DataflowJobs, training: VertexJobs):
        self.preprocess = preprocess
        self.training = training

    def launch_preprocess(self, run_id, source, out_uri, limit, labels) -> JobRef:
        return self.preprocess.launch_preprocess(run_id, source, out_uri, limit, labels)

    def launch_training(self, run_id, manifest_uri, base_output_uri, trainer_args, labels) -> JobRef:
        return self.training.launch_training(run_id, manifest_uri, base_output_uri, trainer_args, labels)

    def find_training_jobs(self, run_id: str) -> list[JobRef]:
        return self.training.find_training_jobs(run_id)

    def get_preprocess_job(self, job_id: str) -> PreprocessJob:
        return self.preprocess.get_preprocess_job(job_id)

    def get_training_job(self, job_id: str) -> TrainingJob:
        return self.training.get_training_job(job_id)


# --- Vertex AI Model Registry and endpoint ------------------------------------------------------


class VertexModels:
    """Model versions in the Vertex AI Model Registry, deployed to one endpoint."""

    def __init__(self, config: Config, *, api_endpoint: str | None = None, credentials: Any = None,
                 upload_timeout_s: float = UPLOAD_TIMEOUT_S):
        self.config = config
        self.parent = f"projects/{config.project}/locations/{config.region}"
        self.upload_timeout_s = upload_timeout_s
        options = {"api_endpoint": api_endpoint or vertex_endpoint(config.region)}

        def make(client_name: str):
            def make_client():
                from google.cloud import aiplatform_v1

                return getattr(aiplatform_v1, client_name)(
                    transport="rest", client_options=options, credentials=credentials)
            return make_client

        self._models = _LazyClient(make("ModelServiceClient"))
        self._endpoints = _LazyClient(make("EndpointServiceClient"))

    def _model_exists(self, model_name: str) -> bool:
        try:
            with translated_errors(f"get model {model_name}"):
                self._models.get().get_model(name=f"{self.parent}/models/{model_name}", timeout=CALL_TIMEOUT_S)
        except NotFound:
            return False
        return True

    def upload_version(self, model_name: str, artifact_uri: str, labels: dict[str, str]) -> ModelVersion:
        from google.cloud import aiplatform_v1

        body = request_bodies.upload_model(self.config, model_name, artifact_uri, labels,
                                           parent_exists=self._model_exists(model_name))
        request = aiplatform_v1.UploadModelRequest.from_json(json.dumps({"parent": self.parent, **body}))
        action = f"upload a version of model {model_name}"
        with translated_errors(action):
            operation = self._models.get().upload_model(request=request, timeout=CALL_TIMEOUT_S)
        with translated_errors(action):
            try:
                response = operation.result(timeout=self.upload_timeout_s)
            except TimeoutError:
                raise TransientError(f"{action}: operation {operation.operation.name} has not ended after "
                                     f"{self.upload_timeout_s:g} s; a retry finds the version by its run label") from None
        return ModelVersion(model=response.model.split("@")[0], version_id=str(response.model_version_id))

    def find_version(self, model_name: str, run_id: str) -> ModelVersion | None:
        from google.cloud import aiplatform_v1

        # https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/listVersions
        request = aiplatform_v1.ListModelVersionsRequest(name=f"{self.parent}/models/{model_name}",
                                                         filter=f'labels.run_id="{run_id}"')
        try:
            with translated_errors(f"list the versions of model {model_name}"):
                versions = list(self._models.get().list_model_versions(request=request, timeout=CALL_TIMEOUT_S))
        except NotFound:
            return None
        for model in versions:
            if model.labels.get("run_id") == run_id:
                return ModelVersion(model=model.name.split("@")[0], version_id=str(model.version_id))
        return None

    def get_version(self, versioned_name: str) -> RegisteredVersion:
        with translated_errors(f"get model version {versioned_name}"):
            model = self._models.get().get_model(name=versioned_name, timeout=CALL_TIMEOUT_S)
        return version_from_resource(_message_dict(model))

    def start_deploy(self, version: ModelVersion, endpoint_id: str, traffic_split: dict[str, int],
                     display_name: str) -> DeployOperation:
        from google.cloud import aiplatform_v1

        endpoint = f"{self.parent}/endpoints/{endpoint_id}"
        body = request_bodies.deploy_model(self.config, version, display_name, traffic_split)
        request = aiplatform_v1.DeployModelRequest.from_json(json.dumps({"endpoint": endpoint, **body}))
        with translated_errors(f"deploy {version.versioned_name} to endpoint {endpoint_id}"):
            operation = self._endpoints.get().deploy_model(request=request, timeout=CALL_TIMEOUT_S)
        # The deployment may take longer than a function may run: return with the operation's
        # name at once; its audit log line starts the next stage.
        return DeployOperation(name=operation.operation.name, done=operation.operation.done)

    def get_endpoint(self, endpoint_id: str) -> EndpointState:
        with translated_errors(f"get endpoint {endpoint_id}"):
            endpoint = self._endpoints.get().get_endpoint(name=f"{self.parent}/endpoints/{endpoint_id}",
                                                          timeout=CALL_TIMEOUT_S)
        return endpoint_from_resource(_message_dict(endpoint))

    def undeploy(self, endpoint_id: str, deployed_model_id: str, traffic_split: dict[str, int]) -> None:
        from google.cloud import aiplatform_v1

        endpoint = f"{self.parent}/endpoints/{endpoint_id}"
        body = request_bodies.undeploy_model(deployed_model_id, traffic_split)
        request = aiplatform_v1.UndeployModelRequest.from_json(json.dumps({"endpoint": endpoint, **body}))
        with translated_errors(f"undeploy {deployed_model_id} from endpoint {endpoint_id}"):
            # Not waited for: the traffic moves with the request; the node is released after.
            self._endpoints.get().undeploy_model(request=request, timeout=CALL_TIMEOUT_S)

    def move_aliases(self, version: ModelVersion, aliases: list[str]) -> None:
        from google.cloud import aiplatform_v1

        body = request_bodies.merge_version_aliases(aliases)
        request = aiplatform_v1.MergeVersionAliasesRequest.from_json(
            json.dumps({"name": version.versioned_name, **body}))
        with translated_errors(f"move aliases {aliases} to {version.versioned_name}"):
            self._models.get().merge_version_aliases(request=request, timeout=CALL_TIMEOUT_S)

    def get_operation(self, name: str) -> DeployOperation:
        from google.cloud import aiplatform_v1

        with translated_errors(f"get operation {name}"):
            op = self._endpoints.get().get_operation(request={"name": name}, timeout=CALL_TIMEOUT_S)
        resource: dict = {"name": op.name, "done": op.done}
        if op.HasField("error"):
            resource["error"] = {"code": op.error.code, "message": op.error.message or f"code {op.error.code}"}
        if op.HasField("response"):
            response = aiplatform_v1.DeployModelResponse.pb()()
            if op.response.Unpack(response):
                resource["response"] = _message_dict(response)
        return operation_from_resource(resource)
