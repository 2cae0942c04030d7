"""The configuration travels through the environment: every setting has a variable, and back."""
from __future__ import annotations

from dataclasses import fields

import pytest

from functions.config import ENV_NAMES, Config, ConfigError


def test_every_setting_has_a_variable_and_survives_the_round_trip():
    assert {f.name for f in fields(Config)} - {"extra"} == set(ENV_NAMES)
    config = Config(platform="gcp", project="p", bucket="b", max_workers=7, canary_percent=30, bake_seconds=60,
                    gate_min_improvement=0.1, gate_tolerance=0.005, gate_slice_tolerance=0.03,
                    release_topic="rel", tasks_queue="q", tasks_service_account="t@p.iam.gserviceaccount.com",
                    training_image="europe-west4-docker.pkg.dev/p/mlrelay/trainer:1")
    assert Config.from_env(config.to_env()) == config
    policy = config.release_policy()
    assert (policy.canary_percent, policy.bake_seconds, policy.min_improvement_over_mean, policy.tolerance,
            policy.slice_tolerance) == (30, 60, 0.1, 0.005, 0.03)


def test_the_platform_decides_the_default_source_and_bad_values_are_refused():
    assert Config.from_env({"MLRELAY_PLATFORM": "gcp"}).default_source == "bigquery"
    assert Config.from_env({"MLRELAY_PLATFORM": "gcp", "GOOGLE_CLOUD_PROJECT": "x"}).project == "x"
    for env, words in [({"MLRELAY_PLATFORM": "aws"}, "MLRELAY_PLATFORM"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_MAX_WORKERS": "many"}, "not a number"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_CANARY_PERCENT": "0"},
                        "canary_percent must be between 1 and 99"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_CANARY_PERCENT": "100"}, "canary_percent"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_BAKE_SECONDS": "15m"}, "not a number"),
                       ({"MLRELAY_PLATFORM": "gcp", "MLRELAY_GATE_TOLERANCE": "-0.1"}, "tolerance must be"),
                       ({"MLRELAY_PLATFORM": "local"}, "MLRELAY_LOCAL_ROOT")]:
        with pytest.raises(ConfigError, match=words):
            Config.from_env(env)


def test_the_admission_settings_have_their_defaults_and_refuse_what_would_start_nothing():
    config = Config.from_env({"MLRELAY_PLATFORM": "gcp"})
    assert (config.max_active_runs, config.max_queued_runs, config.daily_run_budget) == (2, 8, 24)
    custom = Config.from_env({"MLRELAY_PLATFORM": "gcp", "MLRELAY_MAX_ACTIVE_RUNS": "5",
                              "MLRELAY_MAX_QUEUED_RUNS": "0", "MLRELAY_DAILY_RUN_BUDGET": "0"})
    assert (custom.max_active_runs, custom.max_queued_runs, custom.daily_run_budget) == (5, 0, 0)
    assert Config.from_env(custom.to_env()) == custom
    assert custom.to_env()["MLRELAY_MAX_ACTIVE_RUNS"] == "5"
    for name, value, words in [("MAX_ACTIVE_RUNS", "0", "MLRELAY_MAX_ACTIVE_RUNS must be 1 or more, not 0"),
                               ("MAX_ACTIVE_RUNS", "two", "MLRELAY_MAX_ACTIVE_RUNS must be a whole number"),
                               ("MAX_QUEUED_RUNS", "-1", "MLRELAY_MAX_QUEUED_RUNS must be 0 or more"),
                               ("DAILY_RUN_BUDGET", "2.5", "MLRELAY_DAILY_RUN_BUDGET must be a whole number"),
                               ("DAILY_RUN_BUDGET", "-3", "MLRELAY_DAILY_RUN_BUDGET must be 0 or more")]:
        with pytest.raises(ConfigError, match=words):
            Config.from_env({"MLRELAY_PLATFORM": "gcp", f"MLRELAY_{name}": value})
