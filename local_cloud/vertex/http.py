"""The local Vertex AI's HTTP front: Vertex AI's REST paths, served by uvicorn on 127.0.0.1.

Predictions are the hot path and stay on the event loop: the body is parsed and checked
there, requests that arrive together go to the model as one call on a worker thread
(``PredictionBatcher``, as TensorFlow Serving batches), and the answer is Vertex's
PredictResponse JSON. Every other method may block (waiting for an operation, reading state under the
service's lock), so it runs on a thread pool and never holds up a prediction.

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
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote
from weakref import WeakKeyDictionary

from local_cloud import discovery
from local_cloud.vertex.rest_rules import MAX_PREDICT_PAYLOAD_BYTES, ApiError, invalid, parse_duration
from local_cloud.vertex.routing import predict_response
from local_cloud.vertex.row_format import check_prediction_count

if TYPE_CHECKING:
    from local_cloud.vertex.model_loading import LoadedModel
    from local_cloud.vertex.registry import ModelService

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
# A refused body up to this size is read to its end before the answer, so that a client still
# sending it reads the 400 instead of a reset connection; past it the connection is just closed.
MAX_DISCARDED_BYTES = 4 * MAX_REQUEST_BYTES
# Requests that arrive together run as one model call of at most this many instances.
DEFAULT_MAX_BATCH_INSTANCES = 1_000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# A client waiting for a long operation keeps its connection; Google's front ends hold idle
# connections for minutes, not uvicorn's default 5 seconds.
KEEP_ALIVE_S = 300
LISTEN_BACKLOG = 128
API_THREADS = 16
STARTUP_TIMEOUT_S = 30


class _BatchJob:
    __slots__ = ("instances", "future", "predictions", "error")

    def __init__(self, instances: list, future: asyncio.Future):
        self.instances = instances
        self.future = future
        self.predictions: list | None = None
        self.error: BaseException | None = None


class PredictionBatcher:
    """Runs the predictions that arrive together as one model call, as TensorFlow Serving does.

    A SavedModel call costs about the same for one row as for a hundred, so requests that
    arrive while the model is busy wait and then go in together, up to ``max_batch_instances``.
    The first request starts a call at once, so a lone request waits for nothing. Calls run one
    at a time on ``executor`` (one thread), so the event loop keeps reading requests meanwhile.
    ``predict(instances) -> predictions`` takes and gives row-format lists, so turning JSON
    into tensors and back is done once per batch. A batch the model refuses is retried request
    by request, so one bad request cannot fail the others. Lives on one event loop.
    """

    def __init__(self, predict: Callable[[list], list], executor: ThreadPoolExecutor,
                 max_batch_instances: int = DEFAULT_MAX_BATCH_INSTANCES):
        self._predict = predict
        self._executor = executor
        self._max_batch_instances = max_batch_instances
        self._queue: list[_BatchJob] = []
        self._drainer: asyncio.Task | None = None

    def waiting(self) -> int:
        """How many requests wait for the next model call."""
        return len(self._queue)

    def run(self, instances: list) -> Awaitable[list]:
        """The predictions for one request's instances, once its batch has run."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_BatchJob(instances, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())  # kept: the loop holds tasks weakly
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take_batch()
                try:
                    await loop.run_in_executor(self._executor, self._execute, batch)
                except asyncio.CancelledError:  # the server is stopping
                    for job in batch:
                        job.future.cancel()
                    raise
                except Exception as exc:  # the executor is shut down: every request of the batch hears why
                    for job in batch:
                        job.error = job.error or exc
                for job in batch:
                    if job.future.done():  # cancelled with its request as the server stops
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    elif job.predictions is None:
                        job.future.set_exception(
                            ApiError("INTERNAL", "the prediction batch ended without an answer for this request"))
                    else:
                        job.future.set_result(job.predictions)
        finally:
            self._drainer = None

    def _take_batch(self) -> list[_BatchJob]:
        total = len(self._queue[0].instances)
        taken = 1
        while taken < len(self._queue) and total + len(self._queue[taken].instances) <= self._max_batch_instances:
            total += len(self._queue[taken].instances)
            taken += 1
        batch = self._queue[:taken]
        del self._queue[:taken]
        return batch

    def _execute(self, batch: list[_BatchJob]) -> None:
        """On the worker thread: one model call for the batch, or one per request if refused."""
        if len(batch) > 1:
            joined = [instance for job in batch for instance in job.instances]
            try:
                predictions = self._predict(joined)
            except Exception:  # retried request by request below, so each gets its own answer
                predictions = None
            if isinstance(predictions, list) and len(predictions) == len(joined):
                start = 0
                for job in batch:
                    job.predictions = predictions[start: start + len(job.instances)]
                    start += len(job.instances)
                return
        for job in batch:
            try:
                job.predictions = check_prediction_count(self._predict(job.instances), len(job.instances))
            except Exception as exc:  # handed to the request it belongs to
                job.error = exc


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern), action)
    for method, pattern, action in [
        ("POST", r"^endpoints/([^/:]+):predict$", "predict"),  # first: the call made most often
        ("POST", r"^models:upload$", "upload"),
        ("GET", r"^models/([^/:]+):listVersions$", "list_versions"),
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
}


