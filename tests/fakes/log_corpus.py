"""Realistic LogEntry dicts shared by the log-entry, sink-filter and local Logging tests.

Vertex AI service lines follow entries a custom job writes (resource ml_job, task_name "service",
ml.googleapis.com/* labels; every service line at INFO, "Job failed." too); the Dataflow and audit
entries follow the job-message and Admin Activity shapes, and a failed Flex Template launch logs
the lines of Dataflow's troubleshooting pages (see events.log_entries). Each corpus item is
(name, entry, expected classification or None).
"""
from events.log_entries import (
    DATAFLOW_LAUNCHER_FAILED_LINE,
    DATAFLOW_LAUNCHER_LOG,
    JobKind,
    JobOutcome,
)
from local_cloud.logging.entries import (
    LAUNCH_EXIT_LINE,
    dataflow_job_message_entry,
    dataflow_launch_failed_entry,
    deploy_model_audit_entry,
    vertex_job_log_entry,
    vertex_job_terminal_entry,
)

PROJECT = "mlrelay-demo"
VERTEX_JOB = "3440268323059662848"
RUN = "run-20261127-045219-0123456789"
DATAFLOW_JOB = "2026-11-27_04_52_21-4369315246414288431"
WHEN = "2026-11-27T05:01:02.345678Z"


def vertex_line(message, state=None, **kw):
    return vertex_job_log_entry(PROJECT, VERTEX_JOB, message, WHEN, "id-" + message[:8], job_state=state, **kw)


def dataflow_line(message, severity="INFO", job_name=RUN, **kw):
    return dataflow_job_message_entry(PROJECT, DATAFLOW_JOB, job_name, "europe-west1", message, WHEN,
                                      "df-" + message[:8], severity=severity, **kw)


def launch_failed(message=DATAFLOW_LAUNCHER_FAILED_LINE, job_name=RUN, **kw):
    return dataflow_launch_failed_entry(PROJECT, DATAFLOW_JOB, job_name, "europe-west1", WHEN,
                                        "lf-" + message[:8], message=message, **kw)


def _launcher_log(message, severity="INFO"):
    return dataflow_line(message, severity, log=DATAFLOW_LAUNCHER_LOG)


def _names_only_in_entry_labels(entry):
    """The entry with resource.labels naming no job: the dataflow.googleapis.com/* labels still do."""
    labels = {k: v for k, v in entry["resource"]["labels"].items() if k not in ("job_id", "job_name")}
    return {**entry, "resource": {**entry["resource"], "labels": labels}}


def audit(**kw):
    return deploy_model_audit_entry(PROJECT, "europe-west1", "4455", "777", WHEN, "audit-1", **kw)


def _worker_log(message):
    entry = dataflow_line(message, severity="ERROR")
    entry["logName"] = f"projects/{PROJECT}/logs/dataflow.googleapis.com%2Fworker"
    return entry


VERTEX_OK = (JobKind.VERTEX_CUSTOM_JOB, VERTEX_JOB, JobOutcome.SUCCEEDED)
VERTEX_FAILED = (JobKind.VERTEX_CUSTOM_JOB, VERTEX_JOB, JobOutcome.FAILED)
VERTEX_CANCELLED = (JobKind.VERTEX_CUSTOM_JOB, VERTEX_JOB, JobOutcome.CANCELLED)
DATAFLOW_FAILED = (JobKind.DATAFLOW_JOB, DATAFLOW_JOB, JobOutcome.FAILED)
OPERATION = f"projects/{PROJECT}/locations/europe-west1/endpoints/4455/operations/777"

