"""Bad input at every entry point gets a clear reason and an acknowledgement, never a 500.

Each case is one malformed input, POSTed to its function as Eventarc pushes it (a CloudEvent in
binary content mode) through functions-framework's test client, against the fake platform, twice
(delivery is at least once). For every case each answer is a 2xx (acknowledged: Pub/Sub and Eventarc would retry anything else,
and a retry cannot make bad input good), nothing was launched (no Dataflow or training job, no
model upload, deploy, undeploy, alias move or scheduled task), nothing but the ledger record was
written, and the reason names the problem: in the run's ledger when a run id can be derived from
the input, else in the function's one JSON log line.

The table's ids read as the input; each builder sets up what the case needs (a run that exists, a
trigger file in the bucket, a job the job API knows) and returns the request.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import pytest

from events.storage import STORAGE_SOURCE_PREFIX
from functions.platform import PreprocessJob, TrainingJob
from functions import triggers
from functions.run_store import RunStore
from functions.stages.result import record
from tests.fakes.google_events import (
    BUCKET, BUCKET_SOURCE, PROJECT, WHEN, dataflow_job_message, job_events_message, log_entry_message,
    message_published, object_finalized, run_request_message, trigger_notification, vertex_job_line,
)
from tests.functions.test_main import manifest, reports, run_status

RUN = "run-20261127-050102-0123456789"
OTHER_RUN = "run-20261127-050102-fedcba9876"
MANIFEST = f"runs/{RUN}/preprocess/_MANIFEST.json"
START_TOPIC, JOB_EVENTS_TOPIC, RELEASE_TOPIC = "mlrelay-start", "mlrelay-job-events", "mlrelay-release"
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
FINALIZED = "google.cloud.storage.object.v1.finalized"
DEEP = b"[" * 10_000 + b"]" * 10_000
VERSION = "projects/p/locations/r/models/babyweight"

# Without ce-type, functions-framework takes a Pub/Sub body for a legacy push and converts it to a
# CloudEvent whose source names no topic: the function runs, and refuses that source.
PUSH_CONVERTED = "not a Pub/Sub topic source: '//pubsub.googleapis.com/'"


@dataclass(frozen=True)
class Request:
    """A CloudEvent in binary content mode: its ce-* attributes, the body, its content type."""

    attributes: dict[str, str]
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class Case:
    id: str
    function: str
    build: Callable  # (cloud) -> Request, after setting up what the case needs
    words: str  # what the reason must say
    in_ledger: bool = False  # the reason is in the run's ledger (a run id can be derived)
    marks: tuple = field(default=())


def binary(event: dict, *, body: bytes | None = None, drop: tuple[str, ...] = (), **attributes: str) -> Request:
    """A structured-form event (tests/fakes/google_events) as the binary-mode request Eventarc sends."""
    headers = {key: value for key, value in event.items() if key not in ("data", "datacontenttype", *drop)}
    headers.update(attributes)
    return Request(headers, json.dumps(event["data"]).encode() if body is None else body,
                   event.get("datacontenttype", "application/json"))


def topic_source(topic: str) -> str:
    return f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}"


def on_topic(topic: str, data: bytes, *, attributes: dict | None = None, message_id: str = "7001") -> dict:
    return message_published(topic_source(topic), data, message_id=message_id, attributes=attributes)


def with_message(event: dict, **changes) -> dict:
    """The event with fields of its Pub/Sub message changed (None: removed)."""
    message = event["data"]["message"]
    for key, value in changes.items():
        if value is None:
            message.pop(key, None)
        else:
            message[key] = value
    return event


def with_envelope(event: dict, envelope) -> dict:
    event["data"] = envelope
    return event


# --- start_pipeline ------------------------------------------------------------------------------

def request(body: bytes) -> Callable:
    """A published run request (a message on the start topic)."""
    return lambda cloud: binary(run_request_message(body, "9001"))


def trigger_file(content: bytes, name: str = "triggers/nightly.json", *, size: int | None = None,
                 upload: bool = True, **attributes: str) -> Callable:
    """A trigger file uploaded to the bucket, and its notification (attributes changed as given)."""
    def build(cloud):
        if upload:
            cloud.storage.write(name, content)
        event = trigger_notification(name, len(content) if size is None else size)
        event["data"]["message"]["attributes"].update(attributes)
        return binary(event)
    return build


def notification_without(attribute: str) -> Callable:
    def build(cloud):
        cloud.storage.write("triggers/nightly.json", b"{}")
        event = trigger_notification("triggers/nightly.json", 2)
        del event["data"]["message"]["attributes"][attribute]
        return binary(event)
    return build


START_CASES = [
    # the CloudEvent's own attributes
    Case("start-ce-type-missing", "start_pipeline",
         lambda cloud: binary(run_request_message(b"{}"), drop=("type",)), PUSH_CONVERTED),
    Case("start-ce-type-storage-finalized", "start_pipeline",
         lambda cloud: binary(run_request_message(b'{"limit": 5}'), type=FINALIZED), f"not {MESSAGE_PUBLISHED}"),
    Case("start-ce-type-audit-log", "start_pipeline",
         lambda cloud: binary(run_request_message(b'{"limit": 5}'), type="google.cloud.audit.log.v1.written"),
         f"not {MESSAGE_PUBLISHED}"),
    Case("start-ce-time-unparseable", "start_pipeline",
         lambda cloud: binary(run_request_message(b'{"limit": 5}'), time="yesterday"), "not an RFC 3339 time"),
    Case("start-ce-source-another-topic", "start_pipeline",
         lambda cloud: binary(on_topic(RELEASE_TOPIC, b'{"limit": 5}')), "not of 'mlrelay-start'"),
    Case("start-ce-source-a-bucket-not-a-topic", "start_pipeline",
         lambda cloud: binary(run_request_message(b'{"limit": 5}'), source=BUCKET_SOURCE),
         "not a Pub/Sub topic source"),
    # the Pub/Sub envelope
    Case("start-body-not-json", "start_pipeline",
         lambda cloud: binary(run_request_message(b"{}"), body=b"limit=5"), "body is not JSON"),
    Case("start-body-nested-10000-deep", "start_pipeline",
         lambda cloud: binary(run_request_message(b"{}"), body=DEEP), "nested"),
    Case("start-envelope-without-message", "start_pipeline",
         lambda cloud: binary(with_envelope(run_request_message(b"{}"), {"subscription": "s"})),
         "has no 'message'"),
    Case("start-envelope-a-json-array", "start_pipeline",
         lambda cloud: binary(with_envelope(run_request_message(b"{}"), [{"message": {}}])),
         "must be a JSON object, not list"),
    Case("start-message-not-an-object", "start_pipeline",
         lambda cloud: binary(with_envelope(run_request_message(b"{}"), {"message": "eyJsaW1pdCI6IDV9"})),
         "'message' must be a JSON object"),
    Case("start-message-data-not-base64", "start_pipeline",
         lambda cloud: binary(with_message(run_request_message(b"{}"), data="{limit: 5}")), "not valid base64"),
    Case("start-message-data-a-number", "start_pipeline",
         lambda cloud: binary(with_message(run_request_message(b"{}"), data=5)), "must be a base64 string"),
    Case("start-message-attributes-not-strings", "start_pipeline",
         lambda cloud: binary(with_message(run_request_message(b"{}"), attributes={"origin": 7})),
         "'attributes' must map strings to strings"),
    Case("start-message-publish-time-unparseable", "start_pipeline",
         lambda cloud: binary(with_message(run_request_message(b"{}"), publishTime="noon")), "publishTime"),
    Case("start-message-data-not-utf8", "start_pipeline", request(b'{"limit": 5, "modelName": "\xff"}'),
         "not UTF-8", in_ledger=True),
    Case("start-message-empty", "start_pipeline", request(b""), "empty request", in_ledger=True),
    Case("start-message-nan-limit", "start_pipeline", request(b'{"limit": NaN}'), "NaN is not a JSON number",
         in_ledger=True),
    # a trigger file's content
    Case("trigger-file-not-json", "start_pipeline", trigger_file(b'{"limit": 1000,'), "not JSON", in_ledger=True),
    Case("trigger-file-json-array", "start_pipeline", trigger_file(b"[1000]"),
         "request must be a JSON object, not array", in_ledger=True),
    Case("trigger-file-unknown-field", "start_pipeline", trigger_file(b'{"limt": 1000}'), "unknown key 'limt'",
         in_ledger=True),
    Case("trigger-file-negative-limit", "start_pipeline", trigger_file(b'{"limit": -5}'),
         "limit: -5 is less than the minimum of 1", in_ledger=True),
    Case("trigger-file-zero-limit", "start_pipeline", trigger_file(b'{"limit": 0}'),
         "limit: 0 is less than the minimum of 1", in_ledger=True),
    Case("trigger-file-huge-limit", "start_pipeline", trigger_file(b'{"limit": 1000000000000}'),
         "greater than the maximum of 50000000", in_ledger=True),
    Case("trigger-file-limit-a-string", "start_pipeline", trigger_file(b'{"limit": "lots"}'),
         "limit: must be an integer, got string", in_ledger=True),
    Case("trigger-file-limit-a-fraction", "start_pipeline", trigger_file(b'{"limit": 1.5}'),
         "limit: must be an integer, got number 1.5", in_ledger=True),
    Case("trigger-file-model-name-a-number", "start_pipeline", trigger_file(b'{"modelName": 7}'),
         "modelName: must be a string", in_ledger=True),
    Case("trigger-file-duplicate-key", "start_pipeline", trigger_file(b'{"limit": 5, "limit": 6}'),
         "duplicate key 'limit'", in_ledger=True),
    Case("trigger-file-nested-10000-deep", "start_pipeline", trigger_file(DEEP), "nested too deeply",
         in_ledger=True),
    Case("trigger-file-not-utf8", "start_pipeline", trigger_file(b'{"modelName": "b\xe9b\xe9"}'), "not UTF-8",
         in_ledger=True),
    Case("trigger-file-empty", "start_pipeline", trigger_file(b""), "empty request", in_ledger=True),
    Case("trigger-file-over-the-size-limit", "start_pipeline",
         trigger_file(b'{"limit": 1000' + b" " * (70 * 1024) + b"}"), "larger than the 64 KiB", in_ledger=True),
    Case("trigger-file-larger-than-its-notification-says", "start_pipeline",
         trigger_file(b'{"limit": 1000' + b" " * (70 * 1024) + b"}", size=20), "larger than the 64 KiB",
         in_ledger=True),
    Case("trigger-file-deleted-before-it-was-read", "start_pipeline", trigger_file(b"{}", upload=False),
         "no longer exists", in_ledger=True),
    # a trigger file's name and notification
    Case("trigger-file-name-with-dot-dot", "start_pipeline",
         trigger_file(b"{}", "triggers/../runs/nightly.json", upload=False), "is not a trigger file"),
    Case("trigger-file-name-with-double-slash", "start_pipeline",
         trigger_file(b"{}", "triggers//nightly.json", upload=False), "is not a trigger file"),
    Case("trigger-file-outside-triggers", "start_pipeline", trigger_file(b"{}", "data/nightly.json"),
         "is not a trigger file"),
    Case("trigger-file-name-longer-than-cloud-storage-allows", "start_pipeline",
         trigger_file(b"{}", "triggers/" + "n" * 1100 + ".json", upload=False), "longer than Cloud Storage's"),
    Case("trigger-file-name-under-a-file", "start_pipeline",
         trigger_file(b"{}", "triggers/nightly.json/x.json", upload=False), "no longer exists", in_ledger=True),
    Case("trigger-file-name-segment-over-255-bytes", "start_pipeline",
         trigger_file(b"{}", "triggers/" + "n" * 300 + ".json", upload=False), "no longer exists", in_ledger=True),
    Case("trigger-file-name-a-local-staging-name", "start_pipeline",
         trigger_file(b"{}", "triggers/nightly.json.mlrelay-part", upload=False), "cannot be read",
         in_ledger=True),
    Case("trigger-file-name-just-the-prefix", "start_pipeline", trigger_file(b"{}", "triggers/", upload=False),
         "gs://b/triggers/ is not a trigger file"),
    Case("trigger-file-in-another-bucket", "start_pipeline", trigger_file(b"{}", bucketId="someone-elses"),
         "gs://someone-elses/triggers/nightly.json is not a trigger file"),
    Case("trigger-notification-generation-not-a-number", "start_pipeline",
         trigger_file(b"{}", objectGeneration="latest"), "objectGeneration must be a decimal integer"),
    Case("trigger-notification-event-time-unparseable", "start_pipeline", trigger_file(b"{}", eventTime="now"),
         "notification eventTime"),
    Case("trigger-notification-unknown-event-type", "start_pipeline",
         trigger_file(b"{}", eventType="OBJECT_EXPLODE"), "unknown Cloud Storage eventType 'OBJECT_EXPLODE'"),
    Case("trigger-notification-without-bucket", "start_pipeline", notification_without("bucketId"),
         "missing bucketId"),
    Case("trigger-notification-without-object", "start_pipeline", notification_without("objectId"),
         "missing objectId"),
]


# --- on_preprocess_output ------------------------------------------------------------------------

def a_run(cloud, run_id: str = RUN) -> None:
    """A run that was requested (its request.json and first ledger record), as start_pipeline leaves it."""
    runs = RunStore(cloud.storage, BUCKET)
    origin = {"kind": "message", "topic": START_TOPIC, "messageId": "9001"}
    runs.create_request(run_id, {"runId": run_id, "origin": origin, "eventId": "9001", "request": {"limit": 1000}})
    record(runs, run_id, "request", "requested", "9001", origin=origin, request={"limit": 1000})


def manifest_written(content: bytes | None, *, run: bool = True, source: str | None = None, **resource) -> Callable:
    """A run's manifest written (with `content`), and Eventarc's finalized event for it (its object
    resource's fields changed as given, None: removed; `source`: another ce-source)."""
    def build(cloud):
        if run:
            a_run(cloud)
        data = json.dumps(manifest(RUN)).encode() if content is None else content
        cloud.storage.write(MANIFEST, data)
        event = with_resource(object_finalized(MANIFEST, len(data), event_id="4001"), **resource)
        return binary(event) if source is None else binary(event, source=source)
    return build


def with_resource(event: dict, **changes) -> dict:
    """The storage event with fields of its object resource changed (None: removed)."""
    for key, value in changes.items():
        if value is None:
            event["data"].pop(key, None)
        else:
            event["data"][key] = value
    return event


def changed_manifest(change: Callable[[dict], object]) -> bytes:
    document = manifest(RUN)
    change(document)
    return json.dumps(document).encode()


def finalized(**attributes) -> Callable:
    return lambda cloud: binary(object_finalized(MANIFEST, 300, event_id="4001"), **attributes)


STORAGE_CASES = [
    Case("storage-event-ce-type-missing", "on_preprocess_output",
         lambda cloud: binary(object_finalized(MANIFEST, 300, event_id="4001"), drop=("type",)), "not a CloudEvent"),
    Case("storage-event-ce-type-message-published", "on_preprocess_output", finalized(type=MESSAGE_PUBLISHED),
         f"not {FINALIZED}"),
    Case("storage-event-ce-type-object-deleted", "on_preprocess_output",
         finalized(type="google.cloud.storage.object.v1.deleted"), f"not {FINALIZED}"),
    Case("storage-event-ce-source-another-bucket", "on_preprocess_output",
         manifest_written(None, source=f"{STORAGE_SOURCE_PREFIX}someone-elses"), "does not name bucket 'b'"),
    Case("storage-event-body-not-json", "on_preprocess_output",
         lambda cloud: binary(object_finalized(MANIFEST, 300, event_id="4001"), body=b"name=_MANIFEST.json"),
         "not a storage object"),
    Case("storage-event-body-a-json-array", "on_preprocess_output",
         lambda cloud: binary(object_finalized(MANIFEST, 300, event_id="4001"), body=json.dumps([MANIFEST]).encode()),
         "not a storage object: the event carries list data"),
    Case("storage-event-body-empty", "on_preprocess_output",
         lambda cloud: binary(object_finalized(MANIFEST, 300, event_id="4001"), body=b""),
         "not a storage object: the event carries no data"),
    Case("storage-event-missing-name", "on_preprocess_output", manifest_written(None, name=None),
         "'name' must be a non-empty string"),
    Case("storage-event-name-a-number", "on_preprocess_output", manifest_written(None, name=7),
         "'name' must be a non-empty string"),
    Case("storage-event-missing-bucket", "on_preprocess_output", manifest_written(None, bucket=None),
         "field 'bucket' must be a non-empty string"),
    Case("storage-event-generation-not-a-number", "on_preprocess_output",
         manifest_written(None, generation="latest"), "field 'generation' must be a decimal integer"),
    Case("storage-event-generation-missing", "on_preprocess_output", manifest_written(None, generation=None),
         "field 'generation' is missing"),
    Case("storage-event-size-negative", "on_preprocess_output", manifest_written(None, size=-1),
         "field 'size' must not be negative"),
    Case("storage-event-object-in-another-bucket", "on_preprocess_output",
         lambda cloud: binary(with_resource(object_finalized(MANIFEST, 300, event_id="4001"), bucket="someone-elses"),
                              source="//storage.googleapis.com/projects/_/buckets/someone-elses"),
         "gs://someone-elses is not the pipeline bucket"),
    Case("manifest-for-a-run-that-has-no-request", "on_preprocess_output", manifest_written(None, run=False),
         f"run {RUN} has no request.json", in_ledger=True),
    Case("manifest-not-json", "on_preprocess_output", manifest_written(b'{"format": "mlrelay.preprocess/v1",'),
         "manifest is not readable JSON", in_ledger=True),
    Case("manifest-not-utf8", "on_preprocess_output", manifest_written(b'{"format": "\xff"}'),
         "manifest is not readable JSON", in_ledger=True),
    Case("manifest-nested-10000-deep", "on_preprocess_output", manifest_written(DEEP),
         "manifest is not readable JSON: nested too deeply", in_ledger=True),
    Case("manifest-a-json-array", "on_preprocess_output", manifest_written(b"[]"), "manifest is not a JSON object",
         in_ledger=True),
    Case("manifest-without-splits", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m.pop("splits"))),
         "manifest has no splits", in_ledger=True),
    Case("manifest-without-format", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m.pop("format"))),
         "manifest format is None", in_ledger=True),
    Case("manifest-of-another-run", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m.update(run_id=OTHER_RUN))),
         f"manifest names run '{OTHER_RUN}'", in_ledger=True),
    Case("manifest-rows-true", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m["splits"]["train"].update(rows=True))),
         "manifest has no train rows (rows must be a positive integer, not True)", in_ledger=True),
    Case("manifest-shards-a-string", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m["splits"]["eval"].update(shards="eval.csv"))),
         "eval shards must be a list of file names", in_ledger=True),
    Case("manifest-input-count-a-string", "on_preprocess_output",
         manifest_written(changed_manifest(lambda m: m["input"].update(rows_read="lots"))),
         "input.rows_read must be a count", in_ledger=True),
]


