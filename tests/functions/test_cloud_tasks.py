"""Contract tests of the Cloud Tasks scheduler (functions/cloud_tasks.py), without a cloud account.

The scheduler drives the real google-cloud-tasks client (REST transport over plain http,
anonymous credentials) against the local Cloud Tasks (local_cloud.tasks: CloudTasksService behind
its CloudTasksServer, which holds every body against the cloudtasks v2 discovery document). The
stand-in's `deliver` plays Pub/Sub: it receives the HTTP request Cloud Tasks sends when the task
falls due and reads it back as the publish it stands for.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from functions import request_bodies
from functions.cloud_tasks import CloudTasksScheduler
from functions.platform import NotFound, TransientError
from local_cloud.tasks.http import CloudTasksServer
from local_cloud.tasks.pubsub_target import parse_pubsub_publish
from local_cloud.tasks.resources import LOCAL_OAUTH_TOKEN_PREFIX
from local_cloud.tasks.service import CloudTasksService
from local_cloud.tasks.wire import parse_timestamp
from model_server.errors import ApiError
from tests.fakes.gcp_project import CONFIG, PROJECT

PUBLISHER = f"mlrelay-release-publisher@{PROJECT}.iam.gserviceaccount.com"
TASKS_CONFIG = replace(CONFIG, tasks_queue="mlrelay-release", tasks_service_account=PUBLISHER,
                       release_topic="mlrelay-release")
QUEUE = request_bodies.tasks_queue_path(TASKS_CONFIG)
RUN = "run-20261127-050000-abcdef0123"
TASK_ID = f"bake-end-{RUN}"
MESSAGE = {"run_id": RUN, "candidate": "7002", "champion": "111", "bake_started": "2026-11-27T05:30:00+00:00",
           "model_version": f"projects/{PROJECT}/locations/us-central1/models/babyweight@2"}
AHEAD_S = 0.2


class PubsubStandIn:
    """The `deliver` of the local Cloud Tasks: records each request (and when), answers 200."""

    def __init__(self):
        self.requests: list[dict] = []
        self.times: list[float] = []
        self._changed = threading.Condition()

    def __call__(self, request: dict) -> int:
        with self._changed:
            self.requests.append(request)
            self.times.append(time.time())
            self._changed.notify_all()
        return 200

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{count} deliveries expected within {timeout} s, got {len(self.requests)}")
            return list(self.requests)


class FlakyService(CloudTasksService):
    """Answers the next create_task calls with the errors queued in `refusals`."""

    def __init__(self, deliver):
        super().__init__(deliver)
        self.refusals: list[ApiError] = []

    def create_task(self, parent, request):
        if self.refusals:
            raise self.refusals.pop(0)
        return super().create_task(parent, request)


@pytest.fixture
def tasks():
    """(service, scheduler, Pub/Sub stand-in): the release queue exists; everything closed after."""
    pubsub = PubsubStandIn()
    service = FlakyService(pubsub)
    server = CloudTasksServer(service)
    try:
        service.create_queue(request_bodies.location_parent(TASKS_CONFIG), {"name": QUEUE})
        scheduler = CloudTasksScheduler.local(replace(TASKS_CONFIG, local_tasks_api=server.url))
        yield service, scheduler, pubsub
    finally:
        server.close()


def _soon() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=AHEAD_S)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def test_the_task_is_created_under_the_queue_with_its_name_time_url_token_and_body(tasks):
    service, scheduler, _ = tasks
    # later than _soon(): the first call loads the client library, which may take longer than
    # AHEAD_S, and a scheduleTime already past is stored as the time of creation
    at = _soon() + timedelta(seconds=30)
    assert scheduler._client._client is None  # the client library is loaded on first use only
    assert scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, at) is True

    (task,) = service.list_tasks(QUEUE, "FULL")["tasks"]
    assert task["name"] == f"projects/{PROJECT}/locations/{CONFIG.region}/queues/mlrelay-release/tasks/{TASK_ID}"
    assert parse_timestamp(task["scheduleTime"]) == _micros(at)  # to the microsecond
    http = task["httpRequest"]
    assert http["url"] == f"https://pubsub.googleapis.com/v1/projects/{PROJECT}/topics/mlrelay-release:publish"
    assert http["httpMethod"] == "POST" and http["headers"] == {"Content-Type": "application/json"}
    assert http["oauthToken"] == {"serviceAccountEmail": PUBLISHER, "scope": "https://www.googleapis.com/auth/pubsub"}
    publish = json.loads(base64.b64decode(http["body"]))
    (message,) = publish["messages"]
    assert json.loads(base64.b64decode(message["data"])) == MESSAGE
    assert message["attributes"] == {"origin": "bake-end"}


def test_a_second_schedule_of_the_same_task_is_refused_as_already_done(tasks):
    service, scheduler, _ = tasks
    at = _soon() + timedelta(seconds=30)  # not due during the test
    assert scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, at) is True
    # a redelivered event: the server answers 409 ALREADY_EXISTS, the scheduler False
    assert scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, {**MESSAGE, "champion": None}, at) is False
    assert scheduler.schedule_publish(TASK_ID + "-other", TASKS_CONFIG.release_topic, MESSAGE, at) is True
    names = [task["name"].rsplit("/", 1)[1] for task in service.list_tasks(QUEUE, "FULL")["tasks"]]
    assert sorted(names) == [TASK_ID, TASK_ID + "-other"]
    (first,) = [t for t in service.list_tasks(QUEUE, "FULL")["tasks"] if t["name"].endswith("/" + TASK_ID)]
    carried = json.loads(base64.b64decode(json.loads(base64.b64decode(first["httpRequest"]["body"]))["messages"][0]
                                          ["data"]))
    assert carried == MESSAGE  # the first schedule stands


def test_at_its_time_the_task_calls_pubsub_publish_with_the_message(tasks):
    _, scheduler, pubsub = tasks
    at = _soon()
    scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, at)
    (request,) = pubsub.wait_for(1)
    assert pubsub.times[0] >= at.timestamp() - 0.005  # not before it falls due
    assert request["headers"]["Authorization"] == f"Bearer {LOCAL_OAUTH_TOKEN_PREFIX}{PUBLISHER}"
    assert request["headers"]["X-CloudTasks-TaskName"] == TASK_ID
    publish = parse_pubsub_publish(request)  # also holds the body against pubsub.projects.topics.publish
    assert publish.topic == f"projects/{PROJECT}/topics/{TASKS_CONFIG.release_topic}"
    (message,) = publish.messages
    assert json.loads(message.data) == MESSAGE and message.attributes == {"origin": "bake-end"}
    time.sleep(0.1)
    assert len(pubsub.requests) == 1  # answered 200: executed once, not again


@pytest.mark.parametrize("status", ["UNAVAILABLE", "INTERNAL"])
def test_a_transient_refusal_raises_transient_and_the_retry_schedules(tasks, status):
    service, scheduler, _ = tasks
    service.refusals.append(ApiError(status, "the backend is busy"))
    at = _soon() + timedelta(seconds=30)
    with pytest.raises(TransientError, match="the backend is busy"):
        scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, at)
    assert service.list_tasks(QUEUE) == {}
    assert scheduler.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, at) is True


def test_a_queue_that_does_not_exist_is_not_found(tasks):
    _, scheduler, _ = tasks
    elsewhere = CloudTasksScheduler.local(replace(TASKS_CONFIG, tasks_queue="no-such-queue",
                                                  local_tasks_api=scheduler.config.local_tasks_api))
    with pytest.raises(NotFound, match="no-such-queue"):
        elsewhere.schedule_publish(TASK_ID, TASKS_CONFIG.release_topic, MESSAGE, _soon())
