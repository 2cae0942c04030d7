"""Cloud Tasks (API v2), locally: queues and HTTP tasks dispatched at their scheduleTime.

The chain schedules the end of a canary bake as a task whose HTTP request calls Pub/Sub's REST
publish method; the real ``google-cloud-tasks`` client creates it here as it would in the cloud.

`service` (CloudTasksService: the API's methods, the scheduler, retries), `http` (the REST front
on 127.0.0.1, CloudTasksServer, and ``local_client`` for the real client over plain http),
`resources` (names, checks and the JSON shown, pure), `retry` (RetryConfig and its backoff),
`wire` (timestamps, durations, enums), `state` (TaskStore, what is kept) and `pubsub_target`
(a task's request read back as the Pub/Sub publish it stands for, for the wiring into the local
broker).
"""
from local_cloud.tasks.pubsub_target import NotAPubsubPublish, PubsubMessage, PubsubPublish, parse_pubsub_publish
from local_cloud.tasks.service import CloudTasksService
from local_cloud.tasks.state import TaskStore

__all__ = ["CloudTasksService", "TaskStore", "parse_pubsub_publish", "PubsubPublish", "PubsubMessage",
           "NotAPubsubPublish"]
