"""Queues and tasks as the Cloud Tasks API v2 accepts and shows them: pure functions.

What is checked here is what the service itself refuses beyond the discovery document's
schema (``local_cloud.discovery`` checks field names and JSON types first): resource names, the
HttpRequest's rules, times and their limits. Formats and rules from
https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks (the Task
resource) and .../projects.locations.queues (the Queue resource):

- names: ``projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID/tasks/TASK_ID``; a project
  id holds letters, digits, hyphens, colons and periods, a queue id letters, digits and hyphens
  (at most 100), a task id letters, digits, hyphens and underscores (at most 500). A task created
  without a name gets a random one.
- ``scheduleTime``: a timestamp (RFC 3339); absent or past means now, truncated to the
  microsecond. At most 30 days ahead (Cloud Tasks' quotas and limits).
- ``createTime`` truncated to the second; ``dispatchDeadline`` 600 s by default for HTTP tasks,
  from 15 s to 30 min.
- ``dispatchCount``: attempts dispatched, those still waiting for an answer included;
  ``responseCount``: attempts that got an answer. ``firstAttempt`` keeps its ``dispatchTime``
  only; ``lastAttempt`` has its ``scheduleTime``, ``dispatchTime`` and, once answered,
  ``responseTime`` and ``responseStatus`` (a google.rpc.Status).
- ``httpRequest``: ``url`` starts with http:// or https:// (2083 characters at most); a
  ``body`` (base64) only with POST, PUT or PATCH; one of ``oauthToken`` / ``oidcToken``.
- the BASIC view (the default) leaves out "fields which can be large or can contain sensitive
  data"; the enum's description names the App Engine body only. Here the HTTP body is left out
  too, the cautious reading: code that needs the body asks for FULL, which works either way.

Proto3 JSON leaves out fields at their default (a count of 0, an empty status), and so do the
answers here. App Engine tasks and a queue's httpTarget / appEngineRoutingOverride are refused
(INVALID_ARGUMENT): the chain uses neither, and a stand-in that stored them without acting on them
would mislead. A queue's rateLimits are kept and reported but not enforced.
"""
from __future__ import annotations

import base64
import json
import re
from typing import Any, Mapping

from local_cloud.tasks.retry import RetryPolicy
from local_cloud.tasks.state import Attempt, TaskRecord
from local_cloud.tasks.wire import HTTP_METHOD, MICROS, decode_bytes, enum_name, format_duration, \
    format_timestamp, parse_duration, parse_timestamp
from model_server.errors import ApiError, invalid

_LOCATION = r"projects/([A-Za-z0-9][A-Za-z0-9:.\-]*)/locations/([A-Za-z0-9][A-Za-z0-9\-]*)"
_QUEUE_ID = r"[A-Za-z0-9\-]{1,100}"
_TASK_ID = r"[A-Za-z0-9_\-]{1,500}"
LOCATION_NAME = re.compile(_LOCATION)
QUEUE_NAME = re.compile(rf"({_LOCATION})/queues/({_QUEUE_ID})")
TASK_NAME = re.compile(rf"({_LOCATION}/queues/{_QUEUE_ID})/tasks/({_TASK_ID})")

# A new queue's rateLimits when it asks for none, as Cloud Tasks reports them.
DEFAULT_RATE_LIMITS = {"maxDispatchesPerSecond": 500, "maxBurstSize": 100, "maxConcurrentDispatches": 1000}
MAX_DISPATCHES_PER_SECOND = 500
MAX_CONCURRENT_DISPATCHES = 5000

DEFAULT_DISPATCH_DEADLINE_US = 600 * MICROS
MIN_DISPATCH_DEADLINE_US, MAX_DISPATCH_DEADLINE_US = 15 * MICROS, 30 * 60 * MICROS
MAX_SCHEDULE_AHEAD_US = 30 * 24 * 3600 * MICROS
MAX_TASK_BYTES = 100 * 1024  # "The maximum task size is 100KB." (tasks.create)
MAX_URL_CHARS = 2083
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# The headers Cloud Tasks computes itself, whatever a task says (HttpRequest.headers), and the
# prefixes it keeps for itself ("Google use only"; X-CloudTasks-* it sets on each attempt).
_COMPUTED_HEADERS = frozenset({"host", "content-length", "user-agent"})
_RESERVED_HEADER_PREFIXES = ("x-google-", "x-appengine-", "x-cloudtasks-")
USER_AGENT = "Google-Cloud-Tasks"
# Locally no token is minted: the Authorization header carries this prefix and the account the
# task names, so that a receiver can see who the task acts as. Nothing verifies it.
LOCAL_OAUTH_TOKEN_PREFIX = "local-unverified-oauth-token:"
LOCAL_OIDC_TOKEN_PREFIX = "local-unverified-oidc-token:"


