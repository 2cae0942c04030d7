"""The local cloud's REST API: the Dataflow and Vertex AI job calls the functions make.

Paths and bodies follow the cloud's REST references (Dataflow v1b3 flexTemplates.launch and jobs.get;
Vertex AI v1 customJobs create/get/list/cancel); errors use Google's JSON error shape, with the
codes the cloud uses (409 ALREADY_EXISTS for a Dataflow job name in use, 404 NOT_FOUND, 400
INVALID_ARGUMENT). A request body is held against its method's schema in Google's discovery
documents before anything runs (local_cloud.discovery), so an unknown or mistyped field is
refused here as the cloud refuses it, not accepted and ignored. Model Registry and Endpoints are
local_cloud.vertex's, on a port of their own.
"""
from __future__ import annotations

import json
import re

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local_cloud import discovery
from local_cloud.jobs.runner import JobConflict, JobRunner, LocalJob

_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "ALREADY_EXISTS",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_LABEL_FILTER = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"')


def google_error(code: int, message: str) -> Response:
    body = {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}
    return Response(json.dumps(body), status=code, mimetype="application/json")


def _json(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def dataflow_job_resource(job: LocalJob) -> dict:
    state = {"JOB_STATE_SUCCEEDED": "JOB_STATE_DONE"}.get(job.state, job.state)
    return dict(job.resource, currentState=state, currentStateTime=job.ended or job.started or job.created)


def custom_job_resource(job: LocalJob) -> dict:
    resource = dict(job.resource, state=job.state)
    if job.started:
        resource["startTime"] = job.started
    if job.ended:
        resource["endTime"] = job.ended
    return resource


class ControlApi:
    """A WSGI app over the job runner."""

    def __init__(self, jobs: JobRunner):
        self.jobs = jobs
        self._faults: list[list] = []  # [path fragment, status, remaining]
        self.fault_log: list[tuple[str, int]] = []

        self.url_map = Map([
            Rule("/v1b3/projects/<project>/locations/<region>/flexTemplates:launch", endpoint="launch",
                 methods=["POST"]),
            Rule("/v1b3/projects/<project>/locations/<region>/jobs/<job_id>", endpoint="dataflow_get",
                 methods=["GET"]),
            Rule("/v1/projects/<project>/locations/<region>/customJobs", endpoint="custom_create",
                 methods=["POST"]),
            Rule("/v1/projects/<project>/locations/<region>/customJobs", endpoint="custom_list",
                 methods=["GET"]),
            Rule("/v1/projects/<project>/locations/<region>/customJobs/<job_id>", endpoint="custom_get",
                 methods=["GET"]),
            Rule("/v1/projects/<project>/locations/<region>/customJobs/<job_id>:cancel",
                 endpoint="custom_cancel", methods=["POST"]),
        ], strict_slashes=False)

    def inject_fault(self, path_fragment: str, status: int = 503, count: int = 1) -> None:
        """Answer the next `count` requests whose path contains `path_fragment` with `status`, as
        a real service does during an outage (503) or under quota (429)."""
        self._faults.append([path_fragment, status, count])

    def clear_faults(self) -> None:
        """The service is well again: the faults not yet answered are dropped."""
        self._faults.clear()

    def _fault_for(self, path: str) -> int | None:
        for fault in self._faults:
            if fault[0] in path and fault[2] > 0:
                fault[2] -= 1
                self.fault_log.append((path, fault[1]))
                return fault[1]
        return None

    def __call__(self, environ, start_response):
        request = Request(environ)
        injected = self._fault_for(request.path)
        if injected is not None:
            return google_error(injected, "the service is unavailable; try again")(environ, start_response)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException as exc:
            return google_error(exc.code or 404, f"{request.method} {request.path}: {exc.name}")(environ, start_response)
        try:
            response = getattr(self, f"_{endpoint}")(request, **args)
        except ValueError as exc:
            response = google_error(400, str(exc))
        return response(environ, start_response)

    @staticmethod
    def _body(request: Request, method_id: str) -> dict:
        """The request's JSON body once the method's schema accepts it (SchemaMismatch, a
        ValueError, answers 400 otherwise)."""
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise ValueError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        discovery.check_request(method_id, body)
        return body

    def _launch(self, request: Request, project: str, region: str) -> Response:
        body = self._body(request, "dataflow.projects.locations.flexTemplates.launch")
        try:
            job = self.jobs.launch_flex_template(body.get("launchParameter") or {})
        except JobConflict as exc:
            return google_error(409, str(exc))
        return _json({"job": dataflow_job_resource(job)})

    def _dataflow_get(self, request: Request, project: str, region: str, job_id: str) -> Response:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "dataflow":
            return google_error(404, f"Dataflow job {job_id} not found")
        return _json(dataflow_job_resource(job))

    def _custom_create(self, request: Request, project: str, region: str) -> Response:
        job = self.jobs.create_custom_job(self._body(request, "aiplatform.projects.locations.customJobs.create"))
        return _json(custom_job_resource(job))

    def _custom_list(self, request: Request, project: str, region: str) -> Response:
        wanted = dict(_LABEL_FILTER.findall(request.args.get("filter", "")))
        return _json({"customJobs": [custom_job_resource(j) for j in self.jobs.list_custom_jobs(wanted)]})

    def _custom_get(self, request: Request, project: str, region: str, job_id: str) -> Response:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "vertex":
            return google_error(404, f"CustomJob {job_id} not found")
        return _json(custom_job_resource(job))

    def _custom_cancel(self, request: Request, project: str, region: str, job_id: str) -> Response:
        self._body(request, "aiplatform.projects.locations.customJobs.cancel")
        if self.jobs.get(job_id) is None:
            return google_error(404, f"CustomJob {job_id} not found")
        self.jobs.cancel(job_id)
        return _json({})
