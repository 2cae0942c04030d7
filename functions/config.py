"""The one configuration object of the chain, read from the environment.

The same function code runs in the cloud and locally; only `platform` (and the few settings each
platform needs) differ. deploy.sh sets these variables on the deployed functions; the local cloud
sets them on the functions-framework servers it starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

PLATFORMS = ("local", "gcp")
LOCAL_TRAINING_IMAGE = "mlrelay-trainer:local"
LOCAL_SERVING_IMAGE = "mlrelay-server:local"


# Each setting's environment variable, MLRELAY_<NAME>: the one table from_env and to_env read.
ENV_NAMES = {
    "platform": "PLATFORM", "project": "PROJECT", "region": "REGION", "bucket": "BUCKET",
    "start_topic": "START_TOPIC", "job_events_topic": "JOB_EVENTS_TOPIC",
    "dead_letter_topic": "DEAD_LETTER_TOPIC", "dead_letter_subscription": "DEAD_LETTER_SUBSCRIPTION",
    "release_topic": "RELEASE_TOPIC",
    "model_name": "MODEL_NAME", "endpoint_id": "ENDPOINT_ID", "default_source": "DEFAULT_SOURCE",
    "canary_percent": "CANARY_PERCENT", "bake_seconds": "BAKE_SECONDS",
    "gate_min_improvement": "GATE_MIN_IMPROVEMENT", "gate_tolerance": "GATE_TOLERANCE",
    "gate_slice_tolerance": "GATE_SLICE_TOLERANCE",
    "reconcile_topic": "RECONCILE_TOPIC", "reconcile_after_seconds": "RECONCILE_AFTER_SECONDS",
    "tasks_queue": "TASKS_QUEUE", "tasks_service_account": "TASKS_SA", "debounce_seconds": "DEBOUNCE_SECONDS",
    "max_active_runs": "MAX_ACTIVE_RUNS", "max_queued_runs": "MAX_QUEUED_RUNS",
    "daily_run_budget": "DAILY_RUN_BUDGET",
    "local_root": "LOCAL_ROOT", "local_api": "LOCAL_API", "local_models_api": "LOCAL_MODELS_API",
    "local_tasks_api": "LOCAL_TASKS_API",
    "dataflow_service_account": "DATAFLOW_SA", "training_service_account": "TRAINING_SA",
    "training_image": "TRAINING_IMAGE", "serving_image": "SERVING_IMAGE",
    "flex_template": "FLEX_TEMPLATE",
    "max_workers": "MAX_WORKERS", "serving_machine_type": "SERVING_MACHINE_TYPE",
}


class ConfigError(ValueError):
    """A setting is missing or malformed: the function cannot run until it is fixed."""


# The admission settings and the least value each may take (a cap of 0 active runs would start none).
_ADMISSION_MINIMUMS = {"max_active_runs": 1, "max_queued_runs": 0, "daily_run_budget": 0}


def _whole_number(variable: str, raw: str, least: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{variable} must be a whole number, not {raw!r}") from None
    if value < least:
        raise ConfigError(f"{variable} must be {least} or more, not {value}")
    return value


@dataclass(frozen=True)
class Config:
    platform: str = "local"
    project: str = "local-project"
    region: str = "us-central1"
    bucket: str = "mlrelay"
    start_topic: str = "mlrelay-start"
    job_events_topic: str = "mlrelay-job-events"
    dead_letter_topic: str = "mlrelay-dead-letter"
    # A topic keeps nothing by itself: the dead letters wait in this pull subscription until a
    # user lists and replays them (mlrelay dead-letters).
    dead_letter_subscription: str = "mlrelay-dead-letter-hold"
    # The bake's end: a Cloud Tasks task on `tasks_queue` publishes here, as `tasks_service_account`.
    release_topic: str = "mlrelay-release"
    model_name: str = "babyweight"
    endpoint_id: str = "babyweight"
    # The release policy's settings (functions.release.policy gives each reason): the share of
    # traffic a blessed candidate takes beside the champion while it bakes, for how long, and the
    # gate's bounds. A run request's "release" object may override them for one run.
    canary_percent: int = 10
    bake_seconds: int = 900
    gate_min_improvement: float = 0.05
    gate_tolerance: float = 0.002
    gate_slice_tolerance: float = 0.01
    tasks_queue: str = "mlrelay-release"
    tasks_service_account: str = ""
    # The reconcile sweep: Cloud Scheduler publishes to this topic every few minutes, and the sweep
    # asks the APIs about each unfinished run that has written nothing for this many seconds.
    reconcile_topic: str = "mlrelay-reconcile"
    reconcile_after_seconds: int = 600
    # The same request from the same origin (one trigger file's name, one topic) within this many
    # seconds of the last is refused, not run again: a burst of uploads or publishes starts one
    # run. 0 turns the guard off.
    debounce_seconds: int = 60
    # Admission (functions.stages.admission): at most `max_active_runs` runs between their start
    # and their end at once; up to `max_queued_runs` more wait, each started by the event that ends
    # an active run; beyond that a request is refused. `daily_run_budget` runs at most are admitted
    # in any 24 h (0: no budget). Each refusal names its setting in the run ledger.
    max_active_runs: int = 2
    max_queued_runs: int = 8
    daily_run_budget: int = 24
    # The source preprocessing reads when a request names none: "bigquery" in the cloud, an object
    # of the bucket locally.
    default_source: str = "data/natality.parquet"
    # local: the directory that holds one directory per bucket, and the local cloud's API.
    local_root: str = ""
    local_api: str = ""
    local_models_api: str = ""
    local_tasks_api: str = ""
    # gcp: accounts, images and the template deploy.sh provisions.
    dataflow_service_account: str = ""
    training_service_account: str = ""
    # Our own training and serving images (deploy/training_image, deploy/serving_image), which
    # deploy.sh builds into the project's Artifact Registry; these defaults are only the names a
    # local `docker build -t` would give them (the local cloud runs the images' code, not the
    # images), and the cloud refuses them (functions.adapters.check_gcp_config).
    training_image: str = LOCAL_TRAINING_IMAGE
    serving_image: str = LOCAL_SERVING_IMAGE
    flex_template: str = ""
    max_workers: int = 4
    # gcp: the machine each deployed model version is served on (dedicated resources, one replica).
    serving_machine_type: str = "n1-standard-2"
    extra: Mapping[str, str] = field(default_factory=dict)

    def uri(self, name: str) -> str:
        """The gs:// URI of an object of the pipeline bucket."""
        return f"gs://{self.bucket}/{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env
        values: dict = {field: env[f"MLRELAY_{name}"] for field, name in ENV_NAMES.items()
                        if f"MLRELAY_{name}" in env}
        platform = values.setdefault("platform", cls.platform)
        if platform not in PLATFORMS:
            raise ConfigError(f"MLRELAY_PLATFORM must be one of {PLATFORMS}, not {platform!r}")
        if "project" not in values and "GOOGLE_CLOUD_PROJECT" in env:
            values["project"] = env["GOOGLE_CLOUD_PROJECT"]
        values.setdefault("default_source", "bigquery" if platform == "gcp" else cls.default_source)
        try:
            for name in ("canary_percent", "bake_seconds", "max_workers", "debounce_seconds",
                         "reconcile_after_seconds"):
                if name in values:
                    values[name] = int(values[name])
            for name in ("gate_min_improvement", "gate_tolerance", "gate_slice_tolerance"):
                if name in values:
                    values[name] = float(values[name])
        except ValueError as exc:
            raise ConfigError(f"a numeric MLRELAY_ setting is not a number: {exc}") from None
        for name, least in _ADMISSION_MINIMUMS.items():
            if name in values:
                values[name] = _whole_number(f"MLRELAY_{ENV_NAMES[name]}", values[name], least)
        cfg = cls(**values)
        try:
            cfg.release_policy()
        except ValueError as exc:  # InvalidReleasePolicy names the setting and its range
            raise ConfigError(f"MLRELAY_ release settings: {exc}") from None
        if cfg.reconcile_after_seconds < 1:
            raise ConfigError(f"MLRELAY_RECONCILE_AFTER_SECONDS must be 1 or more, not {cfg.reconcile_after_seconds}")
        if cfg.debounce_seconds < 0:
            raise ConfigError(f"MLRELAY_DEBOUNCE_SECONDS must be 0 or more, not {cfg.debounce_seconds}")
        if platform == "local" and not (cfg.local_root and cfg.local_api and cfg.local_models_api
                                        and cfg.local_tasks_api):
            raise ConfigError("local platform needs MLRELAY_LOCAL_ROOT, MLRELAY_LOCAL_API, "
                              "MLRELAY_LOCAL_MODELS_API and MLRELAY_LOCAL_TASKS_API (set by `mlrelay up`)")
        return cfg

    def release_policy(self):
        """The release policy these settings make (functions.release.policy.ReleasePolicy)."""
        from functions.release.policy import ReleasePolicy

        return ReleasePolicy(min_improvement_over_mean=self.gate_min_improvement, tolerance=self.gate_tolerance,
                             slice_tolerance=self.gate_slice_tolerance, canary_percent=self.canary_percent,
                             bake_seconds=self.bake_seconds)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces this configuration (for child processes and deploy.sh)."""
        values = {name: str(getattr(self, field)) for field, name in ENV_NAMES.items()}
        return {f"MLRELAY_{name}": value for name, value in values.items() if value != ""}
