"""The pure parts: Cloud Tasks' timestamps, durations and enums, RetryConfig's backoff and its
limits, the checks of a task, and a task's request read back as a Pub/Sub publish."""
from __future__ import annotations

import base64
import json

import pytest
from google.cloud import tasks_v2
from googleapiclient.discovery_cache import get_static_doc

from local_cloud.tasks import NotAPubsubPublish, PubsubMessage, parse_pubsub_publish
from local_cloud.tasks.resources import attempt_status, check_http_request, dispatch_request, new_queue, new_task, \
    render_task
from local_cloud.tasks.retry import RetryPolicy
from local_cloud.tasks.state import Attempt, TaskStore
from local_cloud.tasks.wire import HTTP_METHOD, QUEUE_STATE, SCHEMA_FIELDS, TASK_VIEW, URI_OVERRIDE_ENFORCE_MODE, \
    URI_SCHEME, enums_to_names, enums_to_numbers, format_duration, format_timestamp, parse_duration, parse_timestamp
from model_server.errors import ApiError
from tests.local_cloud.tasks.conftest import LOCATION, PUBLISH_URL, QUEUE, TOPIC

S = 1_000_000


# --- wire formats ------------------------------------------------------------------------------------


def test_timestamps_are_rfc3339_truncated_to_the_microsecond():
    assert parse_timestamp("1970-01-01T00:00:00Z") == 0
    assert parse_timestamp("2030-01-01T00:00:00.123456789Z") == parse_timestamp("2030-01-01T00:00:00Z") + 123456
    assert parse_timestamp("2030-01-01T02:00:00.5+02:00") == parse_timestamp("2030-01-01T00:00:00.500Z")
    assert parse_timestamp("2029-12-31T19:00:00-05:00") == parse_timestamp("2030-01-01T00:00:00Z")
    for text in ("2030-01-01", "2030-01-01T00:00:00", "2030-02-30T00:00:00Z", "2030-01-01T00:00:60Z", 1893456000,
                 "2030-01-01T00:00:00.Z", "2030-01-01 00:00:00Z x"):
        with pytest.raises(ApiError) as refused:
            parse_timestamp(text, "task.scheduleTime")
        assert refused.value.status == "INVALID_ARGUMENT" and "task.scheduleTime" in refused.value.message
    # Written as protobuf's JSON printer writes them: 0, 3 or 6 fractional digits, Z.
    assert format_timestamp(parse_timestamp("2030-01-01T00:00:00Z")) == "2030-01-01T00:00:00Z"
    assert format_timestamp(parse_timestamp("2030-01-01T00:00:00.2Z")) == "2030-01-01T00:00:00.200Z"
    assert format_timestamp(parse_timestamp("2030-01-01T00:00:00.000123Z")) == "2030-01-01T00:00:00.000123Z"


