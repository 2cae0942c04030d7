"""Cloud Logging LogEntry parsing, and the test that says "this line ends a job".

A log sink publishes each matching LogEntry as a Pub/Sub message whose data is the entry's JSON
(https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry: logName, resource.{type,
labels}, labels, severity, timestamp, insertId, operation, and one payload of textPayload,
jsonPayload or protoPayload). `classify` recognises the three kinds of entry that end a job:

- Vertex AI custom job (resource.type "ml_job", resource.labels.job_id): the service's own lines
  (resource.labels.task_name "service") "Job completed successfully.", "Job failed." and the
  cancellation line, and the entry label "ml.googleapis.com/job_state" (which service lines carry,
  e.g. QUEUED on "Waiting for job to be provisioned.") when it holds a terminal state. The
  cancellation wording is not documented, so "Job was cancelled.", "Job cancelled." and
  "Job canceled." are all taken; the function confirms every job end with the API anyway. Lines
  from the training code itself (task_name "workerpool0-0", ...) are never terminal.
  Every service line is taken whatever its severity ("Job failed." is an INFO line, like the
  others); nothing here or in the sink filters reads the severity.
- Dataflow job (resource.type "dataflow_step", resource.labels.job_id and job_name, repeated in
  the entry labels dataflow.googleapis.com/job_id and job_name), two ways to fail:
  - the job message (log ".../logs/dataflow.googleapis.com%2Fjob-message") "Workflow failed.",
    alone or followed by "Causes: ...", once the pipeline runs;
  - a Flex Template whose launch fails (the template's program exits in the launcher container:
    bad parameters, an unreadable source) never gets that far; its job logs
    "Error occurred in the launcher container: Template launch failed. See console logs." at
    ERROR, after the cause, which the launcher logs at INFO
    (https://cloud.google.com/dataflow/docs/guides/common-errors, "Template launch failed with
    error"; https://cloud.google.com/dataflow/docs/guides/troubleshoot-templates, "Flex Template
    launcher logs show wrong severity"). The job logs are the job-message log
    (https://cloud.google.com/dataflow/docs/guides/logging, "Log types"); the launcher's own log
    (dataflow.googleapis.com%2Flauncher) is taken too, since the troubleshooting page files the
    line under the launcher logs. Whatever follows the colon, the line is taken.
  Success needs no log line: the pipeline's manifest object signals it.
- Vertex AI deployment: the Admin Activity audit entry of the long-running
  google.cloud.aiplatform.v1.EndpointService.DeployModel operation whose `operation.last` is true
  (https://cloud.google.com/logging/docs/audit/understanding-audit-logs,
  https://cloud.google.com/vertex-ai/docs/general/audit-logging); protoPayload.status holds the
  error, if any (google.rpc.Code: 1 is CANCELLED). Which fields that last entry carries is not
  documented for DeployModel: it is taken with or without a status or a response, and the
  function reads the operation itself for the outcome.

Every other entry (the jobs' ordinary lines) classifies as None. The sink filters in
`events.sink_filters` are written from the same constants, so the cloud sink, the local sink and
this classifier agree.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from events.errors import InvalidEvent

VERTEX_RESOURCE_TYPE = "ml_job"
VERTEX_SERVICE_TASK = "service"
VERTEX_JOB_STATE_LABEL = "ml.googleapis.com/job_state"
VERTEX_SUCCEEDED_LINE = "Job completed successfully."
VERTEX_FAILED_LINE = "Job failed."  # an INFO line, as every service line is
# The cancellation line's wording is NOT documented: this is the form the local cloud writes, and
# VERTEX_TERMINAL_REGEX also takes "Job cancelled." and "Job canceled.". A job end is always
# confirmed with the job API (the job_state label, when a line carries it, is read first), and the
# reconcile sweep of design.md reads the job API, not this line.
VERTEX_CANCELLED_LINE = "Job was cancelled."
# Written with [.] rather than a backslash so the same text works inside a Logging query string.
VERTEX_TERMINAL_REGEX = r"^Job (completed successfully|failed|(was )?cancell?ed)[.]"
VERTEX_WORKER_TASK_REGEX = r"^workerpool"

DATAFLOW_RESOURCE_TYPE = "dataflow_step"
DATAFLOW_JOB_MESSAGE_LOG = "dataflow.googleapis.com%2Fjob-message"
DATAFLOW_LAUNCHER_LOG = "dataflow.googleapis.com%2Flauncher"
DATAFLOW_JOB_ID_LABEL = "dataflow.googleapis.com/job_id"
DATAFLOW_JOB_NAME_LABEL = "dataflow.googleapis.com/job_name"
DATAFLOW_FAILED_LINE = "Workflow failed."
DATAFLOW_FAILED_REGEX = r"^Workflow failed[.]"
# A Flex Template launch that failed, as the Dataflow troubleshooting pages print it
# (https://cloud.google.com/dataflow/docs/guides/common-errors, "Template launch failed with
# error", and https://cloud.google.com/dataflow/docs/guides/troubleshoot-templates, "Flex Template
# launcher logs show wrong severity"): the job never reaches "Workflow failed.". The second page
# prints the line after its severity ("ERROR: Error occurred ..."), so that form is taken too, and
# the match ends at the colon, so a line giving another reason after it is taken as well.
DATAFLOW_LAUNCHER_FAILED_LINE = (
    "Error occurred in the launcher container: Template launch failed. See console logs."
)
DATAFLOW_LAUNCHER_FAILED_REGEX = r"^(ERROR: )?Error occurred in the launcher container: "

AIPLATFORM_SERVICE = "aiplatform.googleapis.com"
# The audit entry that ends a DeployModel operation: its methodName and operation.last are
# documented for audited long-running operations, the rest of its form for DeployModel is NOT, so
# it is taken with or without protoPayload.status / response, the deploy's outcome is always read
# from the operation itself (functions.stages.deploy), and the reconcile sweep of design.md reads
# the operation, not this entry.
DEPLOY_MODEL_METHOD = "google.cloud.aiplatform.v1.EndpointService.DeployModel"
AUDIT_ACTIVITY_LOG = "cloudaudit.googleapis.com%2Factivity"
RPC_CODE_CANCELLED = 1


class JobKind(StrEnum):
    VERTEX_CUSTOM_JOB = "vertex_custom_job"
    DATAFLOW_JOB = "dataflow_job"
    VERTEX_DEPLOY_MODEL = "vertex_deploy_model"


class JobOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Terminal values of the ml.googleapis.com/job_state label (legacy and JobState enum spellings).
_VERTEX_STATE_OUTCOMES = {
    "SUCCEEDED": JobOutcome.SUCCEEDED,
    "JOB_STATE_SUCCEEDED": JobOutcome.SUCCEEDED,
    "FAILED": JobOutcome.FAILED,
    "JOB_STATE_FAILED": JobOutcome.FAILED,
    "CANCELLED": JobOutcome.CANCELLED,
    "JOB_STATE_CANCELLED": JobOutcome.CANCELLED,
}
VERTEX_TERMINAL_JOB_STATES = tuple(_VERTEX_STATE_OUTCOMES)
_VERTEX_TERMINAL = re.compile(VERTEX_TERMINAL_REGEX)
_DATAFLOW_FAILED = re.compile(DATAFLOW_FAILED_REGEX)
_DATAFLOW_LAUNCHER_FAILED = re.compile(DATAFLOW_LAUNCHER_FAILED_REGEX)


@dataclass(frozen=True)
class LogEntry:
    """The LogEntry fields the chain reads; `raw` keeps the whole entry for filter matching."""

    log_name: str
    resource_type: str
    resource_labels: Mapping[str, str]
    labels: Mapping[str, str]
    severity: str
    timestamp: str
    insert_id: str
    text_payload: str | None = None
    json_payload: Mapping[str, Any] | None = None
    proto_payload: Mapping[str, Any] | None = None
    operation: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def message(self) -> str:
        """The human line: textPayload, or jsonPayload.message for structured logs; else ''."""
        if self.text_payload is not None:
            return self.text_payload
        if self.json_payload is not None:
            message = self.json_payload.get("message")
            if isinstance(message, str):
                return message
        return ""

    @classmethod
    def from_dict(cls, entry: Any) -> LogEntry:
        if not isinstance(entry, Mapping):
            raise InvalidEvent(f"a LogEntry must be a JSON object, not {_kind(entry)}")
        resource = entry.get("resource") or {}
        if not isinstance(resource, Mapping):
            raise InvalidEvent("LogEntry 'resource' must be an object")
        text = entry.get("textPayload")
        json_payload = entry.get("jsonPayload")
        proto_payload = entry.get("protoPayload")
        operation = entry.get("operation")
        for name, value, wanted in (
            ("logName", entry.get("logName", ""), str),
            ("resource.type", resource.get("type", ""), str),
            ("severity", entry.get("severity", "DEFAULT"), str),
            ("timestamp", entry.get("timestamp", ""), str),
            ("insertId", entry.get("insertId", ""), str),
            ("textPayload", text, (str, type(None))),
            ("jsonPayload", json_payload, (Mapping, type(None))),
            ("protoPayload", proto_payload, (Mapping, type(None))),
            ("operation", operation, (Mapping, type(None))),
        ):
            if not isinstance(value, wanted):
                raise InvalidEvent(f"LogEntry field {name!r} has the wrong type ({_kind(value)})")
        return cls(
            log_name=entry.get("logName", ""),
            resource_type=resource.get("type", ""),
            resource_labels=_string_map(resource.get("labels"), "resource.labels"),
            labels=_string_map(entry.get("labels"), "labels"),
            severity=entry.get("severity", "DEFAULT"),
            timestamp=entry.get("timestamp", ""),
            insert_id=entry.get("insertId", ""),
            text_payload=text,
            json_payload=json_payload,
            proto_payload=proto_payload,
            operation=operation,
            raw=entry,
        )


def parse_log_entry(data: bytes | str | Mapping[str, Any]) -> LogEntry:
    """A LogEntry from a sink message's data (JSON bytes or text) or an already-decoded dict."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("LogEntry data is not UTF-8") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as err:
            raise InvalidEvent(f"LogEntry data is not JSON: {err}") from None
    return LogEntry.from_dict(data)


