"""The local Cloud Tasks under test: the service and its HTTP front, the real client library on
the REST transport, and a recording stand-in for the target every dispatch goes to."""
from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from local_cloud.tasks.http import CloudTasksServer
from local_cloud.tasks.service import CloudTasksService

PROJECT = "mlrelay-local"
LOCATION = f"projects/{PROJECT}/locations/us-central1"
QUEUE = f"{LOCATION}/queues/bake-ends"
TOPIC = f"projects/{PROJECT}/topics/mlrelay-release"
PUBLISH_URL = f"https://pubsub.googleapis.com/v1/{TOPIC}:publish"
SERVICE_ACCOUNT = f"mlrelay-tasks@{PROJECT}.iam.gserviceaccount.com"
RELEASE_EVENT = {"runId": "r-20300101-000000-abcd", "decision": "bake-ended"}


def publish_body(event: dict = RELEASE_EVENT, attributes: dict | None = None) -> bytes:
    """A PublishRequest JSON, as the task's body carries it (the raw bytes; JSON gives base64)."""
    message: dict[str, Any] = {"data": base64.b64encode(json.dumps(event).encode()).decode()}
    if attributes:
        message["attributes"] = attributes
    return json.dumps({"messages": [message]}).encode()


def in_seconds(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def bake_end_task(task_id: str, seconds_ahead: float = 0.2, **http: Any) -> dict:
    """A task as the chain creates it: the bake's end, published to the release topic."""
    request = {"url": PUBLISH_URL, "http_method": "POST", "headers": {"Content-Type": "application/json"},
               "body": publish_body(), "oauth_token": {"service_account_email": SERVICE_ACCOUNT}, **http}
    return {"name": f"{QUEUE}/tasks/{task_id}", "schedule_time": in_seconds(seconds_ahead), "http_request": request}


class Target:
    """The `deliver` of the service under test: records each request and answers with the
    statuses it is given in turn (an int, an exception to raise, or a callable of the request),
    then 200."""

    def __init__(self, *answers: Any):
        self.requests: list[dict] = []
        self.times: list[float] = []
        self._answers = list(answers)
        self._changed = threading.Condition()

    def __call__(self, request: dict) -> int:
        with self._changed:
            self.requests.append(request)
            self.times.append(time.time())
            self._changed.notify_all()
            answer = self._answers.pop(0) if self._answers else 200
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The first `count` requests, once they have arrived (fails after `timeout` s)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{count} deliveries expected within {timeout} s, got {len(self.requests)}")
            return list(self.requests[:count])


class Blocked:
    """An answer that holds its attempt until released, so a test can look at a task mid-attempt."""

    def __init__(self, status: int = 200):
        self.status = status
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: dict) -> int:
        self.entered.set()
        if not self.release.wait(5):
            raise TimeoutError("the test never released the attempt")
        return self.status


@pytest.fixture
def cloud_tasks() -> Callable[..., tuple[CloudTasksService, CloudTasksServer, Target]]:
    """A factory: (service, server, target) for a target answering `answers`; closed afterwards."""
    made: list[CloudTasksServer] = []

    def make(*answers: Any) -> tuple[CloudTasksService, CloudTasksServer, Target]:
        target = Target(*answers)
        service = CloudTasksService(target)
        server = CloudTasksServer(service)
        made.append(server)
        return service, server, target

    yield make
    for server in made:
        server.close()


@pytest.fixture
def client_for():
    """The real client library on the REST transport, pointed at a server's plain-http URL."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import tasks_v2

    def make(server: CloudTasksServer):
        return tasks_v2.CloudTasksClient(transport="rest", client_options={"api_endpoint": server.url},
                                         credentials=AnonymousCredentials())

    return make