def check_body(method_id: str, body: Any) -> None:
    """Refuse, as INVALID_ARGUMENT, a request body that the method's schema does not accept."""
    try:
        discovery.check_request(method_id, body)
    except discovery.SchemaMismatch as exc:
        raise invalid(str(exc)) from None


class _BadBody(Exception):
    """A request body refused before it was read whole; the connection is closed after the answer.

    `unread`: how much of the body is still on its way (None when none is, or it is too much to
    wait for).
    """

    def __init__(self, error: ApiError, unread: int | None = None):
        super().__init__(error.message)
        self.error = error
        self.unread = unread if unread is not None and unread <= MAX_DISCARDED_BYTES else None


async def _discard(receive, budget: int) -> None:
    """Read and drop the rest of a refused body, at most `budget` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))


class VertexRestApp:
    """The ASGI application: routes Vertex AI's REST paths to a ModelService."""

    def __init__(self, service: "ModelService", api_executor: ThreadPoolExecutor, model_executor: ThreadPoolExecutor):
        self.service = service
        self._api_executor = api_executor
        self._model_executor = model_executor
        self._prefix = f"/v1/{service.parent}/"
        self._batchers: "WeakKeyDictionary[LoadedModel, PredictionBatcher]" = WeakKeyDictionary()

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        close = False
        try:
            status, body = 200, await self._dispatch(scope, receive)
        except _BadBody as exc:
            close = True
            status, body = exc.error.http_status, exc.error.http_body()
            if exc.unread is not None:
                await _discard(receive, exc.unread)
        except ApiError as exc:
            status, body = exc.http_status, exc.http_body()
        except Exception as exc:  # an unexpected fault is the service's, reported as Google APIs do
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            error = ApiError("INTERNAL", f"internal error: {exc}")
            status, body = error.http_status, error.http_body()
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = [(b"content-type", b"application/json; charset=UTF-8"),
                   (b"content-length", str(len(payload)).encode("ascii"))]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: dict, receive, limit: int) -> Any:
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _BadBody(invalid(f"bad Content-Length {value.decode('latin-1')!r}")) from None
        if declared is not None and declared > limit:
            raise _BadBody(invalid(f"Request payload size exceeds the limit: {limit} bytes."), unread=declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _BadBody(invalid("the client went away before sending the whole body"))
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                more = MAX_DISCARDED_BYTES - size if message.get("more_body") else None
                raise _BadBody(invalid(f"Request payload size exceeds the limit: {limit} bytes."), unread=more)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid(f"the request body is not valid JSON: {exc}") from None

    async def _dispatch(self, scope: dict, receive) -> dict:
        method = scope["method"]
        path = unquote(scope["path"])
        if not path.startswith(self._prefix):
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
        body: Any = None
        if method == "POST":
            body = await self._read_body(scope, receive, MAX_PREDICT_PAYLOAD_BYTES if action == "predict"
                                         else MAX_REQUEST_BYTES)
        if action == "predict":
            return await self._predict(argument, body)
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

    async def _predict(self, endpoint_id: str, request: Any) -> dict:
        route = self.service.predict_route(endpoint_id, request)
        model = route.servable.loaded
        if model is None:  # a restart serves a deployed model it has not loaded yet: load it off the loop
            model = await asyncio.get_running_loop().run_in_executor(
                self._api_executor, route.servable.get, route.deployed_model_id)
        batcher = self._batchers.get(model)
        if batcher is None:
            batcher = self._batchers[model] = PredictionBatcher(model.predict_instances, self._model_executor)
        return predict_response(route, await batcher.run(request["instances"]))


class ModelServiceServer:
    """A ModelService served over HTTP on a loopback address, from a background thread.

    The socket is bound and listening when the constructor returns, so ``port`` can be used at
    once; ``close()`` stops the server and its threads.
    """

    def __init__(self, service: "ModelService", host: str = "127.0.0.1", port: int = 0):
        import uvicorn  # imported here: the service itself needs no HTTP stack

        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the local model service binds loopback addresses only, not {host!r}")
        address = "127.0.0.1" if host == "localhost" else host
        self._socket = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((address, port))
        self._socket.listen(LISTEN_BACKLOG)
        self.port: int = self._socket.getsockname()[1]
        self._api_executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="model-service-api")
        self._model_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-predict")
        app = VertexRestApp(service, self._api_executor, self._model_executor)
        config = uvicorn.Config(
            # log_config=None: leave the process's logging as it is (uvicorn's loggers propagate).
            app, lifespan="off", access_log=False, log_config=None, log_level="warning", proxy_headers=False,
            server_header=False, date_header=False, backlog=LISTEN_BACKLOG, timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="model-service-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the model service's HTTP server did not start on {address}:{self.port}")
            time.sleep(0.005)

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        self._api_executor.shutdown(wait=False, cancel_futures=True)
        self._model_executor.shutdown(wait=False, cancel_futures=True)