def not_found(what: str) -> ApiError:
    return ApiError("NOT_FOUND", f"Requested entity was not found: {what}")


def check_location(parent: Any) -> str:
    if not isinstance(parent, str) or not LOCATION_NAME.fullmatch(parent):
        raise invalid(f"parent {parent!r} must be projects/PROJECT_ID/locations/LOCATION_ID")
    return parent


def check_queue_name(name: Any, field: str = "queue name") -> str:
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise invalid(f"{field} {name!r} must be projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID, "
                      "QUEUE_ID of at most 100 letters, digits or hyphens")
    return name


def split_task_name(name: Any, field: str = "task name") -> tuple[str, str]:
    """(queue name, task id) of a task name."""
    match = TASK_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise invalid(f"{field} {name!r} must be projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID/"
                      "tasks/TASK_ID, TASK_ID of at most 500 letters, digits, hyphens or underscores")
    return match.group(1), match.group(4)


def short_id(name: str) -> str:
    return name.rsplit("/", 1)[1]


# --- queues --------------------------------------------------------------------------------------


def new_queue(parent: str, body: Mapping[str, Any]) -> dict:
    """The Queue a CreateQueue request makes (its JSON, as kept and shown)."""
    check_location(parent)
    if not isinstance(body, Mapping):
        raise invalid("the request body must be a Queue (a JSON object)")
    name = body.get("name")
    if not name:
        raise invalid("queue.name is required: projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID")
    check_queue_name(name, "queue.name")
    if not name.startswith(parent + "/queues/"):
        raise invalid(f"queue.name {name!r} must be in the parent location {parent!r}")
    for unsupported in ("httpTarget", "appEngineRoutingOverride"):
        if body.get(unsupported):
            raise invalid(f"queue.{unsupported} is not supported by the local Cloud Tasks")
    queue: dict[str, Any] = {"name": name, "rateLimits": _rate_limits(body.get("rateLimits") or {}),
                             "retryConfig": RetryPolicy.from_json(body.get("retryConfig"), field="queue.retryConfig")
                             .to_json(),
                             "state": "RUNNING"}
    logging_config = body.get("stackdriverLoggingConfig")
    if logging_config:
        ratio = logging_config.get("samplingRatio", 0)
        if not 0 <= ratio <= 1:
            raise invalid(f"queue.stackdriverLoggingConfig.samplingRatio must be from 0 to 1, got {ratio}")
        queue["stackdriverLoggingConfig"] = {"samplingRatio": ratio}
    return queue


def _rate_limits(asked: Mapping[str, Any]) -> dict:
    limits = dict(DEFAULT_RATE_LIMITS)
    rate = asked.get("maxDispatchesPerSecond")
    if rate:
        if not 0 < rate <= MAX_DISPATCHES_PER_SECOND:
            raise invalid(f"queue.rateLimits.maxDispatchesPerSecond must be above 0 and at most "
                          f"{MAX_DISPATCHES_PER_SECOND}, got {rate}")
        limits["maxDispatchesPerSecond"] = rate
    concurrent = asked.get("maxConcurrentDispatches")
    if concurrent:
        if not 0 < concurrent <= MAX_CONCURRENT_DISPATCHES:
            raise invalid(f"queue.rateLimits.maxConcurrentDispatches must be from 1 to "
                          f"{MAX_CONCURRENT_DISPATCHES}, got {concurrent}")
        limits["maxConcurrentDispatches"] = concurrent
    return limits  # maxBurstSize is output only


def retry_policy(queue: Mapping[str, Any], task: TaskRecord | None = None) -> RetryPolicy:
    """The policy a task is retried by: its own RetryConfig if it has one, else its queue's."""
    policy = RetryPolicy.from_json(queue["retryConfig"])
    if task is not None and task.retry_config:
        policy = RetryPolicy.from_json(task.retry_config, base=policy)
    return policy


# --- tasks ---------------------------------------------------------------------------------------


