"""The local cloud: every stand-in wired together as the cloud wires the real services.

    bucket dir ──(inotify)──► finalize ──► Eventarc storage trigger ──► on_preprocess_output
                                   └─────► GCS notification (triggers/) ──► start topic
    start topic ──► Eventarc Pub/Sub trigger ──► start_pipeline
    jobs ──► LogEntries ──► log router ──(sink filters)──► job-events topic ──► on_training_complete
    model service (registry + endpoint) ──► deploy's audit entry ──► log router

The functions run as functions-framework servers on 127.0.0.1, started and stopped here, and
started again when one dies (the platform starts a new instance); the jobs run as child processes.
`LocalCloud.stop()` ends every process it started, and a `kill -9` of the cloud takes them with it
(`local_cloud.child_processes`).

What the cloud keeps survives a crash: the broker's messages, the jobs' records, the registry, the
bucket. A new cloud on the same state directory clears what an earlier one left running, resumes
its unfinished jobs and deploys, delivers every message not yet acknowledged, and notifies the
objects written while no cloud ran.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from werkzeug.serving import make_server

from events import sink_filters
from functions.config import Config
from local_cloud import child_processes
from local_cloud.jobs.control_api import ControlApi
from local_cloud.jobs.runner import JobRunner
from local_cloud.logging.entries import deploy_model_audit_entry
from local_cloud.loopback_server import free_port
from local_cloud.logging.router import LogRouter, Sink
from local_cloud.pubsub.broker import Broker
from local_cloud.pubsub.eventarc import PubsubMessagePublished, StorageObjectFinalized
from local_cloud.pubsub.grpc_front import serve_publisher
from local_cloud.scheduler import ScheduleEntry, Scheduler
from local_cloud.storage.bucket import BucketWatcher, FinalizedObject
from local_cloud.storage.notifications import eventarc_event_attributes, notification_attributes
from local_cloud.tasks.http import CloudTasksServer
from local_cloud.tasks.pubsub_target import NotAPubsubPublish, parse_pubsub_publish
from local_cloud.tasks.service import CloudTasksService
from local_cloud.tasks.state import FileTaskStore
from model_server.errors import ApiError
from local_cloud.vertex.http import ModelServiceServer
from local_cloud.vertex.serving_figures import ServingFigures
from local_cloud.vertex.registry import ModelService

log = logging.getLogger(__name__)
# TensorFlow (loaded by the endpoint when a model is deployed) logs its C++ start-up notices to the
# console; keep warnings and errors only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("start_pipeline", "on_preprocess_output", "on_training_complete", "on_release_event",
             "reconcile_runs")
# A canary bakes this long locally (the cloud's default is 15 minutes): long enough for a demo's
# predictions to reach both models, short enough to wait for.
LOCAL_BAKE_SECONDS = 5
# The reconcile sweep's schedule and quiet time: every few minutes and ten in the cloud (deploy.sh),
# seconds here, so that a lost event costs a demo seconds.
LOCAL_SWEEP_CRON = "* * * * * */5"  # croniter's sixth field: every 5 seconds
LOCAL_RECONCILE_AFTER_SECONDS = 10
STATE_FILE = "local-cloud.json"
# The bucket's Pub/Sub notification reports objects under this prefix to the start topic.
TRIGGER_PREFIX = "triggers/"


@dataclass
class LocalCloudSettings:
    root: Path
    config: Config = field(default_factory=Config)
    schedules: list[ScheduleEntry] = field(default_factory=list)
    # Eventarc's retry runs on Pub/Sub's backoff (10 s .. 600 s in the cloud); locally shorter, so a
    # transient fault is retried within the same demo.
    min_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_delivery_attempts: int = 5
    duplicate_deliveries: int = 1
    function_env: dict[str, str] = field(default_factory=dict)
    scheduler_now: Callable[[], datetime] | None = None  # the scheduler's clock (tests shift it)
    bake_seconds: int = LOCAL_BAKE_SECONDS
    sweep_cron: str | None = LOCAL_SWEEP_CRON  # None: no reconcile schedule (tests of lost events)
    reconcile_after_seconds: int = LOCAL_RECONCILE_AFTER_SECONDS


LOCK_FILE = "local-cloud.lock"


class LocalCloudBusy(RuntimeError):
    """Another local cloud runs on this state directory (two would number operations twice)."""


def hold_root(root: Path):
    """Hold the state directory for this process: an exclusive flock, released when the process
    ends however it ends (a kill -9 included), so a crashed cloud never blocks the next one."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise LocalCloudBusy(f"another local cloud runs on {root} (pid {holder}): stop it, or give another "
                             "--root") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class LocalCloud:
    def __init__(self, settings: LocalCloudSettings):
        self.settings = settings
        self.root = Path(settings.root).resolve()
        self.buckets_root = self.root / "buckets"
        self.bucket_dir = self.buckets_root / settings.config.bucket
        self.processes: dict[str, subprocess.Popen] = {}
        self._stopping = False
        self.ports: dict[str, int] = {}
        self._servers: list = []
        self.started_at: float | None = None
        self.ready_s: float | None = None

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> "LocalCloud":
        self._root_lock = hold_root(self.root)
        child_processes.sweep_stale(self.root)  # what a cloud killed here before left running
        self._stopping = False
        began = time.monotonic()
        self.started_at = time.time()
        for sub in ("triggers", "runs", "data", "packages", "tmp"):
            (self.bucket_dir / sub).mkdir(parents=True, exist_ok=True)
        base = self.settings.config
        self.ports = {"api": free_port(), "pubsub": 0,
                      **{name: free_port() for name in FUNCTIONS}}
        api_url = f"http://127.0.0.1:{self.ports['api']}"
        self.config = Config(**{**base.__dict__, "platform": "local", "local_root": str(self.buckets_root),
                                "local_api": api_url, "bake_seconds": self.settings.bake_seconds,
                                "reconcile_after_seconds": self.settings.reconcile_after_seconds})
        cfg = self.config

        # On disk, as Pub/Sub is durable: what was published before a crash is delivered after it.
        self.broker = Broker(project=cfg.project, store=self.root / "pubsub.sqlite")
        for topic in (cfg.start_topic, cfg.job_events_topic, cfg.dead_letter_topic, cfg.release_topic,
                      cfg.reconcile_topic, self._storage_topic):
            self.broker.create_topic(topic)
        self.broker.subscribe_pull(cfg.dead_letter_subscription, cfg.dead_letter_topic)  # as deploy.sh does
        self.broker.subscribe_callback("dead-letter-log", cfg.dead_letter_topic, self._log_dead_letter)

        self.router = LogRouter(self.root / "logs" / "entries.jsonl", self._sinks(), self.broker.publish)
        self.jobs = JobRunner(self.root, self.buckets_root, self.router.write, cfg.project, cfg.region,
                              extra_env={"PYTHONPATH": self._pythonpath()})
        self.models = ModelService(self.root / "models", cfg.project, cfg.region,
                                   on_operation_done=self._deploy_done,
                                   resolve_artifact_path=self.jobs.local_path, cloud_state=self.root)
        self.models.create_endpoint(cfg.endpoint_id, cfg.endpoint_id)  # as deploy.sh does, once
        # On disk: a bake that spans a crash is judged on the requests before it as well.
        self.models_server = ModelServiceServer(self.models, "127.0.0.1", 0,
                                                ServingFigures(log_path=self.root / "serving-figures.jsonl"))
        self.ports["models"] = self.models_server.port
        # On disk: a bake's end scheduled before a crash still comes after it.
        self.tasks = CloudTasksService(self._deliver_task, store=FileTaskStore(self.root / "tasks.json"))
        queue = f"projects/{cfg.project}/locations/{cfg.region}/queues/{cfg.tasks_queue}"
        try:
            self.tasks.get_queue(queue)
        except ApiError:  # NOT_FOUND: the first start on this directory; deploy.sh creates it in the cloud
            self.tasks.create_queue(f"projects/{cfg.project}/locations/{cfg.region}", {"name": queue})
        self.tasks_server = CloudTasksServer(self.tasks, "127.0.0.1", 0)
        self.ports["tasks"] = self.tasks_server.port
        self.config = cfg = replace(cfg, local_models_api=f"http://127.0.0.1:{self.ports['models']}",
                                    local_tasks_api=self.tasks_server.url)
        self.api = app = ControlApi(self.jobs)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log on the console
        server = make_server("127.0.0.1", self.ports["api"], app, threaded=True)
        self._serve(server)
        grpc_server, self.ports["pubsub"] = serve_publisher(self.broker)
        self._grpc = grpc_server

        self._start_functions()
        self._subscribe_functions()
        if wait_ready:
            self._wait_functions_ready()  # before any delivery: a function not yet up would refuse it
        self.broker.start()
        self.jobs.resume()
        self.watcher = BucketWatcher(cfg.bucket, self.bucket_dir, self._on_finalize,
                                     watermark=self.root / "storage-watermark")
        self.watcher.start()
        schedules = list(self.settings.schedules)
        if self.settings.sweep_cron:  # as deploy.sh's Cloud Scheduler job
            schedules.append(ScheduleEntry("reconcile", self.settings.sweep_cron, cfg.reconcile_topic, b"{}"))
        self.scheduler = Scheduler(schedules, self.broker.publish,
                                   **({"now": self.settings.scheduler_now} if self.settings.scheduler_now else {}))
        self.scheduler.start()
        self.ready_s = time.monotonic() - began
        self._write_state()
        return self

    def stop(self) -> None:
        if getattr(self, "_root_lock", None) is None:
            return  # never started, or refused the directory another cloud holds: nothing of ours runs
        self._stopping = True  # no function server is started again from here on
        # Jobs end before the broker stops, so their last log lines still have somewhere to go.
        for step in (lambda: self.scheduler.stop(), lambda: self.watcher.stop(), lambda: self.jobs.stop(),
                     lambda: self.tasks_server.close(),
                     lambda: self.broker.stop(timeout=5), lambda: self._grpc.stop(grace=1),
                     lambda: self.models.close(), lambda: self.models_server.close()):
            try:
                step()
            except AttributeError:
                pass  # never started
            except Exception:
                log.exception("while stopping the local cloud")
        for server in self._servers:
            server.shutdown()
        for name, proc in self.processes.items():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        state = self.root / STATE_FILE
        if state.exists():
            state.unlink()
        lock = getattr(self, "_root_lock", None)
        if lock is not None:
            lock.close()  # the flock goes with it
            self._root_lock = None

    @property
    def endpoint_url(self) -> str:
        cfg = self.config
        return f"{cfg.local_models_api}/v1/projects/{cfg.project}/locations/{cfg.region}/endpoints/{cfg.endpoint_id}"

    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- wiring ----------------------------------------------------------------------------------

    @property
    def _storage_topic(self) -> str:
        # Eventarc's Cloud Storage trigger rides on a Pub/Sub topic of its own.
        return f"eventarc-storage-{self.settings.config.bucket}"

    def _sinks(self) -> list[Sink]:
        topic = self.settings.config.job_events_topic
        return [Sink("job-events", sink_filters.filter_for("job-events"), topic)]

    def _pythonpath(self) -> str:
        return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))

    def _function_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/"

    def _start_functions(self) -> None:
        for name in FUNCTIONS:
            self._start_function(name)
            threading.Thread(target=self._supervise, args=(name,), name=f"supervise-{name}", daemon=True).start()

    def _start_function(self, name: str) -> None:
        env = {**os.environ, **self.config.to_env(), **self.settings.function_env,
               "PYTHONPATH": self._pythonpath(), "PYTHONUNBUFFERED": "1"}
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"function-{name}.log", "ab") as out:
            self.processes[name] = child_processes.popen(
                [sys.executable, "-m", "functions_framework", "--target", name, "--signature-type",
                 "cloudevent", "--source", str(REPO_ROOT / "functions" / "main.py"),
                 "--host", "127.0.0.1", "--port", str(self.ports[name])],
                state_dir=self.root, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))

    def _supervise(self, name: str) -> None:
        """Start a function's server again when it dies, as the platform starts a new instance.

        It comes back on the same port, so its push subscription's URL stays right; deliveries that
        failed meanwhile are retried by the subscription's backoff. Waiting on the process is no
        polling: the thread sleeps in waitpid until the server exits.
        """
        restarts = 0
        while True:
            code = self.processes[name].wait()
            if self._stopping:
                return
            restarts += 1
            log.warning("function %s exited with status %s; starting it again (restart %d)", name, code, restarts)
            time.sleep(min(10.0, 0.2 * 2 ** min(restarts, 6)))  # a server that dies at start is not spun
            if self._stopping:
                return
            self._start_function(name)

    def _wait_functions_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(FUNCTIONS)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"function {name} exited at start; see {self.root}/logs/function-{name}.log")
                try:
                    with socket.create_connection(("127.0.0.1", self.ports[name]), timeout=0.2):
                        pending.discard(name)
                except OSError:
                    pass
            if pending:
                time.sleep(0.05)
        if pending:
            raise RuntimeError(f"functions not ready after {timeout_s:.0f} s: {', '.join(sorted(pending))}")

    def _subscribe_functions(self) -> None:
        cfg, s = self.config, self.settings
        retry = dict(retry=True, min_backoff_s=s.min_backoff_s, max_backoff_s=s.max_backoff_s,
                     max_delivery_attempts=s.max_delivery_attempts, dead_letter_topic=cfg.dead_letter_topic,
                     duplicate_deliveries=s.duplicate_deliveries)
        self.broker.subscribe_push("eventarc-start-pipeline", cfg.start_topic,
                                   self._function_url("start_pipeline"),
                                   event_format=PubsubMessagePublished(cfg.start_topic), **retry)
        self.broker.subscribe_push("eventarc-on-preprocess-output", self._storage_topic,
                                   self._function_url("on_preprocess_output"),
                                   event_format=StorageObjectFinalized(cfg.bucket), **retry)
        self.broker.subscribe_push("eventarc-on-training-complete", cfg.job_events_topic,
                                   self._function_url("on_training_complete"),
                                   event_format=PubsubMessagePublished(cfg.job_events_topic), **retry)
        self.broker.subscribe_push("eventarc-on-release-event", cfg.release_topic,
                                   self._function_url("on_release_event"),
                                   event_format=PubsubMessagePublished(cfg.release_topic), **retry)
        # No retry: a failed sweep is made good by the next tick.
        self.broker.subscribe_push("eventarc-reconcile-runs", cfg.reconcile_topic,
                                   self._function_url("reconcile_runs"),
                                   event_format=PubsubMessagePublished(cfg.reconcile_topic))

    def _deliver_task(self, http_request: dict) -> int:
        """A Cloud Tasks dispatch: the only target the chain schedules is Pub/Sub's publish."""
        try:
            publish = parse_pubsub_publish(http_request)
        except NotAPubsubPublish as exc:
            log.warning("a task's target is not a Pub/Sub publish: %s", exc)
            return 400
        project, _, topic = publish.topic.removeprefix("projects/").partition("/topics/")
        if project != self.config.project or not self.broker.has_topic(topic):
            return 404
        for message in publish.messages:
            self.broker.publish(topic, message.data, dict(message.attributes))
        return 200

    def _on_finalize(self, obj: FinalizedObject) -> None:
        data = json.dumps(obj.resource).encode()
        self.broker.publish(self._storage_topic, data, eventarc_event_attributes(obj))
        # The bucket's Pub/Sub notification: OBJECT_FINALIZE under triggers/ to the start topic.
        attributes = notification_attributes(obj, TRIGGER_PREFIX)
        if attributes is not None:
            self.broker.publish(self.config.start_topic, data, attributes)

    def _deploy_done(self, operation: dict) -> None:
        """A deploy operation ended: write the audit entry the cloud writes, for the sink to see."""
        parts = operation["name"].split("/")
        if "endpoints" not in parts:
            return  # an upload or undeploy operation: no sink listens for those
        endpoint_id = parts[parts.index("endpoints") + 1]
        error = operation.get("error") or None
        deployed = (operation.get("response") or {}).get("deployedModel", {}).get("id")
        self.router.write(deploy_model_audit_entry(
            self.config.project, self.config.region, endpoint_id, parts[-1], datetime.now(timezone.utc),
            uuid.uuid4().hex[:16], error=(error.get("code", 13), error.get("message", "")) if error else None,
            deployed_model_id=deployed))

    def _log_dead_letter(self, message) -> None:
        with open(self.root / "logs" / "dead-letter.jsonl", "a") as handle:
            handle.write(json.dumps({"message_id": message.message_id, "attributes": dict(message.attributes),
                                     "data": message.data.decode("utf-8", "replace")[:4096]}) + "\n")

    def _serve(self, server) -> None:
        thread = threading.Thread(target=server.serve_forever, name="local-cloud-http", daemon=True)
        thread.start()
        self._servers.append(server)

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "root": str(self.root), "bucket": self.config.bucket,
                 "bucket_dir": str(self.bucket_dir), "api": self.config.local_api,
                 "pubsub_emulator_host": f"127.0.0.1:{self.ports['pubsub']}",
                 "endpoint": self.endpoint_url,
                 "project": self.config.project, "functions": {n: self._function_url(n) for n in FUNCTIONS},
                 "ready_s": self.ready_s}
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.root / STATE_FILE)


def read_state(root: Path) -> dict | None:
    """What a running local cloud wrote about itself (ports, paths), or None if none runs there."""
    path = Path(root) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(state["pid"], 0)
    except (ProcessLookupError, KeyError):
        return None
    return state
