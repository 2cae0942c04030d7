"""The chain orchestrated by polling, as the original Cloud Workflows design ran it.

One workflow per run launches preprocessing, then sleeps ``interval_s`` and checks, again and
again, whether the stage it waits for is done (the manifest exists; the training job's state is
terminal; the deploy operation is done) before it launches the next stage. A stage that ends just
after a check waits almost a whole interval, one that ends just before waits almost none: on
average a hand-off costs half the interval (30 s at the original 60 s).

It drives the same local cloud through the same platform adapters as the functions, under
``polled/<run_id>/`` and with a ``polled_run`` label instead of ``run_id``, so the chain's own
functions see its objects and jobs and leave them alone.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from events.manifest import MANIFEST_NAME
from events.run_request import parse_run_request
from functions.config import Config
from functions.platform import Platform

PREFIX = "polled"
MODEL_NAME = "babyweight-polled"
ENDPOINT_ID = "babyweight-polled"
LABEL = "polled_run"


class PolledRunFailed(RuntimeError):
    """A stage of a polled run ended badly; the message says which and why."""


@dataclass
class PolledRun:
    """What one polled run launched and when (UTC), and the names of its causes."""

    run_id: str
    launched: dict[str, datetime] = field(default_factory=dict)
    manifest_name: str = ""
    training_job_id: str = ""
    operation: str = ""
    polls: int = 0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class PollingOrchestrator:
    """Runs the chain for one run at a time, polling every ``interval_s`` between stages."""

    def __init__(self, platform: Platform, config: Config, interval_s: float, *,
                 sleep: Callable[[float], None] = time.sleep, timeout_s: float = 1800.0):
        if not interval_s > 0:
            raise ValueError(f"the poll interval must be positive, got {interval_s}")
        self.platform = platform
        self.config = config
        self.interval_s = interval_s
        self.sleep = sleep
        self.timeout_s = timeout_s
        # One registry write at a time: creating a model and adding a version to it are two calls,
        # and two runs creating the same model at once would both try to create it.
        self._registry = threading.Lock()

    def run(self, run_id: str, request: dict) -> PolledRun:
        """Preprocess, train and deploy ``run_id``; returns when the deploy is done.

        Raises PolledRunFailed when a stage fails and TimeoutError when one runs past the timeout.
        """
        parsed = parse_run_request(json.dumps(request))
        jobs, models, storage, config = self.platform.jobs, self.platform.models, self.platform.storage, self.config
        base = f"{PREFIX}/{run_id}"
        labels = {LABEL: run_id}
        run = PolledRun(run_id, manifest_name=f"{base}/preprocess/{MANIFEST_NAME}")
        deadline = time.monotonic() + self.timeout_s

        source = config.uri(parsed.source or config.default_source)
        jobs.launch_preprocess(run_id, source, config.uri(f"{base}/preprocess/"), parsed.limit, labels)
        run.launched["preprocessing"] = _now()

        self._poll(run, deadline, lambda: storage.exists(run.manifest_name))
        job = jobs.launch_training(run_id, config.uri(run.manifest_name), config.uri(f"{base}/train/"),
                                   parsed.trainer_args(), labels)
        run.training_job_id = job.job_id
        run.launched["training"] = _now()

        ended = self._poll(run, deadline, lambda: _if(jobs.get_training_job(job.job_id), lambda j: j.terminal))
        if ended.state != "JOB_STATE_SUCCEEDED":
            raise PolledRunFailed(f"training job {job.job_id} ended {ended.state}: {ended.error}")
        with self._registry:
            version = models.upload_version(MODEL_NAME, config.uri(f"{base}/train/model/"), labels)
            operation = models.start_deploy(version, ENDPOINT_ID, {"0": 100}, run_id)
        run.operation = operation.name
        run.launched["deploying"] = _now()

        done = self._poll(run, deadline, lambda: _if(models.get_operation(operation.name), lambda o: o.done))
        if done.error:
            raise PolledRunFailed(f"deploy {operation.name} failed: {done.error}")
        run.launched["deployed"] = _now()
        return run

    def _poll(self, run: PolledRun, deadline: float, check: Callable[[], object]):
        """Sleep an interval, check; until the check gives something true."""
        while True:
            self.sleep(self.interval_s)
            run.polls += 1
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"polled run {run.run_id} waited more than {self.timeout_s:.0f} s for a stage")


def _if(value, condition):
    return value if condition(value) else None
