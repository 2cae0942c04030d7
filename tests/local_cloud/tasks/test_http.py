"""The real google-cloud-tasks client against the local Cloud Tasks: a bake's end scheduled and
delivered once, idempotent creation, deletion, retries, Google's errors, and every answer held
against the discovery document."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from google.api_core import exceptions
from google.cloud import tasks_v2

from local_cloud import discovery
from local_cloud.tasks.http import CloudTasksServer, local_client
from local_cloud.tasks.pubsub_target import parse_pubsub_publish
from local_cloud.tasks.resources import LOCAL_OAUTH_TOKEN_PREFIX
from local_cloud.tasks.service import CloudTasksService
from tests.local_cloud.tasks.conftest import LOCATION, PUBLISH_URL, QUEUE, RELEASE_EVENT, SERVICE_ACCOUNT, \
    TOPIC, Blocked, Target, bake_end_task, publish_body


def make_queue(client, **fields) -> tasks_v2.Queue:
    return client.create_queue(parent=LOCATION, queue={"name": QUEUE, **fields})


def test_a_scheduled_bake_end_is_delivered_once_at_its_time(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    client = client_for(server)
    queue = make_queue(client)
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert client.get_queue(name=QUEUE).retry_config.max_attempts == 100

    created = client.create_task(parent=QUEUE, task=bake_end_task("run-1-bake-end", seconds_ahead=0.2))
    assert created.name == f"{QUEUE}/tasks/run-1-bake-end"
    assert created.view == tasks_v2.Task.View.BASIC and not created.http_request.body  # BASIC leaves it out
    assert created.dispatch_count == 0 and created.http_request.http_method == tasks_v2.HttpMethod.POST
    assert client.get_task(request={"name": created.name, "response_view": tasks_v2.Task.View.FULL}) \
        .http_request.body == publish_body()
    assert [task.name for task in client.list_tasks(parent=QUEUE)] == [created.name]

    [request] = target.wait_for(1)
    late = target.times[0] - created.schedule_time.timestamp()
    assert 0 <= late < 1.5, late  # at its scheduleTime, not before
    assert request["httpMethod"] == "POST" and request["url"] == PUBLISH_URL
    assert base64.b64decode(request["body"]) == publish_body()
    headers = request["headers"]
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "Google-Cloud-Tasks"
    # Locally no token is minted: the account the task acts as is recorded, unsigned.
    assert headers["Authorization"] == f"Bearer {LOCAL_OAUTH_TOKEN_PREFIX}{SERVICE_ACCOUNT}"
    assert request["oauthToken"] == {"serviceAccountEmail": SERVICE_ACCOUNT,
                                     "scope": "https://www.googleapis.com/auth/cloud-platform"}
    assert headers["X-CloudTasks-QueueName"] == "bake-ends" and headers["X-CloudTasks-TaskName"] == "run-1-bake-end"
    assert headers["X-CloudTasks-TaskRetryCount"] == "0" and headers["X-CloudTasks-TaskExecutionCount"] == "0"
    eta = created.schedule_time.timestamp()
    assert float(headers["X-CloudTasks-TaskETA"]) == pytest.approx(eta, abs=1e-6)
    # What the wiring into the local broker does with it:
    topic, [message] = parse_pubsub_publish(request)
    assert topic == TOPIC and json.loads(message.data) == RELEASE_EVENT

    assert service.wait_idle(2)
    with pytest.raises(exceptions.NotFound):  # executed, so deleted, as Cloud Tasks does
        client.get_task(name=created.name)
    assert len(target.requests) == 1


def test_creating_a_named_task_twice_answers_409_already_exists(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    client = client_for(server)
    make_queue(client)
    client.create_task(parent=QUEUE, task=bake_end_task("run-2-bake-end", seconds_ahead=60))
    # The REST transport maps 409 to Conflict (AlreadyExists is the gRPC transport's subclass).
    with pytest.raises(exceptions.Conflict):
        client.create_task(parent=QUEUE, task=bake_end_task("run-2-bake-end", seconds_ahead=60))
    status, answer = call(server, "POST", f"{QUEUE}/tasks", {"task": {
        "name": f"{QUEUE}/tasks/run-2-bake-end", "httpRequest": {"url": PUBLISH_URL}}})
    assert status == 409 and answer["error"]["status"] == "ALREADY_EXISTS" and answer["error"]["code"] == 409
    with pytest.raises(exceptions.Conflict):
        make_queue(client)
    # A task executed (or deleted) keeps its name taken: the same bake's end is not run twice.
    client.create_task(parent=QUEUE, task=bake_end_task("run-3-bake-end", seconds_ahead=0))
    target.wait_for(1)
    assert service.wait_idle(2)
    with pytest.raises(exceptions.Conflict):
        client.create_task(parent=QUEUE, task=bake_end_task("run-3-bake-end", seconds_ahead=0))
    client.delete_task(name=f"{QUEUE}/tasks/run-2-bake-end")
    with pytest.raises(exceptions.Conflict):
        client.create_task(parent=QUEUE, task=bake_end_task("run-2-bake-end", seconds_ahead=60))
    assert len(target.requests) == 1


def test_a_task_deleted_before_its_time_is_never_delivered(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    client = client_for(server)
    make_queue(client)
    doomed = client.create_task(parent=QUEUE, task=bake_end_task("cancelled-bake", seconds_ahead=0.15))
    client.delete_task(name=doomed.name)
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=doomed.name)
    with pytest.raises(exceptions.NotFound):
        client.delete_task(name=doomed.name)
    # Tasks are dispatched in scheduleTime order: once a later one is delivered, the deleted one
    # would have been too.
    client.create_task(parent=QUEUE, task=bake_end_task("later-bake", seconds_ahead=0.25))
    [request] = target.wait_for(1)
    assert request["headers"]["X-CloudTasks-TaskName"] == "later-bake"
    assert service.wait_idle(2) and len(target.requests) == 1


def test_a_failed_delivery_is_retried_with_backoff_and_counted(cloud_tasks, client_for):
    second = Blocked(200)
    service, server, target = cloud_tasks(503, second)
    client = client_for(server)
    make_queue(client)
    task = client.create_task(parent=QUEUE, task=bake_end_task("flaky-bake", seconds_ahead=0))
    assert second.entered.wait(5)
    first, retry = target.wait_for(2)
    # The queue's default minBackoff: 0.1 s before the first retry.
    assert target.times[1] - target.times[0] >= 0.099
    assert first["headers"]["X-CloudTasks-TaskRetryCount"] == "0"
    assert retry["headers"]["X-CloudTasks-TaskRetryCount"] == "1"
    assert retry["headers"]["X-CloudTasks-TaskExecutionCount"] == "1"
    assert retry["headers"]["X-CloudTasks-TaskPreviousResponse"] == "503"

    during = client.get_task(name=task.name)  # the second attempt is running
    assert during.dispatch_count == 2 and during.response_count == 1
    assert during.first_attempt.dispatch_time and not during.first_attempt.response_time
    assert during.last_attempt.dispatch_time > during.first_attempt.dispatch_time
    assert not during.last_attempt.response_time  # not answered yet
    status, raw = call(server, "GET", task.name)
    assert status == 200 and raw["dispatchCount"] == 2 and raw["responseCount"] == 1
    assert discovery.response_errors("cloudtasks.projects.locations.queues.tasks.get", raw, "v2") == []

    second.release.set()
    assert service.wait_idle(5)
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=task.name)
    assert len(target.requests) == 2


def test_a_failed_attempt_records_its_status_until_the_retry(cloud_tasks, client_for):
    service, server, target = cloud_tasks(ConnectionRefusedError("nobody listens"), 404)
    client = client_for(server)
    make_queue(client, retry_config={"min_backoff": timedelta(seconds=30)})
    task = client.create_task(parent=QUEUE, task=bake_end_task("unreachable", seconds_ahead=0))
    target.wait_for(1)
    assert service.wait_idle(2)  # the retry is 30 s away: nothing due, nothing running
    waiting = client.get_task(name=task.name)
    assert waiting.dispatch_count == 1 and waiting.response_count == 0  # no answer: not a response
    status = waiting.last_attempt.response_status
    assert status.code == 14 and "nobody listens" in status.message  # UNAVAILABLE
    assert waiting.last_attempt.response_time >= waiting.last_attempt.dispatch_time
    assert waiting.schedule_time.timestamp() >= waiting.last_attempt.dispatch_time.timestamp() + 29.9
    client.delete_task(name=task.name)
    assert len(target.requests) == 1


def test_a_task_scheduled_in_the_past_is_dispatched_at_once(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    client = client_for(server)
    make_queue(client)
    before = time.time()
    task = client.create_task(parent=QUEUE, task=bake_end_task("overdue", seconds_ahead=-3600))
    # "If schedule_time is not set or is in the past then Cloud Tasks will set it to the current time."
    assert task.schedule_time.timestamp() >= before - 0.01
    target.wait_for(1, timeout=2)
    assert target.times[0] - before < 1.0
    untimed = client.create_task(parent=QUEUE, task={"http_request": {"url": "http://127.0.0.1:9/x"}})
    assert untimed.name.startswith(f"{QUEUE}/tasks/")  # a name is made for a task without one
    target.wait_for(2, timeout=2)


BAD_TASKS = {
    "unknown field": ({"task": {"httpRequest": {"url": PUBLISH_URL}, "colour": "red"}}, "task.colour: unknown field"),
    "unknown nested field": ({"task": {"httpRequest": {"url": PUBLISH_URL, "verb": "POST"}}},
                             "task.httpRequest.verb: unknown field"),
    "wrong type": ({"task": {"httpRequest": {"url": 42}}}, "task.httpRequest.url: expected a JSON string"),
    "headers not strings": ({"task": {"httpRequest": {"url": PUBLISH_URL, "headers": {"X-N": 1}}}},
                            'task.httpRequest.headers["X-N"]'),
    "no task": ({}, "task: required field missing"),
    "no url": ({"task": {"httpRequest": {"httpMethod": "POST"}}}, "task.httpRequest.url: required field missing"),
    "enum name unknown": ({"task": {"httpRequest": {"url": PUBLISH_URL, "httpMethod": "FETCH"}}},
                          "task.httpRequest.httpMethod"),
    "enum number unknown": ({"task": {"httpRequest": {"url": PUBLISH_URL, "httpMethod": 99}}},
                            "task.httpRequest.httpMethod: 99"),
    "bad scheduleTime": ({"task": {"httpRequest": {"url": PUBLISH_URL}, "scheduleTime": "tomorrow"}},
                         "RFC 3339"),
    "too far ahead": ({"task": {"httpRequest": {"url": PUBLISH_URL}, "scheduleTime": "2999-01-01T00:00:00Z"}},
                      "30 days"),
    "body not base64": ({"task": {"httpRequest": {"url": PUBLISH_URL, "body": "not base64!"}}}, "base64"),
    "body with GET": ({"task": {"httpRequest": {"url": PUBLISH_URL, "httpMethod": "GET", "body": "e30="}}},
                      "only with POST"),
    "url not http": ({"task": {"httpRequest": {"url": "ftp://example.com/x"}}}, "http:// or https://"),
    "two tokens": ({"task": {"httpRequest": {"url": PUBLISH_URL, "oauthToken": {"serviceAccountEmail": "a@b"},
                                             "oidcToken": {"serviceAccountEmail": "a@b"}}}}, "not both"),
    "name in another queue": ({"task": {"name": f"{LOCATION}/queues/other/tasks/t",
                                        "httpRequest": {"url": PUBLISH_URL}}}, "parent queue"),
    "bad task id": ({"task": {"name": f"{QUEUE}/tasks/has space", "httpRequest": {"url": PUBLISH_URL}}}, "TASK_ID"),
    "app engine task": ({"task": {"appEngineHttpRequest": {"relativeUri": "/x"}}}, "not supported"),
    "deadline too short": ({"task": {"httpRequest": {"url": PUBLISH_URL}, "dispatchDeadline": "1s"}}, "15s"),
    "not an object": ([1, 2], "expected a JSON object"),
}


def test_bad_create_task_bodies_are_refused_400_invalid_argument(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    make_queue(client_for(server))
    for case, (body, phrase) in BAD_TASKS.items():
        status, answer = call(server, "POST", f"{QUEUE}/tasks", body)
        assert status == 400, (case, answer)
        assert answer["error"]["status"] == "INVALID_ARGUMENT" and answer["error"]["code"] == 400, case
        assert phrase in answer["error"]["message"], (case, answer)
    assert service.list_tasks(QUEUE) == {}


def test_bad_queues_and_requests_are_refused(cloud_tasks):
    _, server, _ = cloud_tasks()
    for body, phrase in [({"name": QUEUE, "retryConfig": {"maxAttempts": "100"}}, "retryConfig.maxAttempts"),
                         ({"name": QUEUE, "size": 3}, "size: unknown field"),
                         ({}, "queue.name is required"),
                         ({"name": f"{QUEUE}/x"}, "QUEUE_ID"),
                         ({"name": QUEUE, "retryConfig": {"minBackoff": "10s", "maxBackoff": "1s"}}, "must not exceed"),
                         ({"name": QUEUE, "httpTarget": {"httpMethod": "POST"}}, "not supported")]:
        status, answer = call(server, "POST", f"{LOCATION}/queues", body)
        assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT", (body, answer)
        assert phrase in answer["error"]["message"], (body, answer)
    status, answer = call(server, "POST", f"{LOCATION}/queues", raw=b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, answer = call(server, "GET", f"{LOCATION}/queues?colour=red")
    assert status == 400 and 'Unknown name "colour"' in answer["error"]["message"]
    status, answer = call(server, "GET", f"{LOCATION}/queues?pageSize=-1")
    assert status == 400 and "pageSize" in answer["error"]["message"]


def test_an_unknown_queue_or_task_is_404_not_found(cloud_tasks, client_for):
    _, server, _ = cloud_tasks()
    client = client_for(server)
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=QUEUE)
    with pytest.raises(exceptions.NotFound):
        client.create_task(parent=QUEUE, task=bake_end_task("orphan"))
    with pytest.raises(exceptions.NotFound):
        list(client.list_tasks(parent=QUEUE))
    for verb, path in [("POST", f"{QUEUE}/tasks"), ("GET", f"{QUEUE}/tasks/t"), ("DELETE", f"{QUEUE}/tasks/t"),
                       ("GET", QUEUE), ("GET", f"{QUEUE}:purge"), ("PUT", QUEUE)]:
        status, answer = call(server, verb, path, {"task": {"httpRequest": {"url": PUBLISH_URL}}}
                              if verb == "POST" else None)
        assert status == 404, (verb, path, answer)
        assert answer == {"error": {"code": 404, "message": answer["error"]["message"], "status": "NOT_FOUND"}}


def test_every_answer_matches_the_discovery_document(cloud_tasks, client_for):
    service, server, target = cloud_tasks()
    client = client_for(server)
    method = "cloudtasks.projects.locations.queues."
    status, queue = call(server, "POST", f"{LOCATION}/queues",
                         {"name": QUEUE, "retryConfig": {"maxAttempts": 5, "minBackoff": "0.5s"}})
    assert status == 200 and queue["retryConfig"] == {"maxAttempts": 5, "minBackoff": "0.500s",
                                                      "maxBackoff": "3600s", "maxDoublings": 16}
    answers = {"create": queue}
    tomorrow = datetime.fromtimestamp(int(time.time()) + 86400, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for task_id in ("a", "b", "c"):
        status, answers["tasks.create"] = call(server, "POST", f"{QUEUE}/tasks", {
            "responseView": "FULL", "task": {"name": f"{QUEUE}/tasks/{task_id}", "scheduleTime": tomorrow,
                                             "httpRequest": {"url": PUBLISH_URL, "body": "e30=", "oauthToken": {
                                                 "serviceAccountEmail": SERVICE_ACCOUNT}}}})
        assert status == 200
    assert answers["tasks.create"]["view"] == "FULL" and answers["tasks.create"]["httpRequest"]["body"] == "e30="
    _, answers["get"] = call(server, "GET", QUEUE)
    _, answers["list"] = call(server, "GET", f"{LOCATION}/queues")
    _, answers["tasks.get"] = call(server, "GET", f"{QUEUE}/tasks/a?responseView=FULL")
    _, answers["tasks.list"] = call(server, "GET", f"{QUEUE}/tasks?pageSize=2")
    status, answers["tasks.delete"] = call(server, "DELETE", f"{QUEUE}/tasks/a")
    assert status == 200 and answers["tasks.delete"] == {}
    for name, answer in answers.items():
        assert discovery.response_errors(method + name, answer, "v2") == [], name
    assert answers["tasks.get"]["scheduleTime"] == tomorrow
    assert "." not in answers["tasks.get"]["createTime"]  # truncated to the second
    page = answers["tasks.list"]
    assert [task["name"].rsplit("/", 1)[1] for task in page["tasks"]] == ["a", "b"] and page["nextPageToken"]
    _, rest = call(server, "GET", f"{QUEUE}/tasks?pageSize=2&pageToken={page['nextPageToken']}")
    assert [task["name"].rsplit("/", 1)[1] for task in rest["tasks"]] == ["c"] and "nextPageToken" not in rest
    # Asked for numbers (as the client libraries ask), enums come as numbers, and parse back.
    _, numeric = call(server, "GET", f"{QUEUE}/tasks/b?%24alt=json%3Benum-encoding%3Dint")
    assert numeric["view"] == 1 and numeric["httpRequest"]["httpMethod"] == 1
    assert client.get_task(name=f"{QUEUE}/tasks/b").view == tasks_v2.Task.View.BASIC
    assert [task.name for task in client.list_tasks(request={"parent": QUEUE, "page_size": 1})] == \
        [f"{QUEUE}/tasks/b", f"{QUEUE}/tasks/c"]
    assert target.requests == []


def test_the_rest_transport_built_for_http_also_works(cloud_tasks):
    _, server, _ = cloud_tasks()
    client = local_client(f"127.0.0.1:{server.port}")
    assert client.create_queue(parent=LOCATION, queue={"name": QUEUE}).name == QUEUE
    assert client.get_queue(name=QUEUE).rate_limits.max_dispatches_per_second == 500


def test_only_loopback_addresses_are_served():
    service = CloudTasksService(Target())
    try:
        for host in ("0.0.0.0", "192.168.1.10", "example.com"):
            with pytest.raises(ValueError, match="loopback"):
                CloudTasksServer(service, host=host)
    finally:
        service.close()


def call(server: CloudTasksServer, verb: str, path: str, body=None, raw: bytes | None = None):
    """One raw REST call: (status, JSON answer)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    answer = requests.request(verb, f"{server.url}/v2/{path}", data=data, timeout=5,
                              headers={"Content-Type": "application/json"} if data is not None else {})
    return answer.status_code, answer.json()