@dataclass(frozen=True)
class JobTerminal:
    """A job reached an end: which kind, which job, how it ended, and what the line said."""

    kind: JobKind
    job_id: str
    outcome: JobOutcome
    message: str = ""
    job_name: str | None = None
    resource_name: str | None = None
    timestamp: str = ""
    insert_id: str = ""


def classify(entry: LogEntry | Mapping[str, Any]) -> JobTerminal | None:
    """The job end an entry reports, or None for an ordinary line; InvalidEvent if malformed."""
    if not isinstance(entry, LogEntry):
        entry = LogEntry.from_dict(entry)
    if entry.resource_type == VERTEX_RESOURCE_TYPE:
        return _classify_vertex(entry)
    if entry.resource_type == DATAFLOW_RESOURCE_TYPE:
        return _classify_dataflow(entry)
    if entry.proto_payload is not None:
        return _classify_deploy_audit(entry)
    return None


def _classify_vertex(entry: LogEntry) -> JobTerminal | None:
    job_id = entry.resource_labels.get("job_id", "")
    if not job_id or re.match(VERTEX_WORKER_TASK_REGEX, entry.resource_labels.get("task_name", "")):
        return None
    outcome = _VERTEX_STATE_OUTCOMES.get(entry.labels.get(VERTEX_JOB_STATE_LABEL, ""))
    message = entry.message
    if outcome is None:
        match = _VERTEX_TERMINAL.match(message)
        if match is None:
            return None
        word = match.group(1)
        outcome = (
            JobOutcome.SUCCEEDED if word == "completed successfully"
            else JobOutcome.FAILED if word == "failed"
            else JobOutcome.CANCELLED
        )
    return JobTerminal(JobKind.VERTEX_CUSTOM_JOB, job_id, outcome, message,
                       timestamp=entry.timestamp, insert_id=entry.insert_id)


