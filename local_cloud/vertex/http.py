"""The local Vertex AI's HTTP front: Vertex AI's REST paths, served by uvicorn on 127.0.0.1.

Predictions are the hot path and stay on the event loop: the body is read (within Vertex's
1.5 MB limit, by the serving container's own ``model_server.bodies``), a deployed model is drawn
by the traffic split, and the request goes to that model's serving container
(``local_cloud.vertex.forwarding``), which checks it, batches it and predicts; its predictions
come back in Vertex's PredictResponse JSON, its refusals as it worded them. A small request of
the plain form ``{"instances": [...]}`` goes to the container together with the small requests
that arrive with it (``model_server.batcher``, as one PredictRequest; a refused one is sent again
alone, so each gets its own answer): the container's HTTP work per request is what limits
throughput on a small machine, and this keeps the local endpoint as fast as when it predicted
in-process. Any other body goes to the container as it came. Every other method may block (waiting for an operation, reading state under
the service's lock), so it runs on a thread pool and never holds up a prediction.

Every predict that reaches a deployed model is counted as it ends, in the endpoint's serving
figures (``local_cloud.vertex.serving_figures``): its end time, how long it took from the first
byte of its body read to its answer, and whether it failed (an answer of 500 or more). The same
server answers Cloud Monitoring's ``GET /v3/projects/{project}/timeSeries`` from those figures
(``local_cloud.monitoring``), on the thread pool like the other reads: the local stand-in of the
serving metrics Vertex AI writes to Cloud Monitoring.

The bodies of models.upload and endpoints.deployModel/undeployModel are held against their
schemas in Google's discovery document (local_cloud.discovery) on that thread pool, before the
service acts: an unknown or mistyped field is answered 400 INVALID_ARGUMENT, as Vertex AI answers
it. Predict bodies are not: that is the hot path, and a PredictRequest's ``instances`` is a
free-form list the schema says nothing about (the registry checks their shape itself).

uvicorn brings HTTP/1.1 itself (keep-alive, pipelining, ``Expect: 100-continue``, malformed
requests) with httptools' C parser and uvloop when they are installed; this module is the
ASGI application and the server's life in a background thread. It depends on the registry
(``local_cloud.vertex.registry``), never the reverse: whoever creates a ModelService decides
whether to serve it, and closes the server after the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, unquote
from weakref import WeakKeyDictionary

from local_cloud import discovery, monitoring
from local_cloud.loopback_server import LoopbackServer
from local_cloud.vertex.forwarding import ContainerAnswer, Forwarder
from local_cloud.vertex.rest_rules import ApiError, invalid, parse_duration
from local_cloud.vertex.serving_figures import ServingFigures
from model_server.batcher import PredictionBatcher
from model_server.bodies import MAX_PREDICT_PAYLOAD_BYTES, parse_json, read_body, read_json_body
from model_server.errors import from_answer
from model_server.responses import EncodedJson, respond_json

if TYPE_CHECKING:
    from local_cloud.vertex.registry import ModelService
    from local_cloud.vertex.serving_processes import ServingProcess

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Predict bodies up to this size are parsed here and sent to the container with the others that
# arrive together; larger ones carry enough instances to be worth their own request.
COALESCED_BODY_BYTES = 4096
# A refused body up to this size is read to its end before the answer, so that a client still
# sending it reads the 400 instead of a reset connection; past it the connection is just closed.
MAX_DISCARDED_BYTES = 4 * MAX_REQUEST_BYTES

API_THREADS = 16
# Cloud Monitoring's path of timeSeries.list: GET /v3/projects/{project}/timeSeries
_TIME_SERIES_PATH = re.compile(r"^/v3/(projects/[^/:]+)/timeSeries$")


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern), action)
    for method, pattern, action in [
        ("POST", r"^endpoints/([^/:]+):predict$", "predict"),  # first: the call made most often
        ("POST", r"^models:upload$", "upload"),
        ("GET", r"^models/([^/:]+):listVersions$", "list_versions"),
        ("POST", r"^models/([^/:]+):mergeVersionAliases$", "merge_aliases"),
        ("GET", r"^models/([^/:]+)$", "get_model"),
        ("GET", r"^endpoints/([^/:]+)$", "get_endpoint"),
        ("POST", r"^endpoints/([^/:]+):deployModel$", "deploy"),
        ("POST", r"^endpoints/([^/:]+):undeployModel$", "undeploy"),
        ("GET", r"^(?:(?:models|endpoints)/[^/:]+/)?operations/(\d+)$", "get_operation"),
        ("POST", r"^(?:(?:models|endpoints)/[^/:]+/)?operations/(\d+):wait$", "wait_operation"),
    ]
]


# The actions whose request bodies are checked against the discovery document, by method id.
_CHECKED_BODIES = {
    "upload": "aiplatform.projects.locations.models.upload",
    "deploy": "aiplatform.projects.locations.endpoints.deployModel",
    "undeploy": "aiplatform.projects.locations.endpoints.undeployModel",
    "merge_aliases": "aiplatform.projects.locations.models.mergeVersionAliases",
}


def check_body(method_id: str, body: Any) -> None:
    """Refuse, as INVALID_ARGUMENT, a request body that the method's schema does not accept."""
    try:
        discovery.check_request(method_id, body)
    except discovery.SchemaMismatch as exc:
        raise invalid(str(exc)) from None


