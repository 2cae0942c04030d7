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
    # gcp: accounts, images and packages deploy.sh provisions.
    dataflow_service_account: str = ""
    training_service_account: str = ""
    # The trainer is Keras 3, which Vertex's prebuilt training images carry from TF 2.16 on; the
    # serving image stays at 2.15 (the newest prebuilt one), which loads the exported graph
    # (scripts/check_serving_compat.sh proves it).
    training_image: str = "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest"
    serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    trainer_package: str = ""
    flex_template: str = ""
    max_workers: int = 4
    # gcp: the machine each deployed model version is served on (dedicated resources, one replica).
    serving_machine_type: str = "n1-standard-2"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def bucket_uri(self) -> str:
        return f"gs://{self.bucket}"

    def uri(self, name: str) -> str:
        """The gs:// URI of an object of the pipeline bucket."""
        return f"gs://{self.bucket}/{name}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(f"MLRELAY_{name}", default)

        platform = get("PLATFORM", cls.platform)
        if platform not in PLATFORMS:
            raise ConfigError(f"MLRELAY_PLATFORM must be one of {PLATFORMS}, not {platform!r}")
        try:
            traffic = int(get("TRAFFIC_PERCENT", str(cls.traffic_percent)))
            max_workers = int(get("MAX_WORKERS", str(cls.max_workers)))
        except ValueError as exc:
            raise ConfigError(f"a numeric MLRELAY_ setting is not a number: {exc}") from None
        if not 1 <= traffic <= 100:
            raise ConfigError(f"MLRELAY_TRAFFIC_PERCENT must be 1..100, not {traffic}")
        cfg = cls(
            platform=platform,
            project=get("PROJECT", env.get("GOOGLE_CLOUD_PROJECT", cls.project)),
            region=get("REGION", cls.region),
            bucket=get("BUCKET", cls.bucket),
            start_topic=get("START_TOPIC", cls.start_topic),
            job_events_topic=get("JOB_EVENTS_TOPIC", cls.job_events_topic),
            dead_letter_topic=get("DEAD_LETTER_TOPIC", cls.dead_letter_topic),
            model_name=get("MODEL_NAME", cls.model_name),
            endpoint_id=get("ENDPOINT_ID", cls.endpoint_id),
            traffic_percent=traffic,
            default_source=get("DEFAULT_SOURCE", "bigquery" if platform == "gcp" else cls.default_source),
            local_root=get("LOCAL_ROOT", ""),
            local_api=get("LOCAL_API", ""),
            local_models_api=get("LOCAL_MODELS_API", ""),
            dataflow_service_account=get("DATAFLOW_SA", ""),
            training_service_account=get("TRAINING_SA", ""),
            training_image=get("TRAINING_IMAGE", cls.training_image),
            serving_image=get("SERVING_IMAGE", cls.serving_image),
            trainer_package=get("TRAINER_PACKAGE", ""),
            flex_template=get("FLEX_TEMPLATE", ""),
            max_workers=max_workers,
            serving_machine_type=get("SERVING_MACHINE_TYPE", cls.serving_machine_type),
        )
        if platform == "local" and not (cfg.local_root and cfg.local_api and cfg.local_models_api):
            raise ConfigError("local platform needs MLRELAY_LOCAL_ROOT, MLRELAY_LOCAL_API and "
                              "MLRELAY_LOCAL_MODELS_API (set by `mlrelay up`)")
        return cfg

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces this configuration (for child processes and deploy.sh)."""
        names = {
            "PLATFORM": self.platform, "PROJECT": self.project, "REGION": self.region,
            "BUCKET": self.bucket, "START_TOPIC": self.start_topic,
            "JOB_EVENTS_TOPIC": self.job_events_topic, "DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "MODEL_NAME": self.model_name, "ENDPOINT_ID": self.endpoint_id,
            "TRAFFIC_PERCENT": str(self.traffic_percent), "DEFAULT_SOURCE": self.default_source,
            "LOCAL_ROOT": self.local_root, "LOCAL_API": self.local_api,
            "LOCAL_MODELS_API": self.local_models_api,
            "DATAFLOW_SA": self.dataflow_service_account, "TRAINING_SA": self.training_service_account,
            "TRAINING_IMAGE": self.training_image, "SERVING_IMAGE": self.serving_image,
            "TRAINER_PACKAGE": self.trainer_package, "FLEX_TEMPLATE": self.flex_template,
            "MAX_WORKERS": str(self.max_workers), "SERVING_MACHINE_TYPE": self.serving_machine_type,
        }
        return {f"MLRELAY_{k}": v for k, v in names.items() if v != ""}
