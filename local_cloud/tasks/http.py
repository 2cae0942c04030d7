"""The local Cloud Tasks' HTTP front: Cloud Tasks v2's REST paths, served by uvicorn on 127.0.0.1.

Paths and methods are those of the discovery document (``cloudtasks`` v2):
``/v2/projects/P/locations/L/queues`` (create, list), ``.../queues/Q`` (get),
``.../queues/Q/tasks`` (create, list) and ``.../queues/Q/tasks/T`` (get, delete). Every request
body is held against its method's request schema and every answer against its response schema
(local_cloud.discovery): an unknown or mistyped field is refused 400 INVALID_ARGUMENT, as
Google's front end refuses it, and an answer that strays from the schema is this stand-in's bug,
answered 500 INTERNAL rather than sent. Errors are Google's JSON, ``{"error": {"code",
"message", "status"}}``. Query parameters are the method's own and the system parameters;
any other is refused, as Google refuses a parameter it cannot bind.

Enums: the client libraries send them as numbers and ask for numbers back
(``$alt=json;enum-encoding=int``); both are honoured (``local_cloud.tasks.wire``).

The real client reaches it with plain http either way the GAPIC REST transport allows: an
``api_endpoint`` that carries the scheme (``client_options={"api_endpoint":
"http://127.0.0.1:PORT"}`` with ``transport="rest"``: the transport keeps a scheme it is given),
or a transport built with ``url_scheme="http"`` (``local_client`` below). An ``api_endpoint`` of
bare ``127.0.0.1:PORT`` means https and does not connect.

The server's shape is local_cloud.vertex.http's ModelServiceServer: bound and listening when the
constructor returns (``port`` is usable at once), uvicorn in a background thread, blocking
service calls on a thread pool, loopback addresses only; ``close()`` stops the server (and the
service's scheduler, unless told not to).
"""
from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

from local_cloud import discovery
from local_cloud.loopback_server import LoopbackServer
from local_cloud.tasks.service import CloudTasksService
from local_cloud.tasks.wire import enums_to_names, enums_to_numbers
from model_server.bodies import read_json_body
from model_server.errors import ApiError, invalid
from model_server.responses import respond_json

log = logging.getLogger(__name__)

API_VERSION = "v2"
MAX_REQUEST_BYTES = 1024 * 1024  # a task is at most 100 KB; a queue is small
MAX_DISCARDED_BYTES = 4 * MAX_REQUEST_BYTES
API_THREADS = 8

_LOCATION = r"projects/[^/]+/locations/[^/:]+"  # a project id may hold a colon
_QUEUE = rf"{_LOCATION}/queues/[^/:]+"

# (HTTP method, path after /v2/, action, discovery method id, schema of the request body).
_ROUTES: list[tuple[str, re.Pattern, str, str, str | None]] = [
    (verb, re.compile(pattern), action, f"cloudtasks.projects.locations.{method}", body)
    for verb, pattern, action, method, body in [
        ("POST", rf"^({_QUEUE})/tasks$", "create_task", "queues.tasks.create", "CreateTaskRequest"),
        ("GET", rf"^({_QUEUE}/tasks/[^/:]+)$", "get_task", "queues.tasks.get", None),
        ("DELETE", rf"^({_QUEUE}/tasks/[^/:]+)$", "delete_task", "queues.tasks.delete", None),
        ("GET", rf"^({_QUEUE})/tasks$", "list_tasks", "queues.tasks.list", None),
        ("POST", rf"^({_LOCATION})/queues$", "create_queue", "queues.create", "Queue"),
        ("GET", rf"^({_QUEUE})$", "get_queue", "queues.get", None),
        ("GET", rf"^({_LOCATION})/queues$", "list_queues", "queues.list", None),
    ]
]

# Each action's query parameters (the discovery document's, those this stand-in reads).
_QUERY_PARAMETERS = {
    "create_task": (), "get_task": ("responseView",), "delete_task": (),
    "list_tasks": ("responseView", "pageSize", "pageToken"),
    "create_queue": (), "get_queue": (), "list_queues": ("pageSize", "pageToken", "filter"),
}
# The parameters every Google API takes (the discovery document's "parameters"), and the
# client libraries' "$alt"; they change nothing here except the enum encoding.
_SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "$.xgafv", "access_token", "callback", "fields", "key",
                                "oauth_token", "prettyPrint", "quotaUser", "upload_protocol", "uploadType"})
_RESPONSE_SCHEMAS = {"create_task": "Task", "get_task": "Task", "list_tasks": "ListTasksResponse",
                     "create_queue": "Queue", "get_queue": "Queue", "list_queues": "ListQueuesResponse"}


def check_request_body(method_id: str, body: Any) -> None:
    """Refuse, as INVALID_ARGUMENT, a request body the method's schema does not accept."""
    try:
        discovery.check_request(method_id, body, API_VERSION)
    except discovery.SchemaMismatch as exc:
        raise invalid(str(exc)) from None