class VertexRestApp:
    """The ASGI application: routes Vertex AI's REST paths to a ModelService."""

    def __init__(self, service: "ModelService", api_executor: ThreadPoolExecutor,
                 serving_figures: ServingFigures | None = None):
        self.service = service
        self._api_executor = api_executor
        self.serving_figures = serving_figures if serving_figures is not None else ServingFigures()
        self._prefix = f"/v1/{service.parent}/"
        self._forwarder = Forwarder()
        self._batchers: "WeakKeyDictionary[ServingProcess, PredictionBatcher]" = WeakKeyDictionary()

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await respond_json(scope, receive, send, self._dispatch, log)

    async def _lifespan(self, receive, send) -> None:
        """The forwarder's connections belong to the server's loop: closed there when it stops."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._forwarder.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, scope: dict, receive, limit: int) -> Any:
        return await read_json_body(scope, receive, limit, MAX_DISCARDED_BYTES)

    async def _dispatch(self, scope: dict, receive) -> dict:
        method = scope["method"]
        path = unquote(scope["path"])
        if not path.startswith(self._prefix):
            if method == "GET" and path.startswith("/v3/"):
                return await self._monitoring(path, scope)
            if method == "POST":
                await self._read_body(scope, receive, MAX_REQUEST_BYTES)
            raise ApiError("NOT_FOUND", f"no such resource {path}; this service serves {self._prefix}...")
        rest = path[len(self._prefix):]
        for route_method, pattern, action in _ROUTES:
            match = pattern.match(rest)
            if match and route_method == method:
                break
        else:
            if method == "POST":
                await self._read_body(scope, receive, MAX_REQUEST_BYTES)
            raise ApiError("NOT_FOUND", f"no method {method} {path}")
        argument = match.group(1) if match.groups() else None
        if action == "predict":
            began = time.perf_counter()
            return await self._predict(argument, await read_body(scope, receive, MAX_PREDICT_PAYLOAD_BYTES,
                                                                 MAX_DISCARDED_BYTES), began)
        body: Any = None
        if method == "POST":
            body = await self._read_body(scope, receive, MAX_REQUEST_BYTES)
        query = {key: values[-1] for key, values in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        call = self._blocking_call(action, argument, body, query)
        return await asyncio.get_running_loop().run_in_executor(self._api_executor, call)

    def _blocking_call(self, action: str, argument: str | None, body: Any, query: dict) -> Callable[[], dict]:
        call = self._service_call(action, argument, body, query)
        method_id = _CHECKED_BODIES.get(action)
        if method_id is None:
            return call

        def checked() -> dict:
            check_body(method_id, body)
            return call()

        return checked

    def _service_call(self, action: str, argument: str | None, body: Any, query: dict) -> Callable[[], dict]:
        service = self.service
        if action == "upload":
            return lambda: service.upload_model(body)
        if action == "merge_aliases":
            return lambda: service.merge_version_aliases(argument, body)
        if action == "list_versions":
            return lambda: service.list_model_versions(argument, query.get("filter", ""))
        if action == "get_model":
            return lambda: service.get_model(argument)
        if action == "get_endpoint":
            return lambda: service.get_endpoint(argument)
        if action == "deploy":
            return lambda: service.deploy_model(argument, body)
        if action == "undeploy":
            return lambda: service.undeploy_model(argument, body)
        if action == "get_operation":
            return lambda: service.get_operation(argument)
        if action == "wait_operation":
            timeout = body.get("timeout") if isinstance(body, dict) else None
            timeout = timeout or query.get("timeout")
            seconds = parse_duration(timeout) if timeout else 60.0
            return lambda: service.wait_operation(argument, seconds)
        raise ApiError("NOT_FOUND", f"no method for {action}")

    async def _predict(self, endpoint_id: str, body: bytes, began: float) -> EncodedJson:
        route = self.service.predict_route(endpoint_id)
        failed = True  # until it answers; an ApiError below 500 is the client's error, not the model's
        counted = True
        try:
            answer = await self._predict_on(route, body)
            failed = False
            return answer
        except ApiError as exc:
            failed = exc.http_status >= 500
            raise
        except asyncio.CancelledError:  # the client went away: no answer, nothing to count
            counted = False
            raise
        finally:
            if counted:
                self.serving_figures.record(endpoint_id, route.deployed_model_id, time.time(),
                                            (time.perf_counter() - began) * 1000.0, failed)

    async def _predict_on(self, route, body: bytes) -> EncodedJson:
        server = route.server
        if not server.ready:  # after a restart, a deployed model's container may still be starting
            await asyncio.get_running_loop().run_in_executor(self._api_executor, self._wait_ready, route)
        instances = _plain_instances(body) if len(body) <= COALESCED_BODY_BYTES else None
        try:
            if instances is None:
                return EncodedJson(await self._forwarder.relay(
                    "127.0.0.1", server.port, server.predict_route, body, route.fields))
            predictions = await self._batcher(server).run(instances)
        except ContainerAnswer as answer:
            raise from_answer(answer.status, answer.body) from None
        encoded = json.dumps({"predictions": predictions}, separators=(",", ":")).encode("utf-8")
        return EncodedJson(encoded[:-1] + route.fields + b"}")

    def _batcher(self, server: "ServingProcess") -> PredictionBatcher:
        batcher = self._batchers.get(server)
        if batcher is None:
            forwarder, port, path = self._forwarder, server.port, server.predict_route
            batcher = self._batchers[server] = PredictionBatcher(
                lambda instances: forwarder.predictions("127.0.0.1", port, path, instances), None)
        return batcher

    async def _monitoring(self, path: str, scope: dict) -> dict:
        """Cloud Monitoring's timeSeries.list over the serving figures (``local_cloud.monitoring``)."""
        match = _TIME_SERIES_PATH.match(path)
        if match is None:
            raise ApiError("NOT_FOUND", f"no method GET {path}; the local Cloud Monitoring serves "
                                        "GET /v3/projects/{project}/timeSeries")
        name = match.group(1)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        service, figures = self.service, self.serving_figures

        def call() -> dict:
            request = monitoring.parse_list_request(query)
            return monitoring.list_time_series(figures, service.project, service.location, name, request)

        return await asyncio.get_running_loop().run_in_executor(self._api_executor, call)

    @staticmethod
    def _wait_ready(route) -> None:
        try:
            route.server.wait_ready()
        except Exception as exc:  # ServingStartFailed: say so, as Vertex answers for a model not serving
            raise ApiError("UNAVAILABLE", f"deployed model {route.deployed_model_id} is not serving: {exc}") from None


