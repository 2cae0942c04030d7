"""Local "Dataflow" and "Vertex AI training": the real pipeline and trainer as child processes.

A job has an id, a state and a child process. Preprocessing runs the Beam pipeline on DirectRunner
behind the checks a Flex Template's launcher makes (`python -m local_cloud.jobs.launcher`, the
arguments of `python -m beam_pipeline.run`); training runs the CustomJob's python module with the
AIP_* variables Vertex AI sets. Cloud Storage URIs of the local buckets (gs://B/x) are handed to the
child as paths of the bucket directories, as Vertex AI hands /gcs/B/x through its Cloud Storage
FUSE mount.

Each job writes LogEntries shaped like the cloud's (resource ml_job / dataflow_step): its output
lines as ordinary entries, and at the end the terminal line the cloud writes ("Job completed
successfully.", "Job failed.", ...). A Dataflow job that fails writes "Workflow failed. Causes: ..."
once its pipeline has started, and the launcher's failure line ("Error occurred in the launcher
container: ...") when it failed before, as a Flex Template whose program exits in the launcher
does. The log router decides, with the sinks' filters, which of them go on to Pub/Sub.

The jobs' records live on disk (`<state>/jobs/<id>.json`, replaced whole on every change), so they
outlive the local cloud. A job's process dies with the cloud (`local_cloud.child_processes`); in the
cloud the job would have run on, on machines of its own, so a new cloud on the same state
directory resumes every job its record shows unfinished (`resume`): the same id, command and
output, run again from its start (both programs write their outputs whole, so a second run
replaces a first one's partial output), and it ends with the state and terminal line it would have
had. A job is never left RUNNING with nothing behind it.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from events.log_entries import DATAFLOW_FAILED_LINE, JobOutcome
from events.timestamps import format_rfc3339
from local_cloud import child_processes
from local_cloud.jobs.launcher import LAUNCHED_LINE
from local_cloud.logging.entries import (
    LAUNCH_EXIT_LINE,
    dataflow_job_message_entry,
    dataflow_launch_failed_entry,
    vertex_job_log_entry,
    vertex_job_terminal_entry,
)

log = logging.getLogger(__name__)

ACTIVE_DATAFLOW = ("JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
FINISHED_STATES = ("JOB_STATE_DONE", "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")
VERTEX_OUTCOMES = {
    "JOB_STATE_SUCCEEDED": JobOutcome.SUCCEEDED,
    "JOB_STATE_FAILED": JobOutcome.FAILED,
    "JOB_STATE_CANCELLED": JobOutcome.CANCELLED,
}


class JobConflict(Exception):
    """A Dataflow job of the same name is active (the API answers 409 ALREADY_EXISTS)."""


@dataclass
class LocalJob:
    kind: str  # "dataflow" | "vertex"
    job_id: str
    name: str  # resource name
    display_name: str
    labels: dict[str, str]
    command: list[str]
    env: dict[str, str]
    resource: dict  # the REST resource as submitted, kept for GET
    state: str = "JOB_STATE_QUEUED"
    created: str = ""
    started: str = ""
    ended: str = ""
    error: str = ""
    process: subprocess.Popen | None = None
    log_lines: list[str] = field(default_factory=list)
    launched: bool = False  # Dataflow: the launch's checks passed and the pipeline started
    exit_code: int | None = None
    restarts: int = 0  # how many times a new local cloud resumed it

    _RECORDED = ("kind", "job_id", "name", "display_name", "labels", "command", "env", "resource", "state",
                 "created", "started", "ended", "error", "launched", "exit_code", "restarts")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def record(self) -> dict:
        return {key: getattr(self, key) for key in self._RECORDED}

    @classmethod
    def from_record(cls, record: dict) -> "LocalJob":
        return cls(**{key: record[key] for key in cls._RECORDED if key in record})


def _now() -> str:
    return format_rfc3339(datetime.now(timezone.utc))


class JobRunner:
    def __init__(self, state_dir: Path, buckets_root: Path, write_log: Callable[[dict], None],
                 project: str = "local-project", region: str = "us-central1",
                 extra_env: dict[str, str] | None = None):
        self.state_dir = Path(state_dir)
        self.buckets_root = Path(buckets_root)
        self.write_log = write_log
        self.project, self.region = project, region
        self.extra_env = dict(extra_env or {})
        self._jobs: dict[str, LocalJob] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._stopping = False
        self._records_dir = self.state_dir / "jobs"
        self._records_dir.mkdir(parents=True, exist_ok=True)
        self._load_records()

    # --- records ---------------------------------------------------------------------------------

    def _load_records(self) -> None:
        for path in sorted(self._records_dir.glob("*.json")):
            try:
                job = LocalJob.from_record(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("job record %s is unreadable (%s); it is left as it is", path, exc)
                continue
            self._jobs[job.job_id] = job

    def _save(self, job: LocalJob) -> None:
        path = self._records_dir / f"{job.job_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(job.record()))
        os.replace(tmp, path)

    def resume(self) -> list[LocalJob]:
        """Run again every job an earlier cloud left unfinished; the jobs resumed."""
        with self._lock:
            unfinished = [job for job in self._jobs.values() if not job.finished and job.process is None]
        for job in [job for job in unfinished if job.state == "JOB_STATE_CANCELLING"]:
            unfinished.remove(job)  # its owner asked it to stop: it ends as it would have
            self._end(job, "JOB_STATE_CANCELLED")
        for job in unfinished:
            job.restarts += 1
            job.launched = False
            log.info("resuming %s job %s (its process ended with the earlier local cloud)", job.kind, job.job_id)
            self._start(job)
        return unfinished

    # --- URIs ------------------------------------------------------------------------------------

    def local_path(self, uri: str) -> str:
        """gs://B/x of a local bucket → its path; anything else unchanged."""
        if uri.startswith("gs://"):
            return str(self.buckets_root / uri[len("gs://"):])
        return uri

    # --- Dataflow --------------------------------------------------------------------------------

    def launch_flex_template(self, launch_parameter: dict) -> LocalJob:
        """projects.locations.flexTemplates.launch: run the preprocessing pipeline."""
        job_name = launch_parameter.get("jobName", "")
        parameters = dict(launch_parameter.get("parameters", {}))
        environment = dict(launch_parameter.get("environment", {}))
        if not job_name or "source" not in parameters or "out" not in parameters:
            raise ValueError("launchParameter needs jobName and the parameters source and out")
        with self._lock:
            for job in self._jobs.values():
                if job.kind == "dataflow" and job.display_name == job_name and job.state in ACTIVE_DATAFLOW:
                    raise JobConflict(f"a job named {job_name!r} is already running ({job.job_id})")
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H_%M_%S")
            job_id = f"{stamp}-{random.getrandbits(60)}"
            source = parameters["source"]
            command = [sys.executable, "-m", "local_cloud.jobs.launcher",
                       "--source", source if source == "bigquery" else self.local_path(source),
                       "--out", self.local_path(parameters["out"]),
                       "--runner", "DirectRunner"]
            if parameters.get("run_id"):
                command += ["--run-id", parameters["run_id"]]
            if parameters.get("limit"):
                command += ["--limit", str(parameters["limit"])]
            resource = {
                "id": job_id, "projectId": self.project, "name": job_name, "location": self.region,
                "type": "JOB_TYPE_BATCH", "labels": environment.get("additionalUserLabels", {}),
                "createTime": _now(),
            }
            job = LocalJob("dataflow", job_id, job_name, job_name, dict(resource["labels"]), command,
                           {}, resource, created=resource["createTime"])
            self._jobs[job_id] = job
        self._start(job)
        return job

    # --- Vertex AI custom jobs -------------------------------------------------------------------

    def create_custom_job(self, custom_job: dict) -> LocalJob:
        """projects.locations.customJobs.create: run the container's command and arguments (or a
        Python package's module), with the AIP_* variables Vertex AI sets."""
        try:
            pool = custom_job["jobSpec"]["workerPoolSpecs"][0]
            program, args = _worker_program(pool)
        except (KeyError, IndexError, TypeError):
            raise ValueError("CustomJob needs jobSpec.workerPoolSpecs[0].containerSpec.command, or a "
                             "pythonPackageSpec.pythonModule") from None
        base = custom_job["jobSpec"].get("baseOutputDirectory", {}).get("outputUriPrefix", "")
        job_id = str(next(self._counter) * 1_000_003 + random.getrandbits(40))
        name = f"projects/{self.project}/locations/{self.region}/customJobs/{job_id}"
        env = {"CLOUD_ML_JOB_ID": job_id}
        if base:
            base = base.rstrip("/") + "/"
            # What Vertex AI sets for a job with a base output directory (CustomJobSpec reference).
            env.update(AIP_MODEL_DIR=self.local_path(base + "model/"),
                       AIP_CHECKPOINT_DIR=self.local_path(base + "checkpoints/"),
                       AIP_TENSORBOARD_LOG_DIR=self.local_path(base + "logs/"))
        args = [self.local_path(a) for a in args]
        resource = dict(custom_job, name=name, state="JOB_STATE_PENDING", createTime=_now())
        job = LocalJob("vertex", job_id, name, custom_job.get("displayName", job_id),
                       dict(custom_job.get("labels", {})), [*program, *args], env,
                       resource, state="JOB_STATE_PENDING", created=resource["createTime"])
        with self._lock:
            self._jobs[job_id] = job
        self._start(job)
        return job

    def list_custom_jobs(self, label_filter: dict[str, str] | None = None) -> list[LocalJob]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.kind == "vertex"]
        if label_filter:
            jobs = [j for j in jobs if all(j.labels.get(k) == v for k, v in label_filter.items())]
        return jobs

    def get(self, job_id: str) -> LocalJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[LocalJob]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> None:
        job = self.get(job_id)
        if job and job.process and job.process.poll() is None:
            job.state = "JOB_STATE_CANCELLING"
            self._save(job)
            os.killpg(job.process.pid, signal.SIGTERM)

    # --- running ---------------------------------------------------------------------------------

    def _start(self, job: LocalJob) -> None:
        log_path = self._records_dir / f"{job.job_id}.log"
        env = {**os.environ, **self.extra_env, **job.env, "PYTHONUNBUFFERED": "1"}
        # Its own process group (stop() ends every grandchild too), dying with the local cloud.
        job.process = child_processes.popen(
            job.command, state_dir=self.state_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        job.state = "JOB_STATE_RUNNING"
        job.started = job.started or _now()
        self._save(job)
        threading.Thread(target=self._follow, args=(job, log_path), name=f"job-{job.job_id}",
                         daemon=True).start()

    def _follow(self, job: LocalJob, log_path: Path) -> None:
        assert job.process is not None and job.process.stdout is not None
        with open(log_path, "a") as log_file:
            for line in job.process.stdout:
                log_file.write(line)
                line = line.rstrip("\n")
                if job.kind == "dataflow" and not job.launched and line == LAUNCHED_LINE:
                    job.launched = True  # the runner's own signal: kept in the file, not logged
                    continue
                job.log_lines = (job.log_lines + [line])[-200:]
                if line:
                    self.write_log(self._entry(job, line, "INFO"))
        code = job.process.wait()
        if self._stopping and code < 0 and job.state != "JOB_STATE_CANCELLING":
            # The local cloud stopped, not the job's owner cancelling it: in the cloud the job would
            # have run on, so it stays unfinished on disk and the next local cloud resumes it.
            job.process = None
            return
        job.exit_code = code
        if job.state == "JOB_STATE_CANCELLING":
            final = "JOB_STATE_CANCELLED"
        elif code == 0:
            final = "JOB_STATE_SUCCEEDED" if job.kind == "vertex" else "JOB_STATE_DONE"
        else:
            final = "JOB_STATE_FAILED"
            tail = [l for l in job.log_lines if l.strip()][-3:]
            job.error = f"exit code {code}: " + " | ".join(tail)
        self._end(job, final)

    def _end(self, job: LocalJob, final: str) -> None:
        """The job reached `final`: its record says so, then the service's terminal lines are logged."""
        job.state = final
        job.ended = _now()
        job.resource.update(state=final, endTime=job.ended, startTime=job.started)
        if job.error:
            job.resource["error"] = {"code": 13, "message": job.error}
        self._save(job)
        for entry in self._terminal_entries(job):
            self.write_log(entry)

    def _entry(self, job: LocalJob, text: str, severity: str) -> dict:
        insert_id = uuid.uuid4().hex[:16]
        now = datetime.now(timezone.utc)
        if job.kind == "vertex":
            return vertex_job_log_entry(self.project, job.job_id, text, now, insert_id,
                                        task_name="workerpool0-0", severity=severity)
        return dataflow_job_message_entry(self.project, job.job_id, job.display_name, self.region, text,
                                          now, insert_id, severity=severity)

    def _terminal_entries(self, job: LocalJob) -> list[dict]:
        """What the service logs as the job ends, the line that ends it last."""
        now = datetime.now(timezone.utc)
        insert_id = uuid.uuid4().hex[:16]
        if job.kind == "vertex":
            outcome = VERTEX_OUTCOMES.get(job.state, JobOutcome.FAILED)
            return [vertex_job_terminal_entry(self.project, job.job_id, outcome, now, insert_id)]
        if job.state == "JOB_STATE_DONE":
            return [self._entry(job, "Worker pool stopped.", "INFO")]
        if job.state == "JOB_STATE_FAILED" and not job.launched:
            # It failed where the cloud runs the template's program, in the launcher container (its
            # arguments, settings or source): no pipeline ran, so no "Workflow failed.".
            return [self._entry(job, LAUNCH_EXIT_LINE.format(code=job.exit_code), "ERROR"),
                    dataflow_launch_failed_entry(self.project, job.job_id, job.display_name, self.region,
                                                 now, insert_id)]
        return [self._entry(job, f"{DATAFLOW_FAILED_LINE} Causes: {job.error or job.state}", "ERROR")]

    def stop(self, timeout: float = 10.0) -> None:
        """End every running job's processes; their records stay unfinished, for `resume`."""
        self._stopping = True
        running = [proc for proc in (job.process for job in self.all()) if proc is not None]
        for proc in running:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _worker_program(pool: dict) -> tuple[list[str], list[str]]:
    """The command a worker pool runs here, and its arguments.

    A container's command runs as it is, but for its interpreter: the image's `python` is this
    environment's, which holds the very packages the image pins. A Python package runs its module.
    """
    if "containerSpec" in pool:
        spec = pool["containerSpec"]
        command = list(spec["command"])
        if not command:
            raise KeyError("command")
        if command[0] in ("python", "python3"):
            command[0] = sys.executable
        return command, list(spec.get("args", []))
    package = pool["pythonPackageSpec"]
    return [sys.executable, "-m", package["pythonModule"]], list(package.get("args", []))
