"""The ASGI application of the serving container: a health route and a predict route.

Vertex AI's contract (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements):
the health route answers 200 once the model is ready to serve and an error before that (the
server listens, and so passes the TCP liveness probe, while the model loads); the predict route
takes a PredictRequest ({"instances": [...], "parameters": ...}) and answers {"predictions": [...]},
one per instance. A bad request is answered with Google's error JSON and its reason; bodies past
Vertex's 1.5 MB limit are refused as the local endpoint refuses them (model_server.bodies).
Predictions of requests that arrive together run as one model call (model_server.batcher).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from model_server.batcher import DEFAULT_MAX_BATCH_INSTANCES, PredictionBatcher
from model_server.bodies import (
    DEFAULT_MAX_INSTANCES_PER_REQUEST,
    MAX_PREDICT_PAYLOAD_BYTES,
    predict_instances,
    read_json_body,
)
from model_server.errors import ApiError
from model_server.responses import respond_json

log = logging.getLogger(__name__)

# A refused body up to this size is read to its end before the answer (a client still sending it
# then reads the 400, not a reset connection); past it the connection is closed.
MAX_DISCARDED_BYTES = 4 * MAX_PREDICT_PAYLOAD_BYTES


class ModelServerApp:
    """Serves one model's predictions at ``predict_route`` and its readiness at ``health_route``.

    ``predict(instances) -> predictions`` (row-format lists) is set with ``serve()`` once the
    model is loaded; until then health checks and predictions answer 503 UNAVAILABLE (wait and
    retry), and after ``fail()`` 500 INTERNAL with why the model could not be loaded (it never
    will be: whoever health-checks the container can stop waiting). Model calls run on
    ``model_executor`` (one thread), so the event loop keeps reading requests meanwhile.
    """

    def __init__(self, health_route: str, predict_route: str, model_executor: ThreadPoolExecutor, *,
                 max_instances: int = DEFAULT_MAX_INSTANCES_PER_REQUEST,
                 max_batch_instances: int = DEFAULT_MAX_BATCH_INSTANCES):
        self.health_route = health_route
        self.predict_route = predict_route
        self._executor = model_executor
        self._max_instances = max_instances
        self._max_batch_instances = max_batch_instances
        self._predict: Callable[[list], list] | None = None
        self._batcher: PredictionBatcher | None = None
        self._not_ready = "the model is loading"
        self._failed = False

    @property
    def ready(self) -> bool:
        return self._predict is not None

    def serve(self, predict: Callable[[list], list]) -> None:
        """Start serving ``predict``; health checks answer 200 from now on."""
        self._predict = predict

    def fail(self, reason: str) -> None:
        """The model could not be loaded: health checks and predictions answer 500 with ``reason``."""
        self._not_ready = reason
        self._failed = True

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        await respond_json(scope, receive, send, self._dispatch, log)

    async def _dispatch(self, scope: dict, receive) -> Any:
        method, path = scope["method"], scope["path"]
        if path == self.predict_route:
            if method != "POST":
                await self._drain(scope, receive, method)
                raise ApiError("NOT_FOUND", f"{path} takes POST, not {method}")
            request = await read_json_body(scope, receive, MAX_PREDICT_PAYLOAD_BYTES, MAX_DISCARDED_BYTES)
            return await self._run(predict_instances(request, self._max_instances))
        await self._drain(scope, receive, method)
        if path == self.health_route and method in ("GET", "HEAD"):
            if self._predict is None:
                raise self._not_ready_error()
            return {}
        raise ApiError("NOT_FOUND", f"no method {method} {path}; this server answers "
                                    f"{self.health_route} and {self.predict_route}")

    def _not_ready_error(self) -> ApiError:
        return ApiError("INTERNAL" if self._failed else "UNAVAILABLE", self._not_ready)

    async def _drain(self, scope: dict, receive, method: str) -> None:
        if method in ("POST", "PUT", "PATCH"):
            await read_json_body(scope, receive, MAX_PREDICT_PAYLOAD_BYTES, MAX_DISCARDED_BYTES)

    async def _run(self, instances: list) -> dict:
        if self._predict is None:
            raise self._not_ready_error()
        if self._batcher is None:  # made on the event loop it serves
            self._batcher = PredictionBatcher(self._predict, self._executor, self._max_batch_instances)
        return {"predictions": await self._batcher.run(instances)}