def _plain_instances(body: bytes) -> list | None:
    """The instances of a body that is exactly {"instances": [non-empty list]}, else None (sent as it
    came, so that the container refuses it in its own words)."""
    try:
        request = parse_json(body)
    except ApiError:
        return None
    if not isinstance(request, dict) or len(request) != 1:
        return None
    instances = request.get("instances")
    return instances if isinstance(instances, list) and instances else None


class ModelServiceServer:
    """A ModelService served over HTTP on a loopback address, from a background thread.

    The socket is bound and listening when the constructor returns, so ``port`` can be used at
    once; ``close()`` stops the server and its threads.
    """

    def __init__(self, service: "ModelService", host: str = "127.0.0.1", port: int = 0,
                 serving_figures: ServingFigures | None = None):
        self._api_executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="model-service-api")
        try:
            # lifespan "on": the forwarder's connections are closed on the server's own loop
            app = VertexRestApp(service, self._api_executor, serving_figures)
            self._server = LoopbackServer(app, "the local model service", host, port, lifespan="on")
        except BaseException:
            self._api_executor.shutdown(wait=False)
            raise
        self.port: int = self._server.port
        # what the endpoint counted of its predictions (also served as Cloud Monitoring's timeSeries.list)
        self.serving_figures: ServingFigures = app.serving_figures

    def close(self) -> None:
        self._server.close()
        self._api_executor.shutdown(wait=False, cancel_futures=True)
        self.serving_figures.close()
