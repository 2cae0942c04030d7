"""The configuration travels through the environment: every setting has a variable, and back."""
from __future__ import annotations

from dataclasses import fields

import pytest

from functions.config import ENV_NAMES, Config, ConfigError


def test_every_setting_has_a_variable_and_survives_the_round_trip():
    assert {f.name for f in fields(Config)} - {"extra"} == set(ENV_NAMES)
    config = Config(platform="gcp", project="p", bucket="b", max_workers=7, traffic_percent=30,
                    training_image="europe-west4-docker.pkg.dev/p/mlrelay/trainer:1")
    assert Config.from_env(config.to_env()) == config


def test_the_platform_decides_the_default_source_and_bad_values_are_refused():
    assert Config.from_env({"MLRELAY_PLATFORM": "gcp"}).default_source == "bigquery"
    assert Config.from_env({"MLRELAY_PLATFORM": "gcp", "GOOGLE_CLOUD_PROJECT": "x"}).project == "x"
    for env, words in [({"MLRELAY_PLATFORM": "aws"}, "MLRELAY_PLATFORM"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_MAX_WORKERS": "many"}, "not a number"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_TRAFFIC_PERCENT": "0"}, "1..100"),
                       ({"MLRELAY_PLATFORM": "local"}, "MLRELAY_LOCAL_ROOT")]:
        with pytest.raises(ConfigError, match=words):
            Config.from_env(env)