def new_task(queue: Mapping[str, Any], request: Mapping[str, Any], now_us: int, generated_id: str) -> TaskRecord:
    """The task a CreateTaskRequest adds to `queue` (its name is `generated_id` unless it has one)."""
    if not isinstance(request, Mapping) or not isinstance(request.get("task"), Mapping):
        raise invalid("task is required: the request body must be a CreateTaskRequest with a task")
    task = request["task"]
    if len(json.dumps(task, separators=(",", ":"))) > MAX_TASK_BYTES:
        raise invalid(f"Task size too large: the maximum task size is {MAX_TASK_BYTES} bytes")
    name = task.get("name") or f"{queue['name']}/tasks/{generated_id}"
    queue_name, _ = split_task_name(name, "task.name")
    if queue_name != queue["name"]:
        raise invalid(f"task.name {name!r} must be in the parent queue {queue['name']!r}")
    if task.get("appEngineHttpRequest"):
        raise invalid("App Engine tasks (task.appEngineHttpRequest) are not supported by the local Cloud Tasks")
    if not task.get("httpRequest"):
        raise invalid("task.httpRequest is required (the local Cloud Tasks runs HTTP tasks)")
    http_request = check_http_request(task["httpRequest"])
    schedule_us = now_us
    if task.get("scheduleTime"):
        schedule_us = max(now_us, parse_timestamp(task["scheduleTime"], "task.scheduleTime"))
        if schedule_us - now_us > MAX_SCHEDULE_AHEAD_US:
            raise invalid("task.scheduleTime must be at most 30 days in the future")
    deadline_us = DEFAULT_DISPATCH_DEADLINE_US
    if task.get("dispatchDeadline"):
        deadline_us = parse_duration(task["dispatchDeadline"], "task.dispatchDeadline")
        if not MIN_DISPATCH_DEADLINE_US <= deadline_us <= MAX_DISPATCH_DEADLINE_US:
            raise invalid(f"task.dispatchDeadline must be from 15s to 1800s, got {task['dispatchDeadline']!r}")
    retry_config = None
    if task.get("retryConfig"):
        retry_config = RetryPolicy.from_json(task["retryConfig"], base=retry_policy(queue),
                                             field="task.retryConfig").to_json()
    return TaskRecord(name=name, queue=queue["name"], http_request=http_request, schedule_us=schedule_us,
                      create_us=now_us - now_us % MICROS, dispatch_deadline_us=deadline_us,
                      retry_config=retry_config)


def check_http_request(http: Any) -> dict:
    """An HttpRequest, checked, with its method named and its body in standard base64."""
    if not isinstance(http, Mapping):
        raise invalid("task.httpRequest must be an object")
    url = http.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid(f"task.httpRequest.url is required and must begin with http:// or https://, got {url!r}")
    if len(url) > MAX_URL_CHARS:
        raise invalid(f"task.httpRequest.url is longer than {MAX_URL_CHARS} characters")
    method = enum_name(HTTP_METHOD, http.get("httpMethod") or "POST", "task.httpRequest.httpMethod")
    if method not in HTTP_METHOD:
        raise invalid(f"task.httpRequest.httpMethod {method!r} is not one of {', '.join(HTTP_METHOD)}")
    if method == "HTTP_METHOD_UNSPECIFIED":
        method = "POST"
    checked: dict[str, Any] = {"url": url, "httpMethod": method}
    headers = http.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in headers.items()):
        raise invalid("task.httpRequest.headers must map header names to string values")
    if headers:
        checked["headers"] = dict(headers)
    if http.get("body"):
        if method not in BODY_METHODS:
            raise invalid(f"task.httpRequest.body is allowed only with POST, PUT or PATCH, not {method}")
        checked["body"] = base64.b64encode(decode_base64(http["body"], "task.httpRequest.body")).decode("ascii")
    oauth, oidc = http.get("oauthToken"), http.get("oidcToken")
    if oauth and oidc:
        raise invalid("task.httpRequest takes one of oauthToken and oidcToken, not both")
    for key, token in (("oauthToken", oauth), ("oidcToken", oidc)):
        if token:
            if not token.get("serviceAccountEmail"):
                raise invalid(f"task.httpRequest.{key}.serviceAccountEmail is required")
            checked[key] = dict(token)
    return checked


def decode_base64(text: Any, field: str) -> bytes:
    try:
        return decode_bytes(text)
    except ValueError:
        raise invalid(f"{field} must be base64 (a proto3 JSON bytes value)") from None


