"""LogEntry JSON as the cloud writes it, for the local cloud to emit and for tests to feed the sink.

The shapes follow entries Google Cloud writes: a Vertex AI custom job's service lines (log
`projects/P/logs/ml.googleapis.com%2F<job id>`, resource ml_job with job_id / task_name /
project_id, entry labels ml.googleapis.com/endpoint and ml.googleapis.com/job_state; every
service line, "Job failed." too, at INFO), a Dataflow job message (log
`dataflow.googleapis.com%2Fjob-message`, resource dataflow_step with job_id / job_name /
project_id / region / step_id, entry labels dataflow.googleapis.com/*), among them the line of a
Flex Template launch that failed (events.log_entries.DATAFLOW_LAUNCHER_FAILED_LINE, at ERROR), and
the Admin Activity audit entry of a long-running DeployModel operation (protoPayload AuditLog,
`operation` with id / producer / first / last). Entries are plain dicts so they serialise straight
to a sink message.
"""
from __future__ import annotations

from typing import Any

from events.log_entries import (
    AIPLATFORM_SERVICE,
    AUDIT_ACTIVITY_LOG,
    DATAFLOW_JOB_ID_LABEL,
    DATAFLOW_JOB_MESSAGE_LOG,
    DATAFLOW_JOB_NAME_LABEL,
    DATAFLOW_LAUNCHER_FAILED_LINE,
    DATAFLOW_RESOURCE_TYPE,
    DEPLOY_MODEL_METHOD,
    VERTEX_CANCELLED_LINE,
    VERTEX_FAILED_LINE,
    VERTEX_JOB_STATE_LABEL,
    VERTEX_RESOURCE_TYPE,
    VERTEX_SERVICE_TASK,
    VERTEX_SUCCEEDED_LINE,
    JobOutcome,
)
from events.timestamps import TimeLike, format_rfc3339

# The service's line and job_state label for each end. All are INFO lines: Vertex AI logs "Job
# failed." at INFO, not ERROR. The cancellation line's wording is not documented (see
# events.log_entries.VERTEX_CANCELLED_LINE).
_VERTEX_TERMINAL_LINES = {
    JobOutcome.SUCCEEDED: (VERTEX_SUCCEEDED_LINE, "SUCCEEDED"),
    JobOutcome.FAILED: (VERTEX_FAILED_LINE, "FAILED"),
    JobOutcome.CANCELLED: (VERTEX_CANCELLED_LINE, "CANCELLED"),
}


# The line before DATAFLOW_LAUNCHER_FAILED_LINE in a failed launch's job logs (common-errors page):
# an ordinary line, not a job end.
LAUNCH_EXIT_LINE = "Error: Template launch failed: exit status {code}"


def _with_message(entry: dict[str, Any], message: str, structured: bool) -> dict[str, Any]:
    """The line as textPayload, or as jsonPayload.message for a structured (JSON) log line."""
    if structured:
        entry["jsonPayload"] = {"message": message}
    else:
        entry["textPayload"] = message
    return entry


def vertex_job_log_entry(
    project: str,
    job_id: str,
    message: str,
    timestamp: TimeLike,
    insert_id: str,
    *,
    job_state: str | None = None,
    task_name: str = VERTEX_SERVICE_TASK,
    severity: str = "INFO",
    structured: bool = False,
) -> dict[str, Any]:
    """One line of a Vertex AI custom job's log (textPayload, or jsonPayload.message if structured)."""
    labels = {"ml.googleapis.com/endpoint": ""}
    if job_state is not None:
        labels[VERTEX_JOB_STATE_LABEL] = job_state
    entry: dict[str, Any] = {
        "insertId": insert_id,
        "logName": f"projects/{project}/logs/ml.googleapis.com%2F{job_id}",
        "resource": {
            "type": VERTEX_RESOURCE_TYPE,
            "labels": {"job_id": job_id, "task_name": task_name, "project_id": project},
        },
        "labels": labels,
        "severity": severity,
        "timestamp": format_rfc3339(timestamp, digits=6),
        "receiveTimestamp": format_rfc3339(timestamp, digits=6),
    }
    return _with_message(entry, message, structured)


def vertex_job_terminal_entry(
    project: str, job_id: str, outcome: JobOutcome | str, timestamp: TimeLike, insert_id: str
) -> dict[str, Any]:
    """The service line that ends a custom job with `outcome` (at INFO, as the service logs it)."""
    line, state = _VERTEX_TERMINAL_LINES[JobOutcome(outcome)]
    return vertex_job_log_entry(project, job_id, line, timestamp, insert_id, job_state=state)