def _classify_dataflow(entry: LogEntry) -> JobTerminal | None:
    log = entry.log_name.rpartition("/logs/")[2] if "/logs/" in entry.log_name else ""
    message = entry.message
    workflow_failed = log == DATAFLOW_JOB_MESSAGE_LOG and _DATAFLOW_FAILED.match(message)
    launch_failed = (log in (DATAFLOW_JOB_MESSAGE_LOG, DATAFLOW_LAUNCHER_LOG)
                     and _DATAFLOW_LAUNCHER_FAILED.match(message))
    if not (workflow_failed or launch_failed):
        return None
    # The resource labels name the job; the entry labels repeat them, so either will do.
    job_id = entry.resource_labels.get("job_id") or entry.labels.get(DATAFLOW_JOB_ID_LABEL, "")
    job_name = entry.resource_labels.get("job_name") or entry.labels.get(DATAFLOW_JOB_NAME_LABEL) or None
    if not job_id and job_name is None:
        return None
    return JobTerminal(JobKind.DATAFLOW_JOB, job_id, JobOutcome.FAILED, message, job_name=job_name,
                       timestamp=entry.timestamp, insert_id=entry.insert_id)


def _classify_deploy_audit(entry: LogEntry) -> JobTerminal | None:
    payload = entry.proto_payload or {}
    operation = entry.operation or {}
    if payload.get("methodName") != DEPLOY_MODEL_METHOD or operation.get("last") is not True:
        return None
    status = payload.get("status") or {}
    code = status.get("code", 0) if isinstance(status, Mapping) else 0
    message = status.get("message", "") if isinstance(status, Mapping) else ""
    if not code:
        outcome = JobOutcome.SUCCEEDED
    elif code == RPC_CODE_CANCELLED:
        outcome = JobOutcome.CANCELLED
    else:
        outcome = JobOutcome.FAILED
    operation_id = operation.get("id")
    resource_name = payload.get("resourceName")
    return JobTerminal(
        JobKind.VERTEX_DEPLOY_MODEL,
        operation_id if isinstance(operation_id, str) else "",
        outcome,
        message if isinstance(message, str) else "",
        resource_name=resource_name if isinstance(resource_name, str) else None,
        timestamp=entry.timestamp,
        insert_id=entry.insert_id,
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidEvent(f"LogEntry {name!r} must map strings to strings")
    return dict(value)