def check_response_body(method_id: str, body: Any) -> None:
    """An answer the method's schema does not describe is this stand-in's fault: INTERNAL."""
    errors = discovery.response_errors(method_id, body, API_VERSION)
    if errors:
        log.error("%s answered outside its schema: %s", method_id, errors)
        raise ApiError("INTERNAL", f"the local Cloud Tasks answered {method_id} outside its schema: "
                                   + "; ".join(errors))


class CloudTasksRestApp:
    """The ASGI application: routes Cloud Tasks v2's REST paths to a CloudTasksService."""

    def __init__(self, service: CloudTasksService, api_executor: ThreadPoolExecutor):
        self.service = service
        self._api_executor = api_executor

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        await respond_json(scope, receive, send, self._dispatch, log)

    async def _dispatch(self, scope: dict, receive) -> Any:
        verb = scope["method"]
        path = unquote(scope["path"])
        body: Any = None
        if verb in ("POST", "PUT", "PATCH"):
            body = await read_json_body(scope, receive, MAX_REQUEST_BYTES, MAX_DISCARDED_BYTES)
        prefix = f"/{API_VERSION}/"
        rest = path[len(prefix):] if path.startswith(prefix) else None
        for route_verb, pattern, action, method_id, body_schema in _ROUTES:
            match = pattern.match(rest) if rest is not None else None
            if match and route_verb == verb:
                break
        else:
            raise ApiError("NOT_FOUND", f"no method {verb} {path} in Cloud Tasks {API_VERSION}")
        query = _query(scope, action)
        call = self._call(action, method_id, body_schema, match.group(1), body, query)
        return await asyncio.get_running_loop().run_in_executor(self._api_executor, call)

    def _call(self, action: str, method_id: str, body_schema: str | None, name: str, body: Any,
              query: dict[str, str]) -> Callable[[], Any]:
        service = self.service
        numbers = "enum-encoding=int" in query.get("$alt", "") or "enum-encoding=int" in query.get("alt", "")

        def call() -> Any:
            request = body
            if body_schema is not None:
                request = enums_to_names(body_schema, body)
                check_request_body(method_id, request)
            if action == "create_task":
                answer = service.create_task(name, request)
            elif action == "get_task":
                answer = service.get_task(name, query.get("responseView"))
            elif action == "delete_task":
                answer = service.delete_task(name)
            elif action == "list_tasks":
                answer = service.list_tasks(name, query.get("responseView"), _page_size(query),
                                            query.get("pageToken", ""))
            elif action == "create_queue":
                answer = service.create_queue(name, request)
            elif action == "get_queue":
                answer = service.get_queue(name)
            else:
                if query.get("filter"):
                    raise invalid("filter is not supported by the local Cloud Tasks")
                answer = service.list_queues(name, _page_size(query), query.get("pageToken", ""))
            check_response_body(method_id, answer)
            schema = _RESPONSE_SCHEMAS.get(action)
            return enums_to_numbers(schema, answer) if numbers and schema else answer

        return call


def _query(scope: dict, action: str) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    query = {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}
    allowed = _QUERY_PARAMETERS[action]
    for key in query:
        if key not in allowed and key not in _SYSTEM_PARAMETERS:
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter.')
    if "responseView" in query and query["responseView"].isdigit():
        query["responseView"] = int(query["responseView"])  # type: ignore[assignment]  # an enum by number
    return query


def _page_size(query: dict[str, str]) -> int:
    text = query.get("pageSize", "0") or "0"
    try:
        return int(text)
    except ValueError:
        raise invalid(f"pageSize must be a whole number, got {text!r}") from None


class CloudTasksServer:
    """A CloudTasksService served over HTTP on a loopback address, from a background thread.

    The socket is bound and listening when the constructor returns, so ``port`` (and ``url``)
    can be used at once; ``close()`` stops the server and its threads, and the service too
    unless `close_service` is False.
    """

    def __init__(self, service: CloudTasksService, host: str = "127.0.0.1", port: int = 0, *,
                 close_service: bool = True):
        self.service = service
        self._close_service = close_service
        self._api_executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="cloud-tasks-api")
        try:
            self._server = LoopbackServer(CloudTasksRestApp(service, self._api_executor), "the local Cloud Tasks",
                                          host, port)
        except BaseException:
            self._api_executor.shutdown(wait=False)
            raise
        self.port: int = self._server.port
        self.url: str = self._server.url

    def close(self) -> None:
        self._server.close()
        self._api_executor.shutdown(wait=False, cancel_futures=True)
        if self._close_service:
            self.service.close()

    def __enter__(self) -> "CloudTasksServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def local_client(endpoint: str, credentials: Any = None):
    """The real ``google.cloud.tasks_v2.CloudTasksClient`` pointed at this stand-in, as the
    functions point it (functions.cloud_tasks.plain_http_client)."""
    from functions.cloud_tasks import plain_http_client

    return plain_http_client(endpoint, credentials)
