"""Helpers every test folder shares."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
# The real natality rows and the design notes, beside the checkout (development and CI only).
SHARED = REPO.parent / "shared"


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Call `predicate` until it returns something true and return that; fail naming `what`.

    For conditions another process or thread brings about (a file event, a delivery, a job's
    end), where a fixed sleep would be either flaky or slow.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture
def env(tmp_path):
    """A configuration and platform for calling stages directly: a real bucket directory "b",
    fakes of the job and model APIs."""
    from functions.config import Config
    from functions.local_adapters import LocalStorage
    from functions.platform import Platform
    from tests.fakes.platform import FakeJobs, FakeMetrics, FakeModels, FakeTasks

    # debounce off: stage tests start runs of one request again and again (tests of the guard set it)
    config = Config(bucket="b", local_root=str(tmp_path), local_api="http://127.0.0.1:1", debounce_seconds=0)
    return config, Platform(LocalStorage(tmp_path / "b"), FakeJobs(), FakeModels(), FakeTasks(), FakeMetrics())


@pytest.fixture
def runs(env):
    """The run store over `env`'s bucket."""
    from functions.run_store import RunStore

    config, platform = env
    return RunStore(platform.storage, config.bucket)
