"""Choose the platform adapters from the configuration."""
from __future__ import annotations

from pathlib import Path

from functions.config import LOCAL_SERVING_IMAGE, LOCAL_TRAINING_IMAGE, Config, ConfigError
from functions.platform import Platform


def check_gcp_config(config: Config) -> None:
    """Refuse a cloud configuration that lacks what launching jobs needs, naming what is missing."""
    missing = [variable for variable, value in (("MLRELAY_FLEX_TEMPLATE", config.flex_template),
                                                ("MLRELAY_TRAINING_IMAGE", config.training_image),
                                                ("MLRELAY_SERVING_IMAGE", config.serving_image)) if not value]
    if missing:
        raise ConfigError(f"gcp platform needs {' and '.join(missing)} (deploy.sh uploads the template and "
                          f"builds the images)")
    if not config.flex_template.startswith("gs://"):
        raise ConfigError(f"MLRELAY_FLEX_TEMPLATE must be a gs:// URI, not {config.flex_template!r}")
    images = (("MLRELAY_TRAINING_IMAGE", config.training_image, LOCAL_TRAINING_IMAGE, "trainer"),
              ("MLRELAY_SERVING_IMAGE", config.serving_image, LOCAL_SERVING_IMAGE, "server"))
    for variable, image, local, name in images:  # the local names are no image Vertex AI can pull
        if image == local or "/" not in image:
            raise ConfigError(f"{variable} must name an image in a registry Vertex AI can pull "
                              f"(REGION-docker.pkg.dev/PROJECT/REPO/{name}:TAG), not {image!r}")


def build_platform(config: Config) -> Platform:
    if config.platform == "local":
        from functions.cloud_tasks import CloudTasksScheduler
        from functions.local_adapters import LocalApi, LocalJobs, LocalModels, LocalStorage
        from functions.serving_metrics import MonitoringServingMetrics

        api = LocalApi(config.local_api)
        return Platform(
            storage=LocalStorage(Path(config.local_root) / config.bucket),
            jobs=LocalJobs(api, config),
            models=LocalModels(LocalApi(config.local_models_api), config),
            tasks=CloudTasksScheduler.local(config),
            # the local endpoint serves Cloud Monitoring's timeSeries.list of its own counters
            metrics=MonitoringServingMetrics.local(config.project, config.local_models_api),
        )
    if config.platform == "gcp":
        # The adapters import the Google clients on first use, not here (cold start).
        from functions.cloud_tasks import CloudTasksScheduler
        from functions.gcp_adapters import DataflowJobs, GcpJobs, GcsStorage, VertexJobs, VertexModels
        from functions.serving_metrics import MonitoringServingMetrics

        check_gcp_config(config)
        return Platform(
            storage=GcsStorage(config.bucket, project=config.project),
            jobs=GcpJobs(DataflowJobs(config), VertexJobs(config)),
            models=VertexModels(config),
            tasks=CloudTasksScheduler(config),
            metrics=MonitoringServingMetrics(config.project),
        )
    raise ConfigError(f"platform {config.platform!r} has no adapters in this build")