# Entries the job-events sink must forward, with what classify must say about them.
TERMINAL = [
    ("vertex succeeded", vertex_job_terminal_entry(PROJECT, VERTEX_JOB, "succeeded", WHEN, "a"), VERTEX_OK),
    ("vertex failed", vertex_job_terminal_entry(PROJECT, VERTEX_JOB, "failed", WHEN, "b"), VERTEX_FAILED),
    ("vertex cancelled", vertex_job_terminal_entry(PROJECT, VERTEX_JOB, "cancelled", WHEN, "c"), VERTEX_CANCELLED),
    ("vertex text only", vertex_line("Job completed successfully."), VERTEX_OK),
    ("vertex json payload", vertex_line("Job failed.", structured=True), VERTEX_FAILED),
    ("vertex cancelled spelling", vertex_line("Job cancelled."), VERTEX_CANCELLED),
    ("vertex state label only", vertex_line("The job has ended.", state="JOB_STATE_FAILED"), VERTEX_FAILED),
    ("dataflow failed", dataflow_line("Workflow failed.", "ERROR"), DATAFLOW_FAILED),
    ("dataflow failed causes", dataflow_line("Workflow failed. Causes: S05:Read failed.", "ERROR"), DATAFLOW_FAILED),
    ("dataflow json payload", dataflow_line("Workflow failed.", "ERROR", structured=True), DATAFLOW_FAILED),
    ("dataflow launch failed", launch_failed(), DATAFLOW_FAILED),
    ("dataflow launch failed, launcher log", launch_failed(log=DATAFLOW_LAUNCHER_LOG), DATAFLOW_FAILED),
    ("dataflow launch failed, json payload", launch_failed(structured=True), DATAFLOW_FAILED),
    ("dataflow launch failed, after its severity", launch_failed("ERROR: " + DATAFLOW_LAUNCHER_FAILED_LINE),
     DATAFLOW_FAILED),
    ("dataflow launch failed, another reason",
     launch_failed("Error occurred in the launcher container: Template launch failed: timeout."), DATAFLOW_FAILED),
    ("dataflow launch failed, names in entry labels", _names_only_in_entry_labels(launch_failed()), DATAFLOW_FAILED),
    ("deploy done", audit(deployed_model_id="dm-1"), (JobKind.VERTEX_DEPLOY_MODEL, OPERATION, JobOutcome.SUCCEEDED)),
    ("deploy error", audit(error=(9, "model failed to load")), (JobKind.VERTEX_DEPLOY_MODEL, OPERATION, JobOutcome.FAILED)),
    ("deploy cancelled", audit(error=(1, "cancelled")), (JobKind.VERTEX_DEPLOY_MODEL, OPERATION, JobOutcome.CANCELLED)),
]

# The jobs' ordinary lines: neither forwarded nor terminal.
ORDINARY = [
    ("vertex provisioning", vertex_line("Waiting for job to be provisioned.", state="QUEUED")),
    ("vertex waiting", vertex_line("Waiting for training program to start.")),
    ("vertex preparing", vertex_line("Job is preparing.")),
    ("vertex running", vertex_line("Job is running.", state="RUNNING")),
    ("vertex worker says failed", vertex_line("Job failed.", task_name="workerpool0-0", severity="ERROR")),
    ("vertex worker epoch", vertex_line("Epoch 3/5 loss: 1.21", task_name="workerpool0-0", structured=True)),
    ("vertex mention mid-line", vertex_line("Retrying: Job failed. earlier attempt")),
    ("dataflow step", dataflow_line("Executing success step success22", "DEBUG")),
    ("dataflow started", dataflow_line("Workflow started.")),
    ("dataflow worker log", _worker_log("Workflow failed.")),
    ("dataflow launch exit status", dataflow_line(LAUNCH_EXIT_LINE.format(code=13), "ERROR")),
    ("dataflow launch cause at INFO", _launcher_log("preprocess: error: no files match 'gs://b/data/x.parquet'")),
    ("dataflow launcher line in a worker log", _worker_log(DATAFLOW_LAUNCHER_FAILED_LINE)),
    ("dataflow launcher mention mid-line", dataflow_line("Retrying: " + DATAFLOW_LAUNCHER_FAILED_LINE, "ERROR")),
    ("deploy started", audit(first=True, last=False)),
    ("undeploy done", {**audit(), "protoPayload": {**audit()["protoPayload"],
                                                   "methodName": "google.cloud.aiplatform.v1.EndpointService.UndeployModel"}}),
    ("gce line", {"logName": f"projects/{PROJECT}/logs/syslog", "resource": {"type": "gce_instance", "labels": {}},
                  "textPayload": "Job completed successfully.", "severity": "INFO", "timestamp": WHEN}),
]

# Classified as a job end, but not one of ours, so the sink does not forward it.
FOREIGN = [
    ("other dataflow job", dataflow_line("Workflow failed.", "ERROR", job_name="nightly-etl")),
    ("other dataflow job's launch", launch_failed(job_name="nightly-etl")),
]

