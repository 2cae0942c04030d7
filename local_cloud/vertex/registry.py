"""ModelService: the local Vertex AI registry and endpoints, their state and their methods.

Methods take and return the REST resources' JSON, so the HTTP front (``local_cloud.vertex.http``)
only routes paths to them. A deploy is asynchronous: ``deploy_model`` answers with an unfinished
Operation; a background thread starts the Model's serving container as its own process
(``local_cloud.vertex.serving_processes``) and health-checks it, then applies the traffic split,
ends the Operation and reports it to ``on_operation_done``. A container that never becomes ready
ends the Operation with an ``error``; the endpoint keeps serving what it served. Undeploying stops
the container; a restart starts one for every model the state has deployed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from local_cloud.loopback_server import free_port
from local_cloud.vertex.operations import Operations
from local_cloud.vertex.resources import endpoint_name, endpoint_resource, model_name, model_resource
from local_cloud.vertex.rest_rules import (
    TYPE_URL_PREFIX,
    ApiError,
    assign_version_aliases,
    format_timestamp,
    invalid,
    labels_match,
    merge_version_aliases,
    parse_deploy_request,
    parse_label_filter,
    parse_model_reference,
    resolve_traffic_split,
    resolve_version,
    split_after_undeploy,
    validate_endpoint_id,
    validate_model_id,
    validate_model_spec,
)
from local_cloud.vertex.routing import Route, RoutingTable, choose_route, routing_table
from local_cloud.vertex.serving_processes import (
    ServingProcess,
    ServingStartFailed,
    container_environment,
    container_program,
)
from local_cloud.vertex.state import STATE_FILE_NAME, next_id, read_state, write_state
from model_server.model_loading import local_artifact_path

log = logging.getLogger(__name__)


class ModelService:
    """Vertex AI Model Registry and Endpoints for one project and location, kept under ``state_dir``.

    Methods take and return the REST resources' JSON; ``local_cloud.vertex.http`` serves them
    at ``/v1/projects/{project}/locations/{location}/...``.

    ``on_operation_done(operation)`` is called once per deployModel operation when it ends
    (with a ``response`` or an ``error``), from the thread that ran the deploy: that is when
    the cloud writes the audit-log entry ending the deploy. Uploads, undeploys and endpoint
    creation end at once, inside their request, and are not reported.
    ``resolve_artifact_path`` maps an artifactUri (such as gs://bucket/runs/r/train/model) to
    the local directory holding it; ``rng`` draws the traffic split (seed it for tests);
    ``cloud_state`` marks the serving containers as the local cloud's (`local_cloud.child_processes`).
    """

    def __init__(
        self,
        state_dir: Path,
        project: str = "local-project",
        location: str = "us-central1",
        *,
        on_operation_done: Callable[[dict], None] | None = None,
        rng: random.Random | None = None,
        resolve_artifact_path: Callable[[str], str] = local_artifact_path,
        cloud_state: Path | None = None,
    ):
        self.project = project
        self.location = location
        self.parent = f"projects/{project}/locations/{location}"
        self._state_path = Path(state_dir) / STATE_FILE_NAME
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._on_operation_done = on_operation_done
        self._rng = rng or random.Random()
        self._resolve_artifact_path = resolve_artifact_path
        self._cloud_state = cloud_state
        self._lock = threading.RLock()
        self._deployer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-deploy")
        self._serving_dir = Path(state_dir) / "serving"
        self._servers: dict[str, ServingProcess] = {}
        self._starting: set[ServingProcess] = set()  # deploys' servers not yet ready, stopped by close()
        self._routing: dict[str, RoutingTable] = {}
        self._closed = False
        self._state = read_state(self._state_path)
        self._operations = Operations(self._state, self._lock)
        with self._lock:
            for endpoint_id, endpoint in self._state["endpoints"].items():
                for deployed in endpoint["deployedModels"]:
                    self._servers[deployed["id"]] = self._start_server(
                        endpoint_id, deployed, self._container_spec(deployed))
                self._refresh_routing(endpoint_id)
        for operation_id in sorted(self._state["pendingDeploys"], key=int):
            self._deployer.submit(self._run_deploy, operation_id)

    # -- state ------------------------------------------------------------------------------

    def _save(self) -> None:
        write_state(self._state_path, self._state)

    def _container_spec(self, deployed: Mapping[str, Any]) -> dict:
        """The deployed version's containerSpec (read under the lock)."""
        version = resolve_version(self._state["models"][deployed["modelId"]]["versions"], deployed["modelVersionId"])
        return json.loads(json.dumps(version.get("containerSpec") or {}))

    def _start_server(self, endpoint_id: str, deployed: Mapping[str, Any], container: Mapping) -> ServingProcess:
        """Start a deployed model's serving container (it becomes ready in the background)."""
        machine = deployed.get("resources", {}).get("dedicatedResources", {}).get("machineSpec", {})
        env = container_environment(
            container, port=free_port(), storage_uri=self._resolve_artifact_path(deployed["artifactUri"]),
            endpoint_id=endpoint_id, deployed_model_id=deployed["id"], project=self.project,
            machine_type=machine.get("machineType", ""))
        return ServingProcess(deployed["id"], container_program(container), env,
                              self._serving_dir / f"{deployed['id']}.log", cloud_state=self._cloud_state)

    # -- names ------------------------------------------------------------------------------

    def model_name(self, model_id: str) -> str:
        return model_name(self.parent, model_id)

    def endpoint_name(self, endpoint_id: str) -> str:
        return endpoint_name(self.parent, endpoint_id)

    def _endpoint(self, endpoint_id: str) -> dict:
        endpoint = self._state["endpoints"].get(endpoint_id)
        if endpoint is None:
            raise ApiError("NOT_FOUND", f"endpoint {self.endpoint_name(endpoint_id)} does not exist")
        return endpoint

    def _model_entry(self, model_id: str) -> dict:
        entry = self._state["models"].get(model_id)
        if entry is None:
            raise ApiError("NOT_FOUND", f"model {self.model_name(model_id)} does not exist")
        return entry

    # -- operations -------------------------------------------------------------------------

    def _report(self, operation: dict) -> None:
        """Hand a finished deploy operation to ``on_operation_done`` (the cloud's audit log moment)."""
        if self._on_operation_done is None:
            return
        try:
            self._on_operation_done(operation)
        except Exception:  # a failing listener must not undo or block the operation
            log.exception("on_operation_done failed for %s", operation["name"])

    def get_operation(self, name: str) -> dict:
        """GET .../operations/{id}: an Operation, by full name or id."""
        return self._operations.get(name)

    def wait_operation(self, name: str, timeout: float = 60.0) -> dict:
        """POST .../operations/{id}:wait: the Operation once done, or as it is when time runs out.

        A service that is closing answers at once with the Operation as it is.
        """
        return self._operations.wait(name, timeout)

    # -- registry ---------------------------------------------------------------------------

    def upload_model(self, request: Mapping[str, Any]) -> dict:
        """POST models:upload (UploadModelRequest) -> Operation with an UploadModelResponse.

        ``parentModel`` adds a version to an existing model; otherwise a new model is created
        under ``modelId`` (or a generated id). Registration is immediate, so the Operation
        comes back done.
        """
        if not isinstance(request, Mapping):
            raise invalid("the request body must be a JSON object (UploadModelRequest)")
        spec = validate_model_spec(request.get("model"))
        parent_model = request.get("parentModel")
        model_id = request.get("modelId")
        if model_id is not None:
            validate_model_id(model_id)
        now = format_timestamp(time.time())
        with self._lock:
            if parent_model:
                parent_id, version = parse_model_reference(parent_model, self.project, self.location)
                if version is not None:
                    raise invalid(f"parentModel {parent_model!r} must name a model, not a version")
                if model_id and model_id != parent_id:
                    raise invalid(f"modelId {model_id!r} differs from the parentModel's id {parent_id!r}")
                model_id = parent_id
                entry = self._model_entry(model_id)
            else:
                if model_id is None:
                    model_id = next_id(self._state, "model")
                if model_id in self._state["models"]:
                    raise ApiError(
                        "ALREADY_EXISTS",
                        f"model {self.model_name(model_id)} already exists; upload with parentModel to add a version",
                    )
                entry = {"createTime": now, "versions": []}
                self._state["models"][model_id] = entry
            version_id = str(len(entry["versions"]) + 1)
            aliases, remaining = assign_version_aliases(entry["versions"], spec.pop("versionAliases"))
            for older in entry["versions"]:
                if older["versionAliases"] != remaining[older["versionId"]]:
                    older["versionAliases"] = remaining[older["versionId"]]
                    older["versionUpdateTime"] = now
            entry["versions"].append(
                {
                    **spec,
                    "versionId": version_id,
                    "versionAliases": aliases,
                    "versionCreateTime": now,
                    "versionUpdateTime": now,
                }
            )
            entry["updateTime"] = now
            operation = self._operations.start(self.model_name(model_id), "UploadModelOperationMetadata")
            done = self._operations.finish(
                operation,
                response={
                    "@type": TYPE_URL_PREFIX + "UploadModelResponse",
                    "model": self.model_name(model_id),
                    "modelVersionId": version_id,
                },
            )
            self._save()
        return done

    def merge_version_aliases(self, model: str, request: Any) -> dict:
        """POST models/{model}@{version}:mergeVersionAliases -> the Model version, its aliases merged."""
        model_id, _, ref = model.rpartition("/")[2].partition("@")
        if not ref:
            raise invalid(f"name {model!r} must name a version explicitly (models/MODEL@VERSION)")
        if not isinstance(request, Mapping):
            raise invalid("the request body must be a JSON object (MergeVersionAliasesRequest)")
        with self._lock:
            entry = self._model_entry(model_id)
            version = resolve_version(entry["versions"], ref)
            if version is None:
                raise ApiError("NOT_FOUND", f"model {self.model_name(model_id)} has no version {ref!r}")
            merged = merge_version_aliases(entry["versions"], version["versionId"], request.get("versionAliases"))
            now = format_timestamp(time.time())
            for older in entry["versions"]:
                if older["versionAliases"] != merged[older["versionId"]]:
                    older["versionAliases"] = merged[older["versionId"]]
                    older["versionUpdateTime"] = now
            entry["updateTime"] = now
            self._save()
            return model_resource(self.parent, self._state, model_id, version)

    def get_model(self, model: str) -> dict:
        """GET models/{model}[@version]: one version of a model, the default one when none is named."""
        model_id, _, ref = model.rpartition("/")[2].partition("@")
        with self._lock:
            entry = self._model_entry(model_id)
            version = resolve_version(entry["versions"], ref or None)
            if version is None:
                raise ApiError("NOT_FOUND", f"model {self.model_name(model_id)} has no version {ref!r}")
            return model_resource(self.parent, self._state, model_id, version)

    def list_model_versions(self, model: str, filter: str = "") -> dict:
        """GET models/{model}:listVersions: every version, oldest first (all on one page)."""
        conditions = parse_label_filter(filter)
        model_id = model.rpartition("/")[2].partition("@")[0]
        with self._lock:
            entry = self._model_entry(model_id)
            versions = [model_resource(self.parent, self._state, model_id, version) for version in entry["versions"]]
        return {"models": [v for v in versions if labels_match(v.get("labels", {}), conditions)]}

    # -- endpoints --------------------------------------------------------------------------

    def create_endpoint(self, endpoint_id: str, display_name: str) -> dict:
        """Create an endpoint unless it exists (as deploy.sh does once); returns the Endpoint."""
        validate_endpoint_id(endpoint_id)
        if not isinstance(display_name, str) or not display_name.strip() or len(display_name) > 128:
            raise invalid("the endpoint's displayName is required (1 to 128 characters)")
        with self._lock:
            if endpoint_id not in self._state["endpoints"]:
                now = format_timestamp(time.time())
                self._state["endpoints"][endpoint_id] = {
                    "displayName": display_name,
                    "deployedModels": [],
                    "trafficSplit": {},
                    "createTime": now,
                    "updateTime": now,
                }
                self._refresh_routing(endpoint_id)
                self._save()
            return self._endpoint_json(endpoint_id)

    def _endpoint_json(self, endpoint_id: str) -> dict:
        return endpoint_resource(self.parent, endpoint_id, self._endpoint(endpoint_id))

    def get_endpoint(self, endpoint_id: str) -> dict:
        """GET endpoints/{endpoint}: the Endpoint with its deployed models and traffic split."""
        with self._lock:
            return self._endpoint_json(endpoint_id.rpartition("/")[2])

    def _refresh_routing(self, endpoint_id: str) -> None:
        """Publish what predictions on an endpoint see (called under the lock after a change)."""
        self._routing[endpoint_id] = routing_table(
            self._state["endpoints"][endpoint_id], self._state["models"], self._servers, self.model_name
        )

    # -- deploy / undeploy ------------------------------------------------------------------

    def deploy_model(self, endpoint_id: str, request: Mapping[str, Any]) -> dict:
        """POST endpoints/{endpoint}:deployModel -> an unfinished Operation.

        The request is checked now; loading the model and switching traffic happen in the
        background, and the Operation ends with a DeployModelResponse or an error.
        """
        wanted = parse_deploy_request(request, self.project, self.location)
        model_id, ref, requested_split = wanted.model_id, wanted.version_ref, wanted.traffic_split
        with self._lock:
            endpoint = self._endpoint(endpoint_id)
            version = resolve_version(self._model_entry(model_id)["versions"], ref)
            if version is None:
                raise ApiError("NOT_FOUND", f"model {self.model_name(model_id)} has no version {ref!r}")
            deployed_model_id = next_id(self._state, "deployedModel")
            if requested_split:
                resolve_traffic_split(
                    requested_split,
                    deployed_ids=[d["id"] for d in endpoint["deployedModels"]],
                    new_id=deployed_model_id,
                )
            display_name = wanted.display_name or version["displayName"]
            operation = self._operations.start(
                self.endpoint_name(endpoint_id),
                "DeployModelOperationMetadata",
                {"deploymentStage": "STARTING_DEPLOYMENT"},
            )
            operation_id = operation["name"].rsplit("/", 1)[1]
            self._state["pendingDeploys"][operation_id] = {
                "endpointId": endpoint_id,
                "trafficSplit": dict(requested_split),
                "deployedModel": {
                    "id": deployed_model_id,
                    "modelId": model_id,
                    "modelVersionId": version["versionId"],
                    "artifactUri": version["artifactUri"],
                    "displayName": display_name,
                    "resources": wanted.resources,
                },
            }
            self._save()
            answer = json.loads(json.dumps(operation))
        self._deployer.submit(self._run_deploy, operation_id)
        return answer

    def _run_deploy(self, operation_id: str) -> None:
        with self._lock:
            pending = self._state["pendingDeploys"].get(operation_id)
            if pending is None:
                return
            operation = self._state["operations"][operation_id]
            operation["metadata"]["deploymentStage"] = "STARTING_MODEL_SERVER"
            operation["metadata"]["genericMetadata"]["updateTime"] = format_timestamp(time.time())
            if self._closed:
                return  # the deploy resumes at the next start
            deployed = json.loads(json.dumps(pending["deployedModel"]))
            container = self._container_spec(deployed)
        server = self._start_server(pending["endpointId"], deployed, container)
        with self._lock:
            closed = self._closed
            if not closed:
                self._starting.add(server)
        if closed:
            server.stop()
            return
        try:
            server.wait_ready()
        except ServingStartFailed as exc:  # the deployment fails; the service and the endpoint carry on
            server.stop()
            if self._closed:
                return
            log.warning("deploying %s failed: %s", operation["name"], exc)
            self._end_deploy(operation_id, error=invalid(f"Model server never became ready: {exc}"))
            return
        self._end_deploy(operation_id, server=server)

    def _end_deploy(
        self, operation_id: str, *, server: ServingProcess | None = None, error: ApiError | None = None
    ) -> None:
        """Route traffic to a ready server, or record the failure; end the Operation."""
        with self._lock:
            self._starting.discard(server)
            if self._closed:
                if server is not None:
                    server.stop()
                return  # the deploy resumes at the next start
            pending = self._state["pendingDeploys"][operation_id]
            operation = self._state["operations"][operation_id]
            deployed = dict(pending["deployedModel"])
            endpoint_id = pending["endpointId"]
            endpoint = self._state["endpoints"][endpoint_id]
            response = None
            split = None
            if error is None:
                try:
                    if pending["trafficSplit"]:
                        split = resolve_traffic_split(
                            pending["trafficSplit"],
                            deployed_ids=[d["id"] for d in endpoint["deployedModels"]],
                            new_id=deployed["id"],
                        )
                except ApiError as exc:
                    error = ApiError(
                        "FAILED_PRECONDITION", f"the endpoint changed during the deployment: {exc.message}"
                    )
            if error is None:
                now = format_timestamp(time.time())
                deployed["createTime"] = now
                endpoint["deployedModels"].append(deployed)
                if split is not None:
                    endpoint["trafficSplit"] = split
                endpoint["updateTime"] = now
                self._servers[deployed["id"]] = server
                self._refresh_routing(endpoint_id)
                deployed_json = next(
                    d for d in self._endpoint_json(endpoint_id)["deployedModels"] if d["id"] == deployed["id"]
                )
                response = {"@type": TYPE_URL_PREFIX + "DeployModelResponse", "deployedModel": deployed_json}
            operation["metadata"]["deploymentStage"] = "SUCCESSFULLY_DEPLOYED" if error is None else "FAILED_TO_DEPLOY"
            del self._state["pendingDeploys"][operation_id]
            done = self._operations.finish(operation, response=response, error=error)
            self._save()
        if response is None and server is not None:
            server.stop()
        self._report(done)

    def undeploy_model(self, endpoint_id: str, request: Mapping[str, Any]) -> dict:
        """POST endpoints/{endpoint}:undeployModel -> Operation (done at once: unloading is instant)."""
        if not isinstance(request, Mapping):
            raise invalid("the request body must be a JSON object (UndeployModelRequest)")
        deployed_model_id = request.get("deployedModelId")
        if not isinstance(deployed_model_id, str) or not deployed_model_id:
            raise invalid("deployedModelId is required")
        with self._lock:
            endpoint = self._endpoint(endpoint_id)
            ids = [d["id"] for d in endpoint["deployedModels"]]
            if deployed_model_id not in ids:
                raise ApiError(
                    "NOT_FOUND", f"endpoint {self.endpoint_name(endpoint_id)} has no deployed model {deployed_model_id}"
                )
            remaining = [i for i in ids if i != deployed_model_id]
            split = split_after_undeploy(
                endpoint["trafficSplit"], deployed_model_id, request.get("trafficSplit") or {}, remaining
            )
            endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_model_id]
            endpoint["trafficSplit"] = split
            endpoint["updateTime"] = format_timestamp(time.time())
            server = self._servers.pop(deployed_model_id, None)
            self._refresh_routing(endpoint_id)
            operation = self._operations.start(self.endpoint_name(endpoint_id), "UndeployModelOperationMetadata")
            done = self._operations.finish(operation, response={"@type": TYPE_URL_PREFIX + "UndeployModelResponse"})
            self._save()
        if server is not None:  # no traffic reaches it any more: stop it, requests in flight finish
            server.stop()
        return done

    # -- predict ----------------------------------------------------------------------------

    def predict_route(self, endpoint_id: str) -> Route:
        """The deployed model a predict request goes to, drawn by the endpoint's traffic split."""
        table = self._routing.get(endpoint_id)
        if table is None:
            raise ApiError("NOT_FOUND", f"endpoint {self.endpoint_name(endpoint_id)} does not exist")
        return choose_route(table, endpoint_name=self.endpoint_name(endpoint_id), draw=self._rng.random)

    def crash_serving(self, deployed_model_id: str) -> None:
        """Kill a deployed model's container (SIGKILL), as a node failure would: local only, for
        drills and tests of what a failing canary does. Its traffic share then answers UNAVAILABLE."""
        with self._lock:
            server = self._servers.get(deployed_model_id)
        if server is None:
            raise ApiError("NOT_FOUND", f"no deployed model {deployed_model_id} is serving")
        server.kill()

    def serving_url(self, endpoint_id: str, deployed_model_id: str) -> str:
        """The predict URL of a deployed model's container: local only (Vertex exposes no such
        address), for measuring what the endpoint's hop costs and for tests."""
        route = self._routing[endpoint_id].routes.get(deployed_model_id)
        if route is None:
            raise ApiError("NOT_FOUND", f"endpoint {endpoint_id} has no deployed model {deployed_model_id}")
        return route.server.predict_url

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: waits end at once, every serving container stops, unfinished deploys resume at the next start.

        A server of the HTTP front is closed by whoever started it, after the service.
        """
        with self._lock:
            self._closed = True
            servers = [*self._servers.values(), *self._starting]
            self._servers.clear()
        self._operations.close()
        for server in servers:
            server.stop()
        self._deployer.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ModelService":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