def test_durations_are_seconds_with_an_s():
    assert parse_duration("600s") == 600 * S and parse_duration("0.1s") == S // 10
    assert parse_duration("-1.5s") == -1_500_000 and parse_duration("0.000000001s") == 0
    assert [format_duration(us) for us in (3600 * S, S // 10, 1, 0)] == ["3600s", "0.100s", "0.000001s", "0s"]
    for text in ("600", "10m", "s", "1.s", 600):
        with pytest.raises(ApiError):
            parse_duration(text)


def test_the_enum_numbers_are_the_protos():
    assert HTTP_METHOD == tuple(member.name for member in sorted(tasks_v2.HttpMethod, key=int))
    assert TASK_VIEW == tuple(member.name for member in sorted(tasks_v2.Task.View, key=int))
    assert QUEUE_STATE == tuple(member.name for member in sorted(tasks_v2.Queue.State, key=int))
    assert URI_SCHEME == tuple(member.name for member in sorted(tasks_v2.UriOverride.Scheme, key=int))
    assert URI_OVERRIDE_ENFORCE_MODE == tuple(
        member.name for member in sorted(tasks_v2.UriOverride.UriOverrideEnforceMode, key=int))
    for names in (HTTP_METHOD, TASK_VIEW, QUEUE_STATE, URI_SCHEME, URI_OVERRIDE_ENFORCE_MODE):
        assert [int(i) for i in range(len(names))] == list(range(len(names)))


def test_every_enum_of_the_served_schemas_is_in_the_table():
    """Walk the discovery document from the schemas served: each enum field it reaches is in
    SCHEMA_FIELDS with the document's names, so a number is never left unconverted."""
    schemas = json.loads(get_static_doc("cloudtasks", "v2"))["schemas"]
    seen, todo = set(), ["CreateTaskRequest", "Queue", "ListTasksResponse", "ListQueuesResponse"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for field, spec in schemas[name].get("properties", {}).items():
            ref = spec.get("$ref") or spec.get("items", {}).get("$ref")
            if "enum" in spec:
                assert SCHEMA_FIELDS[name][field] == tuple(spec["enum"]), (name, field)
            elif ref:
                todo.append(ref)
                if name in SCHEMA_FIELDS and ref in SCHEMA_FIELDS:
                    assert SCHEMA_FIELDS[name][field].rstrip("[]") == ref, (name, field)
    assert {"Task", "HttpRequest", "HttpTarget", "UriOverride"} <= seen


def test_enums_by_number_become_names_and_back():
    body = {"responseView": 2, "task": {"httpRequest": {"url": "https://x", "httpMethod": 1}, "view": "BASIC"}}
    named = enums_to_names("CreateTaskRequest", body)
    assert named == {"responseView": "FULL", "task": {"httpRequest": {"url": "https://x", "httpMethod": "POST"},
                                                      "view": "BASIC"}}
    assert body["task"]["httpRequest"]["httpMethod"] == 1  # the original is left as it was
    listing = {"tasks": [{"name": "n", "view": "FULL", "httpRequest": {"httpMethod": "GET"}}]}
    assert enums_to_numbers("ListTasksResponse", listing) == {
        "tasks": [{"name": "n", "view": 2, "httpRequest": {"httpMethod": 2}}]}
    with pytest.raises(ApiError, match=r"task.httpRequest.httpMethod: 8 is not a value"):
        enums_to_names("CreateTaskRequest", {"task": {"httpRequest": {"httpMethod": 8}}})


# --- retries ------------------------------------------------------------------------------------------


def test_backoff_doubles_then_grows_linearly_then_stays_at_max_backoff():
    # The reference's example: 10s, 300s and 3 doublings.
    policy = RetryPolicy.from_json({"minBackoff": "10s", "maxBackoff": "300s", "maxDoublings": 3})
    assert [policy.backoff_us(n) // S for n in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300, 300]
    defaults = RetryPolicy.from_json(None)
    assert [defaults.backoff_us(n) / S for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert defaults.backoff_us(17) == 3600 * S and defaults.backoff_us(10_000) == 3600 * S
    assert defaults.to_json() == {"maxAttempts": 100, "minBackoff": "0.100s", "maxBackoff": "3600s",
                                  "maxDoublings": 16}


def test_a_task_is_given_up_once_every_limit_set_is_reached():
    default = RetryPolicy()
    assert not default.gives_up(99, 0, 10**12) and default.gives_up(100, 0, 0)
    unlimited = RetryPolicy.from_json({"maxAttempts": -1})
    assert not unlimited.gives_up(10**6, 0, 10**15)
    by_time = RetryPolicy.from_json({"maxAttempts": -1, "maxRetryDuration": "60s"})
    assert not by_time.gives_up(5, 0, 59 * S) and by_time.gives_up(5, 0, 60 * S)
    both = RetryPolicy.from_json({"maxAttempts": 3, "maxRetryDuration": "60s"})
    assert not both.gives_up(3, 0, 30 * S) and not both.gives_up(2, 0, 90 * S) and both.gives_up(3, 0, 60 * S)


def test_retry_configs_are_checked_and_completed():
    queue_policy = RetryPolicy.from_json({"maxAttempts": 5, "minBackoff": "1s"})
    task_policy = RetryPolicy.from_json({"maxBackoff": "2s"}, base=queue_policy)
    assert (task_policy.max_attempts, task_policy.min_backoff_us, task_policy.max_backoff_us) == (5, S, 2 * S)
    for config, phrase in [({"maxAttempts": -2}, "maxAttempts"), ({"maxDoublings": -1}, "maxDoublings"),
                           ({"minBackoff": "-1s"}, "negative"), ({"minBackoff": "5s", "maxBackoff": "1s"}, "exceed"),
                           ({"maxBackoff": "an hour"}, "duration")]:
        with pytest.raises(ApiError, match=phrase):
            RetryPolicy.from_json(config)


# --- queues and tasks -----------------------------------------------------------------------------------


def test_a_new_queue_reports_the_defaults():
    assert new_queue(LOCATION, {"name": QUEUE}) == {
        "name": QUEUE, "state": "RUNNING",
        "rateLimits": {"maxDispatchesPerSecond": 500, "maxBurstSize": 100, "maxConcurrentDispatches": 1000},
        "retryConfig": {"maxAttempts": 100, "minBackoff": "0.100s", "maxBackoff": "3600s", "maxDoublings": 16}}
    with pytest.raises(ApiError, match="parent location"):
        new_queue("projects/p/locations/elsewhere", {"name": QUEUE})


def test_a_task_is_completed_and_shown_as_cloud_tasks_shows_it():
    queue = new_queue(LOCATION, {"name": QUEUE})
    now = parse_timestamp("2030-01-01T00:00:00.250Z")
    record = new_task(queue, {"task": {"httpRequest": {"url": PUBLISH_URL, "body": "e30", "httpMethod": 0}}},
                      now, "123")
    assert record.name == f"{QUEUE}/tasks/123" and record.schedule_us == now
    assert record.http_request == {"url": PUBLISH_URL, "httpMethod": "POST", "body": "e30="}  # padded
    shown = render_task(record)
    assert shown == {"name": record.name, "httpRequest": {"url": PUBLISH_URL, "httpMethod": "POST"},
                     "scheduleTime": "2030-01-01T00:00:00.250Z", "createTime": "2030-01-01T00:00:00Z",
                     "dispatchDeadline": "600s", "view": "BASIC"}
    assert render_task(record, "FULL")["httpRequest"]["body"] == "e30="
    own = new_task(queue, {"task": {"httpRequest": {"url": PUBLISH_URL}, "retryConfig": {"maxAttempts": 3}}}, now, "9")
    assert render_task(own)["retryConfig"]["maxAttempts"] == 3
    assert check_http_request({"url": "https://x", "body": "-_8", "httpMethod": "PUT"})["body"] == "+/8="


def test_an_attempt_sends_the_headers_cloud_tasks_adds():
    queue = new_queue(LOCATION, {"name": QUEUE})
    record = new_task(queue, {"task": {"name": f"{QUEUE}/tasks/t", "httpRequest": {
        "url": "https://run.example/x", "headers": {"Host": "evil", "authorization": "Basic x", "X-Mine": "1"},
        "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com"}}}}, 5 * S, "unused")
    first = dispatch_request(record)
    assert first["headers"] == {"X-Mine": "1", "User-Agent": "Google-Cloud-Tasks",
                                "Authorization": "Bearer local-unverified-oidc-token:sa@p.iam.gserviceaccount.com",
                                "X-CloudTasks-QueueName": "bake-ends", "X-CloudTasks-TaskName": "t",
                                "X-CloudTasks-TaskRetryCount": "0", "X-CloudTasks-TaskExecutionCount": "0",
                                "X-CloudTasks-TaskETA": "5.000000"}
    assert first["oidcToken"] == {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com",
                                  "audience": "https://run.example/x"}
    from dataclasses import replace
    failed = replace(record, dispatch_count=1, response_count=1,
                     last_attempt=Attempt(5 * S, 5 * S, 6 * S, attempt_status(500), 500))
    assert dispatch_request(failed)["headers"]["X-CloudTasks-TaskPreviousResponse"] == "500"


def test_http_statuses_become_rpc_statuses():
    assert attempt_status(204) == (0, "")
    assert [attempt_status(status)[0] for status in (400, 401, 403, 404, 409, 429, 500, 503, 504, 418, 502)] == \
        [3, 16, 7, 5, 10, 8, 13, 14, 4, 9, 13]


def test_a_task_name_stays_taken_for_a_day_after_it_is_gone():
    store = TaskStore()
    queue = new_queue(LOCATION, {"name": QUEUE})
    record = new_task(queue, {"task": {"name": f"{QUEUE}/tasks/t", "httpRequest": {"url": PUBLISH_URL}}}, 0, "x")
    store.add_task(record)
    assert store.name_taken(record.name, 0)
    store.remove_task(record.name, 0)
    assert store.task(record.name) is None and store.name_taken(record.name, 24 * 3600 * S - 1)
    assert not store.name_taken(record.name, 24 * 3600 * S)


# --- Pub/Sub publish targets ------------------------------------------------------------------------------


def _publish(body: object, url: str = PUBLISH_URL, method: str = "POST") -> dict:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {"httpMethod": method, "url": url, "body": base64.b64encode(raw).decode()}


def test_a_publish_request_is_read_back_as_topic_and_messages():
    data = base64.b64encode(b'{"runId": "r1"}').decode()
    publish = parse_pubsub_publish(_publish({"messages": [{"data": data, "attributes": {"stage": "release"}},
                                                          {"attributes": {"only": "attributes"}, "orderingKey": "k"}]}))
    assert publish.topic == TOPIC
    assert publish.messages == [PubsubMessage(b'{"runId": "r1"}', {"stage": "release"}),
                                PubsubMessage(b"", {"only": "attributes"}, "k")]
    topic, messages = publish
    assert topic == TOPIC and len(messages) == 2


@pytest.mark.parametrize("request_, phrase", [
    (_publish({"messages": [{"data": "e30="}]}, url="https://pubsub.googleapis.com/v1/projects/p/topics/t"),
     "is not Pub/Sub's publish method"),
    (_publish({"messages": [{"data": "e30="}]}, url="https://example.com/v1/projects/p/topics/t:publish"),
     "is not Pub/Sub's publish method"),
    (_publish({"messages": [{"data": "e30="}]}, url="http://pubsub.googleapis.com/v1/projects/p/topics/t:publish"),
     "is not Pub/Sub's publish method"),
    (_publish({"messages": [{"data": "e30="}]}, method="PUT"), "with POST"),
    ({"url": PUBLISH_URL, "httpMethod": "POST"}, "no body"),
    ({"url": PUBLISH_URL, "body": "%%%"}, "not base64"),
    (_publish(b"not json"), "not a PublishRequest JSON"),
    (_publish({"messages": [{"data": "e30=", "colour": "red"}]}), "messages[0].colour: unknown field"),
    (_publish({"messages": [{"data": 5}]}), "messages[0].data: expected a JSON string"),
    (_publish({"messages": []}), "messages: required field missing"),
    (_publish({"messages": [{"data": "#!"}]}), "messages[0].data is not base64"),
])
def test_anything_but_a_publish_is_refused_with_a_reason(request_, phrase):
    with pytest.raises(NotAPubsubPublish) as refused:
        parse_pubsub_publish(request_)
    assert phrase in str(refused.value)