# --- on_training_complete ------------------------------------------------------------------------

def job_line(entry: dict | bytes, *, setup: Callable | None = None) -> Callable:
    """A message of the job-events topic carrying `entry` (a LogEntry, or raw data)."""
    def build(cloud):
        if setup is not None:
            setup(cloud)
        data = entry if isinstance(entry, bytes) else json.dumps(entry).encode()
        return binary(job_events_message(data))
    return build


def a_job(job_id: str, labels: dict, state: str = "JOB_STATE_SUCCEEDED") -> Callable:
    """A custom job the job API knows (not necessarily one of a run of ours)."""
    def setup(cloud):
        cloud.jobs.jobs[job_id] = TrainingJob(job_id, f"projects/p/locations/r/customJobs/{job_id}", state,
                                              labels, f"gs://{BUCKET}/runs/{labels.get('run_id', 'x')}/train/")
    return setup


DATAFLOW_JOB = "2026-11-27_05_01_03-4369315246414288431"


def a_dataflow_job(name: str, state: str = "JOB_STATE_FAILED") -> Callable:
    """A Dataflow job the job API knows, named `name` (a run id, when it is one of ours)."""
    def setup(cloud):
        cloud.jobs.dataflow[DATAFLOW_JOB] = PreprocessJob(DATAFLOW_JOB, name, state, {})
    return setup