def dataflow_job_message_entry(
    project: str,
    job_id: str,
    job_name: str,
    region: str,
    message: str,
    timestamp: TimeLike,
    insert_id: str,
    *,
    severity: str = "INFO",
    structured: bool = False,
    log: str = DATAFLOW_JOB_MESSAGE_LOG,
) -> dict[str, Any]:
    """One Dataflow job message (the service's own account of the job, not a worker's log).

    `log` names another of the job's logs with the same shape (events.log_entries.DATAFLOW_*_LOG).
    """
    entry: dict[str, Any] = {
        "insertId": insert_id,
        "labels": {
            DATAFLOW_JOB_ID_LABEL: job_id,
            DATAFLOW_JOB_NAME_LABEL: job_name,
            "dataflow.googleapis.com/log_type": "system",
            "dataflow.googleapis.com/region": region,
        },
        "logName": f"projects/{project}/logs/{log}",
        "resource": {
            "type": DATAFLOW_RESOURCE_TYPE,
            "labels": {"job_id": job_id, "job_name": job_name, "project_id": project,
                       "region": region, "step_id": ""},
        },
        "severity": severity,
        "timestamp": format_rfc3339(timestamp, digits=6),
        "receiveTimestamp": format_rfc3339(timestamp, digits=6),
    }
    return _with_message(entry, message, structured)


def dataflow_launch_failed_entry(
    project: str,
    job_id: str,
    job_name: str,
    region: str,
    timestamp: TimeLike,
    insert_id: str,
    *,
    message: str = DATAFLOW_LAUNCHER_FAILED_LINE,
    structured: bool = False,
    log: str = DATAFLOW_JOB_MESSAGE_LOG,
) -> dict[str, Any]:
    """The ERROR line a Flex Template job logs when its launch fails, before any pipeline runs.

    https://cloud.google.com/dataflow/docs/guides/common-errors ("Template launch failed with
    error") shows it in the job logs after LAUNCH_EXIT_LINE; the cause usually comes before
    both, at INFO (https://cloud.google.com/dataflow/docs/guides/troubleshoot-templates). `log` is
    the job-message log, or events.log_entries.DATAFLOW_LAUNCHER_LOG for the launcher's own.
    """
    return dataflow_job_message_entry(project, job_id, job_name, region, message, timestamp, insert_id,
                                      severity="ERROR", structured=structured, log=log)


def deploy_model_audit_entry(
    project: str,
    location: str,
    endpoint_id: str,
    operation_id: str,
    timestamp: TimeLike,
    insert_id: str,
    *,
    first: bool = False,
    last: bool = True,
    error: tuple[int, str] | None = None,
    deployed_model_id: str | None = None,
    principal: str = "mlrelay@local",
) -> dict[str, Any]:
    """An Admin Activity audit entry of a DeployModel operation (the last one ends the deploy)."""
    endpoint = f"projects/{project}/locations/{location}/endpoints/{endpoint_id}"
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": AIPLATFORM_SERVICE,
        "methodName": DEPLOY_MODEL_METHOD,
        "resourceName": endpoint,
        "authenticationInfo": {"principalEmail": principal},
        "status": {} if error is None else {"code": error[0], "message": error[1]},
    }
    if last and error is None and deployed_model_id is not None:
        payload["response"] = {
            "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelResponse",
            "deployedModel": {"id": deployed_model_id},
        }
    operation: dict[str, Any] = {"id": f"{endpoint}/operations/{operation_id}", "producer": AIPLATFORM_SERVICE}
    if first:
        operation["first"] = True
    if last:
        operation["last"] = True
    return {
        "insertId": insert_id,
        "logName": f"projects/{project}/logs/{AUDIT_ACTIVITY_LOG}",
        # Services without a monitored-resource type of their own log against audited_resource.
        "resource": {
            "type": "audited_resource",
            "labels": {"service": AIPLATFORM_SERVICE, "method": DEPLOY_MODEL_METHOD, "project_id": project},
        },
        "protoPayload": payload,
        "operation": operation,
        "severity": "NOTICE" if error is None else "ERROR",
        "timestamp": format_rfc3339(timestamp, digits=6),
        "receiveTimestamp": format_rfc3339(timestamp, digits=6),
    }
