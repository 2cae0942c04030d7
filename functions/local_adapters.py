"""The local side of the platform interfaces: a bucket directory and the local cloud's REST API.

The local cloud (`mlrelay up`) serves a subset of the Dataflow and Vertex AI REST APIs on
127.0.0.1, with the cloud's request and response shapes; these adapters are thin HTTP clients of
it (urllib, so that the functions' cold start stays small). The bucket is a directory whose files
are objects: writes are staged and renamed into place, as an upload becomes visible only whole, and
create-only writes are staged and hard-linked into place (link fails when the name exists), the
local twin of `if_generation_match=0`.
"""
from __future__ import annotations

import json
import os
import uuid
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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

# A write is staged beside its object, under a hidden name with this suffix, and renamed into
# place: a rename within one directory reaches the local cloud's watcher as one paired event at
# once (a rename from another directory is held back while the watcher waits for its pair). Files
# with this suffix are not objects.
STAGING_SUFFIX = ".mlrelay-part"


def is_staging_name(name: str) -> bool:
    return name.endswith(STAGING_SUFFIX)


class LocalStorage:
    def __init__(self, bucket_dir: str | Path):
        self.root = Path(bucket_dir)

    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or ".." in Path(name).parts or is_staging_name(name):
            raise ValueError(f"not an object name of this bucket: {name!r}")
        return self.root / name

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as handle:
                if max_bytes is None:
                    return handle.read()
                data = handle.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"gs://{self.root.name}/{name} does not exist") from None
        if len(data) > max_bytes:
            raise TooLarge(f"gs://{self.root.name}/{name} is larger than {max_bytes} bytes")
        return data

    def write(self, name: str, data: bytes, content_type: str = "application/json") -> None:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._stage(final, data), final)

    def create(self, name: str, data: bytes, content_type: str = "application/json") -> bool:
        """Create-only and atomic, as `if_generation_match=0` is: the content is staged, then
        hard-linked to its name, which fails if the name exists; no reader sees a partial object."""
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._stage(final, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    @staticmethod
    def _stage(final: Path, data: bytes) -> Path:
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}{STAGING_SUFFIX}")
        with open(tmp, "wb") as handle:
            handle.write(data)
        return tmp

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        top = base if base.is_dir() else base.parent
        if not top.exists():
            return []
        names = []
        for path in top.rglob("*"):
            if not path.is_file():
                continue
            name = path.relative_to(self.root).as_posix()
            if name.startswith(prefix) and not is_staging_name(name):
                names.append(name)
        return sorted(names)

    def list_folders(self, prefix: str) -> list[str]:
        """The "folders" directly under `prefix` (ending in "/"), as a delimiter listing gives them."""
        base = self.root / prefix
        if not prefix.endswith("/") or not base.is_dir():
            return []
        return sorted(f"{prefix}{path.name}/" for path in base.iterdir() if path.is_dir())

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass


class LocalApi:
    """JSON over HTTP to the local cloud, with Google API errors mapped to the platform's kinds."""

    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 409:
                raise AlreadyExists(message) from None
            if exc.code == 404:
                raise NotFound(message) from None
            if exc.code == 429 or exc.code >= 500:
                raise TransientError(f"{method} {path}: HTTP {exc.code}: {message}") from None
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise TransientError(f"{method} {path}: {exc}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except Exception:
        return exc.reason or str(exc)


class LocalJobs:
    """Dataflow Flex Template launches and Vertex AI CustomJobs against the local cloud."""

    def __init__(self, api: LocalApi, config: Config):
        self.api = api
        self.config = config
        self.parent = request_bodies.location_parent(config)

    def launch_preprocess(self, run_id, source, out_uri, limit, labels) -> JobRef:
        body = request_bodies.flex_template_launch(self.config, run_id, source, out_uri, limit, labels)
        job = self.api.call("POST", f"/v1b3/{self.parent}/flexTemplates:launch", body)["job"]
        return JobRef(job_id=job["id"], name=job["name"], kind="preprocess")

    def launch_training(self, run_id, manifest_uri, base_output_uri, trainer_args, labels) -> JobRef:
        body = request_bodies.custom_job(self.config, run_id, manifest_uri, base_output_uri, trainer_args, labels)
        job = self.api.call("POST", f"/v1/{self.parent}/customJobs", body)
        return JobRef(job_id=job["name"].rsplit("/", 1)[-1], name=job["name"], kind="training")

    def get_preprocess_job(self, job_id: str) -> PreprocessJob:
        return preprocess_job_from_resource(self.api.call("GET", f"/v1b3/{self.parent}/jobs/{job_id}"))

    def find_training_jobs(self, run_id: str) -> list[JobRef]:
        found = self.api.call("GET", f"/v1/{self.parent}/customJobs", query={"filter": f'labels.run_id="{run_id}"'})
        return [JobRef(job_id=j["name"].rsplit("/", 1)[-1], name=j["name"], kind="training")
                for j in found.get("customJobs", [])]

    def get_training_job(self, job_id: str) -> TrainingJob:
        job = self.api.call("GET", f"/v1/{self.parent}/customJobs/{job_id}")
        return training_job_from_resource(job)


class LocalModels:
    """Vertex AI Model Registry and Endpoint REST calls against the local cloud."""

    def __init__(self, api: LocalApi, config: Config):
        self.api = api
        self.config = config
        self.parent = request_bodies.location_parent(config)

    def upload_version(self, model_name, artifact_uri, labels) -> ModelVersion:
        body = request_bodies.upload_model(self.config, model_name, artifact_uri, labels,
                                           parent_exists=self._model_exists(model_name))
        op = self.api.call("POST", f"/v1/{self.parent}/models:upload", body)
        response = op.get("response", {})
        return ModelVersion(model=response["model"], version_id=str(response["modelVersionId"]))

    def _model_exists(self, model_name: str) -> bool:
        try:
            self.api.call("GET", f"/v1/{self.parent}/models/{model_name}")
            return True
        except NotFound:
            return False

    def find_version(self, model_name: str, run_id: str) -> ModelVersion | None:
        try:
            found = self.api.call("GET", f"/v1/{self.parent}/models/{model_name}:listVersions")
        except NotFound:
            return None
        for model in found.get("models", []):
            if model.get("labels", {}).get("run_id") == run_id:
                return ModelVersion(model=model["name"].split("@")[0], version_id=str(model["versionId"]))
        return None

    def get_version(self, versioned_name: str) -> RegisteredVersion:
        return version_from_resource(self.api.call("GET", f"/v1/{versioned_name}"))

    def start_deploy(self, version, endpoint_id, traffic_split, display_name) -> DeployOperation:
        body = request_bodies.deploy_model(self.config, version, display_name, traffic_split)
        op = self.api.call("POST", f"/v1/{self.parent}/endpoints/{endpoint_id}:deployModel", body)
        return operation_from_resource(op)

    def get_operation(self, name: str) -> DeployOperation:
        return operation_from_resource(self.api.call("GET", f"/v1/{name}"))

    def get_endpoint(self, endpoint_id: str) -> EndpointState:
        return endpoint_from_resource(self.api.call("GET", f"/v1/{self.parent}/endpoints/{endpoint_id}"))

    def undeploy(self, endpoint_id: str, deployed_model_id: str, traffic_split: dict[str, int]) -> None:
        self.api.call("POST", f"/v1/{self.parent}/endpoints/{endpoint_id}:undeployModel",
                      request_bodies.undeploy_model(deployed_model_id, traffic_split))

    def move_aliases(self, version: ModelVersion, aliases: list[str]) -> None:
        self.api.call("POST", f"/v1/{version.versioned_name}:mergeVersionAliases",
                      request_bodies.merge_version_aliases(aliases))