def ended(job_id: str, **changes) -> dict:
    line = vertex_job_line(job_id, "Job completed successfully.", job_state="SUCCEEDED")
    line.update(changes)
    return line


def deploy_audit_entry(operation: dict) -> dict:
    """The Admin Activity audit entry that ends a DeployModel operation (local_cloud.logging.entries)."""
    endpoint = f"projects/{PROJECT}/locations/us-central1/endpoints/babyweight"
    return {
        "insertId": "-audit1", "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "resource": {"type": "audited_resource", "labels": {"service": "aiplatform.googleapis.com",
                                                            "project_id": PROJECT}},
        "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                         "serviceName": "aiplatform.googleapis.com",
                         "methodName": "google.cloud.aiplatform.v1.EndpointService.DeployModel",
                         "resourceName": endpoint, "status": {}},
        "operation": {"producer": "aiplatform.googleapis.com", "last": True, **operation},
        "severity": "NOTICE", "timestamp": WHEN,
    }


def job_events(**attributes) -> Callable:
    return lambda cloud: binary(log_entry_message(ended("1001")), **attributes)


JOB_CASES = [
    Case("job-event-ce-type-missing", "on_training_complete",
         lambda cloud: binary(log_entry_message(ended("1001")), drop=("type",)), PUSH_CONVERTED),
    Case("job-event-ce-type-audit-log-written", "on_training_complete",
         job_events(type="google.cloud.audit.log.v1.written"), f"not {MESSAGE_PUBLISHED}"),
    Case("job-event-ce-source-another-topic", "on_training_complete",
         lambda cloud: (a_job("1001", {"run_id": RUN})(cloud), a_run(cloud),
                        binary(log_entry_message(ended("1001")), source=topic_source(START_TOPIC)))[-1],
         "not of 'mlrelay-job-events'"),
    Case("job-event-ce-source-not-a-topic", "on_training_complete", job_events(source="//logging.googleapis.com/sinks"),
         "not a Pub/Sub topic source"),
    Case("job-event-body-not-json", "on_training_complete",
         lambda cloud: binary(log_entry_message(ended("1001")), body=b"Job completed successfully."),
         "body is not JSON"),
    Case("job-event-envelope-without-message", "on_training_complete",
         lambda cloud: binary(with_envelope(log_entry_message(ended("1001")), {"subscription": "s"})),
         "has no 'message'"),
    Case("job-event-message-data-not-base64", "on_training_complete",
         lambda cloud: binary(with_message(log_entry_message(ended("1001")), data="{not base64}")),
         "not valid base64"),
    Case("log-entry-not-json", "on_training_complete", job_line(b"Job completed successfully."),
         "LogEntry data is not JSON"),
    Case("log-entry-not-utf8", "on_training_complete", job_line(b'{"textPayload": "\xff"}'),
         "LogEntry data is not UTF-8"),
    Case("log-entry-nested-10000-deep", "on_training_complete", job_line(DEEP), "LogEntry data is not JSON"),
    Case("log-entry-a-json-array", "on_training_complete", job_line(b'["Job completed successfully."]'),
         "a LogEntry must be a JSON object, not list"),
    Case("log-entry-missing-resource", "on_training_complete",
         job_line({k: v for k, v in ended("1001").items() if k != "resource"}, setup=a_job("1001", {"run_id": RUN})),
         "the LogEntry names no resource"),
    Case("log-entry-unknown-resource-type", "on_training_complete",
         job_line(ended("1001", resource={"type": "gce_instance", "labels": {"instance_id": "1001"}})),
         "resource type 'gce_instance'"),
    Case("log-entry-resource-labels-not-strings", "on_training_complete",
         job_line(ended("1001", resource={"type": "ml_job", "labels": {"job_id": 1001}})),
         "'resource.labels' must map strings to strings"),
    Case("log-entry-timestamp-a-number", "on_training_complete", job_line(ended("1001", timestamp=1764219662)),
         "field 'timestamp' has the wrong type"),
    Case("log-entry-job-id-not-a-number", "on_training_complete",
         job_line(vertex_job_line("../../endpoints/babyweight", "Job completed successfully.", job_state="SUCCEEDED")),
         "is not a job id (a number)"),
    Case("log-entry-job-unknown-to-the-api", "on_training_complete", job_line(ended("4242")),
         "job 4242 is not one the job API knows"),
    Case("log-entry-job-of-another-project", "on_training_complete",
         job_line(ended("5151", resource={"type": "ml_job", "labels": {"job_id": "5151", "task_name": "service",
                                                                          "project_id": "someone-elses"}})),
         "job 5151 is not one the job API knows"),
    Case("log-entry-training-job-without-run-id-label", "on_training_complete",
         job_line(ended("777"), setup=a_job("777", {"team": "recsys"})), "job 777 has no run_id label"),
    Case("log-entry-training-job-run-id-label-not-a-run-id", "on_training_complete",
         job_line(ended("778"), setup=a_job("778", {"run_id": "nightly"})), "run_id label 'nightly' is not a run id"),
    Case("log-entry-training-job-of-a-run-this-bucket-does-not-hold", "on_training_complete",
         job_line(ended("779"), setup=a_job("779", {"run_id": OTHER_RUN})), f"is not a run of gs://{BUCKET}"),
    Case("log-entry-deploy-audit-of-an-unknown-operation", "on_training_complete",
         job_line(deploy_audit_entry({"id": f"projects/{PROJECT}/locations/us-central1/endpoints/babyweight/"
                                            "operations/31337"})), "operations/31337 is not one of ours"),
    Case("log-entry-deploy-audit-without-operation-id", "on_training_complete", job_line(deploy_audit_entry({})),
         "names no job"),
    Case("log-entry-deploy-audit-operation-not-an-operation-name", "on_training_complete",
         job_line(deploy_audit_entry({"id": "../../runs/x"})), "is not an operation name"),
    Case("log-entry-dataflow-failure-of-a-job-unknown-to-the-api", "on_training_complete",
         job_line(dataflow_job_message(DATAFLOW_JOB, RUN, "Workflow failed."), setup=a_run),
         f"Dataflow job {DATAFLOW_JOB} is not one the job API knows"),
    Case("log-entry-dataflow-failure-of-no-run", "on_training_complete",
         job_line(dataflow_job_message(DATAFLOW_JOB, OTHER_RUN, "Workflow failed."),
                  setup=a_dataflow_job(OTHER_RUN)), "is not a run of this bucket"),
    Case("log-entry-dataflow-failure-job-name-not-a-run-id", "on_training_complete",
         job_line(dataflow_job_message(DATAFLOW_JOB, "../../etc", "Workflow failed."),
                  setup=a_dataflow_job("../../etc")), "is not a run of this bucket"),
    Case("log-entry-dataflow-failure-job-id-a-path", "on_training_complete",
         job_line(dataflow_job_message("../../projects/x/jobs/1", RUN, "Workflow failed."), setup=a_run),
         "is not a job id"),
    Case("log-entry-dataflow-failure-without-job-id", "on_training_complete",
         job_line(dataflow_job_message("", RUN, "Workflow failed."), setup=a_run), "names no job"),
]


