"""A fake of the Dataflow and Vertex AI REST endpoints the cloud adapters call, on 127.0.0.1.

It keeps just enough state to carry a run through (Flex Template jobs, CustomJobs, model versions,
an endpoint and its long-running operations), records every request it receives (method, path,
query, JSON body) so that tests can hold them against the documented shapes, answers with the
documented response shapes, and fails on demand with Google's JSON error body
(https://cloud.google.com/apis/design/errors#http_mapping). Each route names its method in
Google's discovery documents: a request body the method's schema refuses is answered 400
INVALID_ARGUMENT, as the service answers it, and every answer is held against the method's
response schema, so that a drift of the fake from the real format is listed in `drift` (the
`apis` fixture fails the test that met one).
Request and resource formats:
- Dataflow: https://cloud.google.com/dataflow/docs/reference/rest/v1b3/projects.locations.flexTemplates/launch
- Vertex AI: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs,
  .../projects.locations.models (upload, get of MODEL, MODEL@VERSION or MODEL@ALIAS, listVersions,
  mergeVersionAliases), .../projects.locations.endpoints (get, deployModel, undeployModel) and
  .../projects.locations.operations/get.
Registry and endpoint rules kept as Vertex AI documents them: a model's first version gets the
"default" alias (https://cloud.google.com/vertex-ai/docs/model-registry/model-alias), an alias
names one version of a model and "default" can be moved but not removed; a deployed model is
listed by its model's name and its modelVersionId; undeployModel refuses a model that still has
traffic unless the request's trafficSplit takes it away, and undeploying the last model empties
the split (UndeployModelRequest.trafficSplit).
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from local_cloud import discovery

STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
LOCATION = r"projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
UPLOAD_RESPONSE = "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse"
DEPLOY_RESPONSE = "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelResponse"
UNDEPLOY_RESPONSE = "type.googleapis.com/google.cloud.aiplatform.v1.UndeployModelResponse"
DEFAULT_ALIAS = "default"
# MergeVersionAliasesRequest.versionAliases: "at most 128 characters, and match a-z{0,126}[a-z-0-9]"
ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")


class ApiError(Exception):
    def __init__(self, status: int, message: str, status_name: str = ""):
        super().__init__(message)
        self.status, self.message = status, message
        self.status_name = status_name or STATUS_NAMES.get(status, "UNKNOWN")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: dict | None
    method_id: str = ""  # the discovery document's id of the method the path routes to
    status: int = 0
    answer: dict | None = None


@dataclass
class Failure:
    method: str
    path_pattern: str
    status: int
    message: str
    times: int = 1


@dataclass
class FakeGoogleApis:
    """The state behind the fake endpoints; `url` is what the clients take as api_endpoint."""

    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    dataflow_jobs: dict[str, dict] = field(default_factory=dict)  # by job name (the active ones)
    custom_jobs: dict[str, dict] = field(default_factory=dict)  # by job id
    models: dict[str, list[dict]] = field(default_factory=dict)  # model name -> versions
    endpoints: dict[str, dict] = field(default_factory=dict)  # endpoint name -> resource
    operations: dict[str, dict] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)  # answers that the response schemas refuse
    hold_uploads: bool = False  # upload operations stay running until complete_uploads()
    lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    # --- control ---------------------------------------------------------------------------------

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._serve(self, "GET")

            def do_POST(self):
                fake._serve(self, "POST")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, method: str, path_pattern: str, status: int, message: str = "", times: int = 1) -> None:
        """Answer the next `times` requests whose path matches `path_pattern` with this error."""
        self.failures.append(Failure(method, path_pattern, status, message or STATUS_NAMES.get(status, "error"), times))

    def received(self, method: str, path_pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(path_pattern, r.path)]

    def add_endpoint(self, name: str, traffic_split: dict[str, int] | None = None,
                     deployed_models: list[dict] | None = None) -> None:
        self.endpoints[name] = {"name": name, "displayName": name.rsplit("/", 1)[-1],
                                "deployedModels": deployed_models or [], "trafficSplit": traffic_split or {}}

    def add_version(self, model: str, artifact_uri: str = "", labels: dict[str, str] | None = None,
                    aliases: list[str] | None = None) -> dict:
        """Register a version of `model` (a full model name) as an upload would; returns its resource."""
        with self.lock:
            return self._add_version(model, {"displayName": model.rsplit("/", 1)[-1], "artifactUri": artifact_uri,
                                             "labels": dict(labels or {}), "versionAliases": list(aliases or [])})

    def version(self, model: str, ref: str) -> dict | None:
        """The version of `model` a version id or an alias names, or None."""
        return next((v for v in self.models.get(model, [])
                     if v["versionId"] == ref or ref in v.get("versionAliases", ())), None)

    def aliases(self, model: str) -> dict[str, list[str]]:
        """{version id: its aliases} of a model."""
        return {v["versionId"]: list(v.get("versionAliases", ())) for v in self.models.get(model, [])}

    def set_job_state(self, job_id: str, state: str, error: str = "") -> None:
        job = self.custom_jobs[job_id]
        job["state"] = state
        if error:
            job["error"] = {"code": 13, "message": error}

    def complete_uploads(self) -> None:
        for op in list(self.operations.values()):
            if "pending_upload" in op:
                self._finish_upload(op)

    def finish_deploy(self, operation_name: str, error: str = "") -> str:
        """End a deploy operation; returns the new DeployedModel id (or '' when it failed)."""
        with self.lock:
            op = self.operations[operation_name]
            pending = op.pop("pending_deploy")
            op["done"] = True
            if error:
                op["error"] = {"code": 9, "message": error}
                return ""
            endpoint = self.endpoints[pending["endpoint"]]
            deployed_id = str(7000 + self._next())
            # Vertex AI lists a deployed model by its model's name and the version's id.
            model, _, version_id = pending["deployedModel"]["model"].partition("@")
            deployed = {**pending["deployedModel"], "id": deployed_id, "model": model, "modelVersionId": version_id}
            endpoint["deployedModels"].append(deployed)
            split = dict(pending["trafficSplit"])
            split[deployed_id] = split.pop("0")
            endpoint["trafficSplit"] = {k: v for k, v in split.items() if v > 0}
            op["response"] = {"@type": DEPLOY_RESPONSE,
                              "deployedModel": {"id": deployed_id, "model": model, "modelVersionId": version_id}}
            return deployed_id

    # --- serving ---------------------------------------------------------------------------------

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        path = unquote(url.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        recorded = Recorded(method, path, parse_qs(url.query), body)
        with self.lock:
            self.requests.append(recorded)
        try:
            status, payload = 200, self._route(recorded)
        except ApiError as exc:
            status = exc.status
            payload = {"error": {"code": exc.status, "message": exc.message, "status": exc.status_name}}
        recorded.status, recorded.answer = status, payload
        if status == 200 and recorded.method_id:
            errors = discovery.response_errors(recorded.method_id, payload)
            if errors:
                with self.lock:
                    self.drift.append(f"{method} {path} ({recorded.method_id}): " + "; ".join(errors))
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, recorded: Recorded) -> dict:
        method, path, query, body = recorded.method, recorded.path, recorded.query, recorded.body or {}
        with self.lock:
            for failure in self.failures:
                if failure.method == method and failure.times > 0 and re.search(failure.path_pattern, path):
                    failure.times -= 1
                    raise ApiError(failure.status, failure.message)
        for route_method, pattern, action, method_id in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                recorded.method_id = method_id
                if method == "POST":
                    errors = discovery.request_errors(method_id, body)
                    if errors:
                        raise ApiError(400, "Invalid JSON payload received. " + "; ".join(errors))
                with self.lock:
                    return action(match, query, body)
        raise ApiError(404, f"no fake route for {method} {path}")

    def _routes(self):
        vertex = "aiplatform.projects.locations"
        return [
            ("POST", rf"/v1b3/{LOCATION}/flexTemplates:launch", self._launch_flex_template,
             "dataflow.projects.locations.flexTemplates.launch"),
            ("GET", rf"/v1b3/{LOCATION}/jobs/(?P<job>[^/:]+)", self._get_dataflow_job,
             "dataflow.projects.locations.jobs.get"),
            ("POST", rf"/v1/{LOCATION}/customJobs", self._create_custom_job, f"{vertex}.customJobs.create"),
            ("GET", rf"/v1/{LOCATION}/customJobs", self._list_custom_jobs, f"{vertex}.customJobs.list"),
            ("GET", rf"/v1/{LOCATION}/customJobs/(?P<job>[^/:]+)", self._get_custom_job, f"{vertex}.customJobs.get"),
            # a model (its default version), MODEL@VERSION or MODEL@ALIAS
            ("GET", rf"/v1/(?P<model>{LOCATION}/models/[^/:@]+)(?:@(?P<ref>[^/:@]+))?", self._get_model,
             f"{vertex}.models.get"),
            ("POST", rf"/v1/{LOCATION}/models:upload", self._upload_model, f"{vertex}.models.upload"),
            ("GET", rf"/v1/(?P<model>{LOCATION}/models/[^/:@]+):listVersions", self._list_versions,
             f"{vertex}.models.listVersions"),
            ("POST", rf"/v1/(?P<model>{LOCATION}/models/[^/:@]+)(?:@(?P<ref>[^/:@]+))?:mergeVersionAliases",
             self._merge_version_aliases, f"{vertex}.models.mergeVersionAliases"),
            ("GET", rf"/v1/(?P<endpoint>{LOCATION}/endpoints/[^/:]+)", self._get_endpoint, f"{vertex}.endpoints.get"),
            ("POST", rf"/v1/(?P<endpoint>{LOCATION}/endpoints/[^/:]+):deployModel", self._deploy_model,
             f"{vertex}.endpoints.deployModel"),
            ("POST", rf"/v1/(?P<endpoint>{LOCATION}/endpoints/[^/:]+):undeployModel", self._undeploy_model,
             f"{vertex}.endpoints.undeployModel"),
            # The REST clients poll operations on the "/ui/" binding of the service's HTTP rules
            # (the first that matches); "/v1/" is the documented one.
            ("GET", rf"/(?:ui|v1)/(?P<name>{LOCATION}/.+/operations/[^/]+)", self._get_operation,
             f"{vertex}.operations.get"),
        ]

    # Dataflow

    def _launch_flex_template(self, match, query, body) -> dict:
        launch = body.get("launchParameter") or {}
        name = launch.get("jobName", "")
        if not launch.get("containerSpecGcsPath"):
            raise ApiError(400, "containerSpecGcsPath is required")
        if name in self.dataflow_jobs:
            raise ApiError(409, f"(8f2d) There is already an active job named {name}. If you want to submit a "
                                "second job, try again by setting a different name.")
        job = {"id": f"2026-11-27_05_00_00-{1000 + self._next()}", "projectId": match["project"],
               "name": name, "location": match["region"], "type": "JOB_TYPE_BATCH",
               "currentState": "JOB_STATE_QUEUED", "labels": launch.get("environment", {}).get("additionalUserLabels", {})}
        self.dataflow_jobs[name] = job
        return {"job": job}

    def _get_dataflow_job(self, match, query, body) -> dict:
        job = next((j for j in self.dataflow_jobs.values() if j["id"] == match["job"]), None)
        if job is None:
            raise ApiError(404, f"(4f1e) Could not find job with id {match['job']}.", "NOT_FOUND")
        return job

    def set_dataflow_state(self, job_name: str, state: str) -> None:
        self.dataflow_jobs[job_name]["currentState"] = state

    # Vertex AI custom jobs

    def _create_custom_job(self, match, query, body) -> dict:
        if not body.get("jobSpec", {}).get("workerPoolSpecs"):
            raise ApiError(400, "CustomJobSpec needs at least one worker pool")
        job_id = str(4000 + self._next())
        job = {**body, "name": f"projects/{match['project']}/locations/{match['region']}/customJobs/{job_id}",
               "state": "JOB_STATE_PENDING", "createTime": "2026-11-27T05:00:00Z"}
        self.custom_jobs[job_id] = job
        return job

    def _list_custom_jobs(self, match, query, body) -> dict:
        wanted = _label_filter(query)
        jobs = [j for j in self.custom_jobs.values() if all(j.get("labels", {}).get(k) == v for k, v in wanted.items())]
        return {"customJobs": jobs}

    def _get_custom_job(self, match, query, body) -> dict:
        if match["job"] not in self.custom_jobs:
            raise ApiError(404, f"CustomJob {match['job']} is not found.")
        return self.custom_jobs[match["job"]]

    # Vertex AI models

    def _get_model(self, match, query, body) -> dict:
        if not self.models.get(match["model"]):
            raise ApiError(404, f"Model {match['model']} is not found.")
        version = self.version(match["model"], match["ref"] or DEFAULT_ALIAS)
        if version is None:
            raise ApiError(404, f"Model {match['model']}@{match['ref'] or DEFAULT_ALIAS} is not found.")
        return version

    def _add_version(self, model: str, resource: dict) -> dict:
        """A new version of `model`: the first one gets "default"; an alias it asks for leaves the
        version that held it (the lock is held)."""
        versions = self.models.setdefault(model, [])
        aliases = list(dict.fromkeys(resource.get("versionAliases") or []))
        if not versions and DEFAULT_ALIAS not in aliases:
            aliases.insert(0, DEFAULT_ALIAS)
        for older in versions:
            older["versionAliases"] = [a for a in older.get("versionAliases", ()) if a not in aliases]
        version = {**resource, "name": model, "versionId": str(len(versions) + 1), "versionAliases": aliases}
        versions.append(version)
        return version

    def _merge_version_aliases(self, match, query, body) -> dict:
        model, ref = match["model"], match["ref"]
        if not ref:
            raise ApiError(400, f"name {model} must name a version: models/MODEL@VERSION")
        if not self.models.get(model):
            raise ApiError(404, f"Model {model} is not found.")
        version = self.version(model, ref)
        if version is None:
            raise ApiError(404, f"Model {model}@{ref} is not found.")
        requested = body.get("versionAliases") or []
        if not requested:
            raise ApiError(400, "versionAliases is required")
        added, removed = [], []
        for alias in requested:
            name = alias[1:] if alias.startswith("-") else alias
            if not ALIAS.fullmatch(name):
                raise ApiError(400, f"Invalid version alias {alias!r}: it must match [a-z][a-zA-Z0-9-]{{0,126}}[a-z0-9].")
            (removed if alias.startswith("-") else added).append(name)
        both = set(added) & set(removed)  # "the 2 operations will be cancelled out"
        added = [a for a in dict.fromkeys(added) if a not in both]
        removed = [a for a in removed if a not in both]
        if DEFAULT_ALIAS in removed:
            raise ApiError(400, "The default version alias cannot be removed; merge it into another version "
                                "to move it.")
        for other in self.models[model]:
            other["versionAliases"] = [a for a in other.get("versionAliases", ()) if a not in added]
        version["versionAliases"] = [a for a in version["versionAliases"] if a not in removed] + added
        return version

    def _upload_model(self, match, query, body) -> dict:
        parent = f"projects/{match['project']}/locations/{match['region']}"
        if body.get("parentModel"):
            model = body["parentModel"]
            if model not in self.models:
                raise ApiError(404, f"Parent model {model} is not found.")
        elif body.get("modelId"):
            model = f"{parent}/models/{body['modelId']}"
            if model in self.models:
                raise ApiError(409, f"Model {model} already exists.")
        else:
            model = f"{parent}/models/{1000 + self._next()}"
        name = f"{model}/operations/{9000 + self._next()}"
        op = {"name": name, "done": False, "pending_upload": {"model": model, "resource": body.get("model", {})}}
        self.operations[name] = op
        if not self.hold_uploads:
            self._finish_upload(op, locked=True)
        return _public(op)

    def _finish_upload(self, op: dict, locked: bool = False) -> None:
        if not locked:
            with self.lock:
                return self._finish_upload(op, locked=True)
        pending = op.pop("pending_upload")
        version_id = self._add_version(pending["model"], pending["resource"])["versionId"]
        op["done"] = True
        op["response"] = {"@type": UPLOAD_RESPONSE, "model": pending["model"], "modelVersionId": version_id}

    def _list_versions(self, match, query, body) -> dict:
        if match["model"] not in self.models:
            raise ApiError(404, f"Model {match['model']} is not found.")
        wanted = _label_filter(query)
        return {"models": [v for v in self.models[match["model"]]
                           if all(v.get("labels", {}).get(k) == value for k, value in wanted.items())]}

    # Vertex AI endpoints and operations

    def _get_endpoint(self, match, query, body) -> dict:
        if match["endpoint"] not in self.endpoints:
            raise ApiError(404, f"Endpoint {match['endpoint']} is not found.")
        return self.endpoints[match["endpoint"]]

    def _deploy_model(self, match, query, body) -> dict:
        endpoint = self._get_endpoint(match, query, body)
        deployed = body.get("deployedModel") or {}
        model, _, version = deployed.get("model", "").partition("@")
        if not any(v["versionId"] == version for v in self.models.get(model, [])):
            raise ApiError(404, f"Model {deployed.get('model')} is not found.")
        split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
        if sum(split.values()) != 100:
            raise ApiError(400, f"trafficSplit must add up to 100, not {sum(split.values())}")
        # keys: "0" for the model this request deploys, else DeployedModels of the endpoint
        unknown = sorted(set(split) - {"0"} - {d["id"] for d in endpoint["deployedModels"]})
        if unknown:
            raise ApiError(400, f"trafficSplit names {', '.join(unknown)}, which the endpoint has no DeployedModel of.")
        name = f"{endpoint['name']}/operations/{8000 + self._next()}"
        self.operations[name] = {"name": name, "done": False,
                                 "pending_deploy": {"endpoint": endpoint["name"], "deployedModel": deployed,
                                                    "trafficSplit": split}}
        return _public(self.operations[name])

    def _undeploy_model(self, match, query, body) -> dict:
        """The split moves and the model leaves at once; the Operation is answered done."""
        endpoint = self._get_endpoint(match, query, body)
        undeployed = body.get("deployedModelId", "")
        ids = [d["id"] for d in endpoint["deployedModels"]]
        if undeployed not in ids:
            raise ApiError(404, f"DeployedModel {undeployed} is not found on Endpoint {endpoint['name']}.")
        remaining = [i for i in ids if i != undeployed]
        requested = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
        current = endpoint.get("trafficSplit") or {}
        if not remaining:
            split = {}  # "If last DeployedModel is being undeployed ... traffic_split will always end up empty"
        elif requested:
            unknown = sorted(k for k, v in requested.items() if k not in remaining and not (k == undeployed and v == 0))
            if unknown:
                raise ApiError(400, f"trafficSplit names {', '.join(unknown)}, which the endpoint keeps no "
                                    "DeployedModel of.")
            split = {k: v for k, v in requested.items() if k != undeployed}
            if sum(split.values()) != 100:
                raise ApiError(400, f"trafficSplit must add up to 100, not {sum(split.values())}")
        elif current.get(undeployed, 0) > 0:
            raise ApiError(400, f"DeployedModel {undeployed} still has {current[undeployed]}% of the traffic; "
                                "undeploy it with a trafficSplit that gives its traffic to the others.",
                           "FAILED_PRECONDITION")
        else:
            split = {k: v for k, v in current.items() if k != undeployed}
        endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != undeployed]
        endpoint["trafficSplit"] = {k: v for k, v in split.items() if v > 0}
        name = f"{endpoint['name']}/operations/{8000 + self._next()}"
        self.operations[name] = {"name": name, "done": True, "response": {"@type": UNDEPLOY_RESPONSE}}
        return _public(self.operations[name])

    def _get_operation(self, match, query, body) -> dict:
        if match["name"] not in self.operations:
            raise ApiError(404, f"Operation {match['name']} is not found.")
        return _public(self.operations[match["name"]])


def _public(op: dict) -> dict:
    return {k: v for k, v in op.items() if not k.startswith("pending_")}


def _label_filter(query: dict) -> dict[str, str]:
    expression = (query.get("filter") or [""])[0]
    return dict(re.findall(r'labels\.([\w-]+)\s*=\s*"([^"]*)"', expression))
