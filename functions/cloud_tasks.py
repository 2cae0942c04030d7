"""Cloud Tasks through its own client library, for the cloud and for the local stand-in alike.

The bake's end is a named task on the release queue that publishes to the release topic when it
falls due (request_bodies.publish_task). The cloud uses the client's default transport; the
local cloud serves Cloud Tasks' REST API on 127.0.0.1 (local_cloud/tasks), so the same client is
pointed at it over plain http with anonymous credentials, as the Pub/Sub client is pointed at
the local Pub/Sub. The library is imported on first use (cold start).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from functions import request_bodies
from functions.config import Config
from functions.gcp_adapters import CALL_TIMEOUT_S, _LazyClient, translated_errors
from functions.platform import AlreadyExists


def plain_http_client(endpoint: str, credentials: Any = None):
    """A ``CloudTasksClient`` on the REST transport over plain http to `endpoint` ("127.0.0.1:PORT"
    or "http://127.0.0.1:PORT"), with anonymous credentials unless given: the transport is built
    with ``url_scheme="http"``, which its constructor takes and the client's ``transport="rest"``
    does not pass (it would assume https)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.tasks_v2 import CloudTasksClient
    from google.cloud.tasks_v2.services.cloud_tasks.transports.rest import CloudTasksRestTransport

    def transport(**kwargs: Any) -> CloudTasksRestTransport:
        return CloudTasksRestTransport(url_scheme="http", **kwargs)

    return CloudTasksClient(transport=transport, client_options={"api_endpoint": endpoint},
                            credentials=credentials or AnonymousCredentials())


class CloudTasksScheduler:
    """Schedules a publish to a topic for later, once per task id."""

    def __init__(self, config: Config, *, api_endpoint: str | None = None, credentials: Any = None,
                 plain_http: bool = False):
        self.config = config

        def make_client():
            if plain_http:
                return plain_http_client(api_endpoint, credentials)
            from google.cloud import tasks_v2

            options = {"api_endpoint": api_endpoint} if api_endpoint else None
            return tasks_v2.CloudTasksClient(client_options=options, credentials=credentials)

        self._client = _LazyClient(make_client)

    @classmethod
    def local(cls, config: Config) -> "CloudTasksScheduler":
        return cls(config, api_endpoint=config.local_tasks_api, plain_http=True)

    def schedule_publish(self, task_id: str, topic: str, message: dict, at: datetime) -> bool:
        from google.cloud import tasks_v2

        body = request_bodies.publish_task(self.config, task_id, topic, message, at)
        task = tasks_v2.Task.from_json(json.dumps(body))
        try:
            with translated_errors(f"schedule task {task_id}"):
                self._client.get().create_task(parent=request_bodies.tasks_queue_path(self.config), task=task,
                                               timeout=CALL_TIMEOUT_S)
        except AlreadyExists:  # a redelivery: the task was scheduled before
            return False
        return True