# --- on_release_event ----------------------------------------------------------------------------

def release_message(body: bytes | dict, **attributes) -> Callable:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda cloud: binary(on_topic(RELEASE_TOPIC, data, attributes={"origin": "bake-end"}), **attributes)


BAKE_END = {"run_id": RUN, "candidate": "dm2", "champion": "dm1", "bake_started": WHEN,
            "model_version": f"{VERSION}@2"}

RELEASE_CASES = [
    Case("release-ce-type-missing", "on_release_event",
         lambda cloud: binary(on_topic(RELEASE_TOPIC, json.dumps(BAKE_END).encode()), drop=("type",)),
         PUSH_CONVERTED),
    Case("release-ce-type-storage-finalized", "on_release_event", release_message(BAKE_END, type=FINALIZED),
         f"not {MESSAGE_PUBLISHED}"),
    Case("release-ce-source-another-topic", "on_release_event",
         release_message({"action": "rollback", "to": f"{VERSION}@9"}, source=topic_source(START_TOPIC)),
         "not of 'mlrelay-release'"),
    Case("release-envelope-without-message", "on_release_event",
         lambda cloud: binary(with_envelope(on_topic(RELEASE_TOPIC, b"{}"), {"subscription": "s"})),
         "has no 'message'"),
    Case("bake-end-not-json", "on_release_event", release_message(b"the bake is over"),
         "the release message is not JSON"),
    Case("bake-end-not-utf8", "on_release_event", release_message(b'{"run_id": "\xff"}'),
         "the release message is not JSON"),
    Case("bake-end-nested-10000-deep", "on_release_event", release_message(DEEP), "nested too deeply"),
    Case("bake-end-a-json-array", "on_release_event", release_message(b'["bake", "over"]'), "not a JSON object"),
    Case("bake-end-for-an-unknown-run", "on_release_event", release_message(BAKE_END),
         f"run {RUN} has no canary dm2 baking"),
    Case("bake-end-run-id-a-path", "on_release_event", release_message({**BAKE_END, "run_id": "../../etc"}),
         "must name its run_id"),
    Case("bake-end-without-its-start", "on_release_event",
         release_message({k: v for k, v in BAKE_END.items() if k != "bake_started"}), "without its start time"),
    Case("release-unknown-action", "on_release_event", release_message({"action": "promote", **BAKE_END}),
         "unknown release action 'promote'"),
    Case("rollback-to-a-version-that-does-not-exist", "on_release_event",
         release_message({"action": "rollback", "to": f"{VERSION}@9", "requested_by": "alice"}),
         f"no registered version {VERSION}@9"),
    Case("rollback-to-a-short-name", "on_release_event",
         release_message({"action": "rollback", "to": "babyweight@3"}), "rollback 'to' must be MODEL@VERSION"),
    Case("rollback-to-a-number", "on_release_event", release_message({"action": "rollback", "to": 3}),
         "rollback 'to' must be MODEL@VERSION"),
]

