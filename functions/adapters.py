"""Choose the platform adapters from the configuration."""
from __future__ import annotations

from pathlib import Path

from functions.config import Config, ConfigError
from functions.platform import Platform


def build_platform(config: Config) -> Platform:
    if config.platform == "local":
        from functions.local_adapters import LocalApi, LocalJobs, LocalModels, LocalStorage

        api = LocalApi(config.local_api)
        return Platform(
            storage=LocalStorage(Path(config.local_root) / config.bucket),
            jobs=LocalJobs(api, config.project, config.region, config.bucket, config.training_image,
                           config.trainer_package),
            models=LocalModels(LocalApi(config.local_models_api), config.project, config.region,
                               config.serving_image),
        )
    raise ConfigError(f"platform {config.platform!r} has no adapters in this build")