def render_task(record: TaskRecord, view: str = "BASIC") -> dict:
    """The Task JSON of a record in a view (BASIC or FULL)."""
    view = "FULL" if view == "FULL" else "BASIC"
    http_request = dict(record.http_request)
    if view == "BASIC":
        http_request.pop("body", None)
    task: dict[str, Any] = {"name": record.name, "httpRequest": http_request,
                            "scheduleTime": format_timestamp(record.schedule_us),
                            "createTime": format_timestamp(record.create_us),
                            "dispatchDeadline": format_duration(record.dispatch_deadline_us)}
    if record.dispatch_count:
        task["dispatchCount"] = record.dispatch_count
    if record.response_count:
        task["responseCount"] = record.response_count
    if record.first_attempt is not None:
        task["firstAttempt"] = {"dispatchTime": format_timestamp(record.first_attempt.dispatch_us)}
    if record.last_attempt is not None:
        task["lastAttempt"] = render_attempt(record.last_attempt)
    task["view"] = view
    if record.retry_config:
        task["retryConfig"] = dict(record.retry_config)
    return task


def render_attempt(attempt: Attempt) -> dict:
    shown: dict[str, Any] = {"scheduleTime": format_timestamp(attempt.schedule_us),
                             "dispatchTime": format_timestamp(attempt.dispatch_us)}
    if attempt.response_us is not None:
        shown["responseTime"] = format_timestamp(attempt.response_us)
    if attempt.response_status is not None:
        code, message = attempt.response_status
        status: dict[str, Any] = {}
        if code:
            status["code"] = code
        if message:
            status["message"] = message
        shown["responseStatus"] = status
    return shown


# --- dispatch ------------------------------------------------------------------------------------


def dispatch_request(record: TaskRecord) -> dict:
    """The HTTP request the task's next attempt sends (`record` as it stands before that
    attempt), as HttpRequest JSON with the headers Cloud Tasks adds: User-Agent, Authorization
    from the task's token, and the X-CloudTasks-* headers its guide to HTTP target handlers lists
    (https://cloud.google.com/tasks/docs/creating-http-target-tasks): queue and task id, retries
    so far, answers so far, the schedule time in seconds since the epoch, and the HTTP status the
    previous attempt got. The token fields stay in the request as the task gave them, with their
    documented defaults filled in (scope: cloud-platform; audience: the URL)."""
    http = record.http_request
    token_header = [key for key in ("oauthToken", "oidcToken") if key in http]
    headers = {key: value for key, value in (http.get("headers") or {}).items()
               if key.lower() not in _COMPUTED_HEADERS and not key.lower().startswith(_RESERVED_HEADER_PREFIXES)
               and not (token_header and key.lower() == "authorization")}
    headers["User-Agent"] = USER_AGENT
    request: dict[str, Any] = {"httpMethod": http["httpMethod"], "url": http["url"]}
    if "oauthToken" in http:
        token = {"scope": DEFAULT_OAUTH_SCOPE, **http["oauthToken"]}
        request["oauthToken"] = token
        headers["Authorization"] = f"Bearer {LOCAL_OAUTH_TOKEN_PREFIX}{token['serviceAccountEmail']}"
    if "oidcToken" in http:
        token = {"audience": http["url"], **http["oidcToken"]}
        request["oidcToken"] = token
        headers["Authorization"] = f"Bearer {LOCAL_OIDC_TOKEN_PREFIX}{token['serviceAccountEmail']}"
    seconds, micros = divmod(record.schedule_us, MICROS)
    headers.update({
        "X-CloudTasks-QueueName": short_id(record.queue),
        "X-CloudTasks-TaskName": short_id(record.name),
        "X-CloudTasks-TaskRetryCount": str(record.dispatch_count),
        "X-CloudTasks-TaskExecutionCount": str(record.response_count),
        "X-CloudTasks-TaskETA": f"{seconds}.{micros:06d}",
    })
    previous = record.last_attempt
    if previous is not None and previous.http_status is not None:
        headers["X-CloudTasks-TaskPreviousResponse"] = str(previous.http_status)
    request["headers"] = headers
    if "body" in http:
        request["body"] = http["body"]
    return request


# google.rpc.Code of an HTTP status, as Google maps them (google/rpc/code.proto).
_RPC_CODE_OF_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1, 500: 13, 501: 12, 503: 14,
                     504: 4}
UNAVAILABLE = 14


def attempt_status(http_status: int) -> tuple[int, str]:
    """The google.rpc.Status (code, message) an attempt answered with `http_status` records."""
    if 200 <= http_status < 300:
        return 0, ""
    code = _RPC_CODE_OF_HTTP.get(http_status)
    if code is None:
        # Other 4xx: FAILED_PRECONDITION; other 5xx: INTERNAL; anything else: UNKNOWN.
        code = 9 if 400 <= http_status < 500 else 13 if http_status >= 500 else 2
    return code, f"HTTP status code {http_status}"