CASES = START_CASES + STORAGE_CASES + JOB_CASES + RELEASE_CASES


# --- the check ------------------------------------------------------------------------------------

def launches(cloud) -> dict[str, int]:
    """How many times each thing that starts work was asked for, on every fake API."""
    return {"preprocess": len(cloud.jobs.preprocess_calls), "training": len(cloud.jobs.training_calls),
            "upload": len(cloud.models.uploads), "deploy": len(cloud.models.deploys),
            "undeploy": len(cloud.models.undeploys), "alias": len(cloud.models.alias_moves),
            "task": len(cloud.tasks.scheduled)}


def post(client, sent: Request):
    headers = {f"ce-{key}": value for key, value in sent.attributes.items()}
    headers["Content-Type"] = sent.content_type
    return client.post("/", headers=headers, data=sent.body)


def test_the_table_covers_every_entry_point_with_distinct_inputs():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    assert {case.function for case in CASES} == {"start_pipeline", "on_preprocess_output", "on_training_complete",
                                                 "on_release_event"}


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_malformed_input_is_acknowledged_launches_nothing_and_says_why(clients, cloud, caplog, case):
    sent = case.build(cloud)
    before, objects = launches(cloud), set(cloud.objects())
    caplog.clear()

    # Delivered twice, as at-least-once delivery may: both are acknowledged, neither launches.
    responses = [post(clients[case.function], sent) for _ in range(2)]

    for response in responses:
        assert 200 <= response.status_code < 300, response.data[:300]
    assert launches(cloud) == before
    line, again = reports(caplog, case.function)
    assert (again["action"], again["detail"]) == (line["action"], line["detail"])
    written = set(cloud.objects()) - objects
    if case.in_ledger:
        assert line["action"] == "rejected" and line["run_id"], line
        status = run_status(cloud, line["run_id"])
        assert status.state in ("rejected", "failed") and case.words in (status.reason or ""), status
        assert all(name.startswith(f"runs/{line['run_id']}/events/") for name in written), written
        assert case.words in line["detail"]
    else:
        assert line["action"] in ("ignored", "rejected"), line
        assert case.words in line["detail"], line
        assert written == set(), written


def received(sent: Request):
    """The CloudEvent functions-framework hands an entry point for this request."""
    from cloudevents.http import from_http

    headers = {f"ce-{key}": value for key, value in sent.attributes.items()}
    headers["Content-Type"] = sent.content_type
    return from_http(headers, sent.body)


@pytest.mark.parametrize("decode, topic", [
    (triggers.decode_start, START_TOPIC), (triggers.decode_job_event, JOB_EVENTS_TOPIC),
    (triggers.decode_release, RELEASE_TOPIC),
], ids=["start", "job-events", "release"])
def test_told_their_topic_the_decoders_refuse_a_message_of_another(decode, topic):
    """The entry points pass their configured topic, so a message of another is refused."""
    misrouted = received(binary(on_topic("someone-elses", b'{"limit": 5}')))
    refused = decode(misrouted, topic=topic)
    assert refused == triggers.NotForUs(f"a message of topic 'someone-elses', not of {topic!r}")
    own = decode(received(binary(on_topic(topic, b'{"limit": 5}'))), topic=topic)
    assert "a message of topic" not in getattr(own, "reason", "")  # its own topic's message gets past
