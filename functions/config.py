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
    "dead_letter_topic": "DEAD_LETTER_TOPIC", "model_name": "MODEL_NAME", "endpoint_id": "ENDPOINT_ID",
    "traffic_percent": "TRAFFIC_PERCENT", "default_source": "DEFAULT_SOURCE",
    "local_root": "LOCAL_ROOT", "local_api": "LOCAL_API", "local_models_api": "LOCAL_MODELS_API",
    "dataflow_service_account": "DATAFLOW_SA", "training_service_account": "TRAINING_SA",
    "training_image": "TRAINING_IMAGE", "serving_image": "SERVING_IMAGE",
    "flex_template": "FLEX_TEMPLATE",
    "max_workers": "MAX_WORKERS", "serving_machine_type": "SERVING_MACHINE_TYPE",
}


class ConfigError(ValueError):
    """A setting is missing or malformed: the function cannot run until it is fixed."""


@dataclass(frozen=True)
class Config:
    platform: str = "local"
    project: str = "local-project"
    region: str = "us-central1"
    bucket: str = "mlrelay"
    start_topic: str = "mlrelay-start"
    job_events_topic: str = "mlrelay-job-events"
    dead_letter_topic: str = "mlrelay-dead-letter"
    model_name: str = "babyweight"
    endpoint_id: str = "babyweight"
    # Percent of the endpoint's traffic the newly deployed version takes (the rest stays on the
    # version that served before). 100 replaces the serving version outright.
    traffic_percent: int = 100
    # The source preprocessing reads when a request names none: "bigquery" in the cloud, an object
    # of the bucket locally.
    default_source: str = "data/natality.parquet"
    # local: the directory that holds one directory per bucket, and the local cloud's API.
    local_root: str = ""
    local_api: str = ""
    local_models_api: str = ""
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
            for field in ("traffic_percent", "max_workers"):
                if field in values:
                    values[field] = int(values[field])
        except ValueError as exc:
            raise ConfigError(f"a numeric MLRELAY_ setting is not a number: {exc}") from None
        cfg = cls(**values)
        if not 1 <= cfg.traffic_percent <= 100:
            raise ConfigError(f"MLRELAY_TRAFFIC_PERCENT must be 1..100, not {cfg.traffic_percent}")
        if platform == "local" and not (cfg.local_root and cfg.local_api and cfg.local_models_api):
            raise ConfigError("local platform needs MLRELAY_LOCAL_ROOT, MLRELAY_LOCAL_API and "
                              "MLRELAY_LOCAL_MODELS_API (set by `mlrelay up`)")
        return cfg

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces this configuration (for child processes and deploy.sh)."""
        values = {name: str(getattr(self, field)) for field, name in ENV_NAMES.items()}
        return {f"MLRELAY_{name}": value for name, value in values.items() if value != ""}
