"""CloudEvents built from Google's published event shapes (the JSON files beside this module).

Each builder starts from a published fixture (see README.md here for where each comes from) and
changes only the fields an mlrelay event differs in, so what the tests deliver keeps Google's
field names and types (string-typed `size` and `generation`, `@type` in the message, and so on).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

BUCKET = "b"
HERE = Path(__file__).resolve().parent
PROJECT = "mlrelay-demo"
START_SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-start"
JOB_EVENTS_SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-job-events"
BUCKET_SOURCE = f"//storage.googleapis.com/projects/_/buckets/{BUCKET}"
WHEN = "2026-11-27T05:01:02.345Z"
LATER = "2026-11-27T05:01:09.876Z"
GENERATION = 1764219662345678


def google_event(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def deliver(client, event: dict):
    """POST a CloudEvent (given in structured form) in binary content mode, as Eventarc pushes it."""
    headers = {f"ce-{key}": value for key, value in event.items() if key not in ("data", "datacontenttype")}
    headers["Content-Type"] = event["datacontenttype"]
    return client.post("/", headers=headers, data=json.dumps(event["data"]))


def message_published(source: str, data: bytes, *, message_id: str, attributes: dict | None = None,
                      publish_time: str = WHEN) -> dict:
    """A messagePublished CloudEvent; Eventarc gives it the message's id and publish time."""
    event = google_event("pubsub_text-cloudevent-input.json")
    message = event["data"]["message"]
    message.update(data=base64.b64encode(data).decode(), messageId=message_id, publishTime=publish_time)
    if attributes is None:
        del message["attributes"]
    else:
        message["attributes"] = attributes
    event["data"]["subscription"] = f"projects/{PROJECT}/subscriptions/eventarc-start"
    event.update(source=source, id=message_id, time=publish_time)
    return event


def run_request_message(request: bytes, message_id: str = "1001") -> dict:
    """A run request published on the start topic (gcloud pubsub topics publish, the scheduler)."""
    return message_published(START_SOURCE, request, message_id=message_id)


def storage_object(name: str, generation: int, size: int) -> dict:
    """The Cloud Storage object resource of an object of the pipeline bucket."""
    resource = google_event("storage-cloudevent-input.json")["data"]
    quoted = quote(name, safe="")
    resource.update(
        bucket=BUCKET, name=name, generation=str(generation), size=str(size), contentType="application/json",
        id=f"{BUCKET}/{name}/{generation}",
        selfLink=f"https://www.googleapis.com/storage/v1/b/{BUCKET}/o/{quoted}",
        mediaLink=f"https://www.googleapis.com/download/storage/v1/b/{BUCKET}/o/{quoted}"
                  f"?generation={generation}&alt=media",
    )
    return resource


def trigger_notification(name: str, size: int, *, generation: int = GENERATION, message_id: str = "2001",
                         event_type: str = "OBJECT_FINALIZE", publish_time: str = WHEN) -> dict:
    """The Cloud Storage notification of an object, as the start topic receives it."""
    attributes = google_event("gcs-notification-attributes.json")
    attributes.update(notificationConfig=f"projects/_/buckets/{BUCKET}/notificationConfigs/1",
                      eventType=event_type, bucketId=BUCKET, objectId=name,
                      objectGeneration=str(generation), eventTime=WHEN)
    data = json.dumps(storage_object(name, generation, size)).encode()
    return message_published(START_SOURCE, data, message_id=message_id, attributes=attributes,
                             publish_time=publish_time)


def object_finalized(name: str, size: int, *, event_id: str) -> dict:
    """Eventarc's Cloud Storage finalized event for an object of the pipeline bucket."""
    event = google_event("storage-cloudevent-input.json")
    event["data"] = storage_object(name, GENERATION, size)
    event.update(id=event_id, source=BUCKET_SOURCE, subject=f"objects/{name}", time=WHEN)
    return event


def job_events_message(data: bytes, message_id: str = "3001") -> dict:
    """A message of the job-events topic (published by the log sink), as delivered."""
    event = google_event("pubsub_text-cloudevent-input.json")
    delivery = google_event("MessagePublishedData-duplicatedFields.json")
    delivery["message"].update(data=base64.b64encode(data).decode(), messageId=message_id,
                               message_id=message_id, publishTime=WHEN, publish_time=WHEN)
    delivery["subscription"] = f"projects/{PROJECT}/subscriptions/eventarc-job-events"
    event.update(source=JOB_EVENTS_SOURCE, id=message_id, time=WHEN, data=delivery)
    return event


def log_entry_message(entry: dict, message_id: str = "3001") -> dict:
    return job_events_message(json.dumps(entry).encode(), message_id)


def vertex_job_line(job_id: str, text: str, *, job_state: str | None = None, task_name: str = "service") -> dict:
    """A line of a Vertex AI custom job's log, as a LogEntry."""
    labels = {"ml.googleapis.com/endpoint": ""}
    if job_state is not None:
        labels["ml.googleapis.com/job_state"] = job_state
    return {
        "insertId": "1qzr8pyf1nn",
        "logName": f"projects/{PROJECT}/logs/ml.googleapis.com%2F{job_id}",
        "resource": {"type": "ml_job", "labels": {"job_id": job_id, "project_id": PROJECT, "task_name": task_name}},
        "labels": labels,
        "severity": "INFO",
        "textPayload": text,
        "timestamp": WHEN,
        "receiveTimestamp": WHEN,
    }


def dataflow_job_message(job_id: str, job_name: str, text: str) -> dict:
    """A Dataflow job message (the service's account of the job), as a LogEntry."""
    return {
        "insertId": "-x1c2v3b4n5",
        "logName": f"projects/{PROJECT}/logs/dataflow.googleapis.com%2Fjob-message",
        "resource": {"type": "dataflow_step", "labels": {"job_id": job_id, "job_name": job_name,
                                                         "project_id": PROJECT, "region": "us-central1",
                                                         "step_id": ""}},
        "labels": {"dataflow.googleapis.com/job_id": job_id, "dataflow.googleapis.com/job_name": job_name,
                   "dataflow.googleapis.com/log_type": "system", "dataflow.googleapis.com/region": "us-central1"},
        "severity": "ERROR",
        "textPayload": text,
        "timestamp": WHEN,
        "receiveTimestamp": WHEN,
    }
