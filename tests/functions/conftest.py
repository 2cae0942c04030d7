"""Fixtures for calling the entry points in-process.

`clients` serves each entry point of functions/main.py through functions-framework's own test
client, as the platform would; `cloud` makes them run against a real bucket directory and fakes of
the job and model APIs (through `functions.bootstrap.override`) and captures their log lines.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import functions_framework
import pytest

from functions import bootstrap
from functions.config import Config
from functions.local_adapters import LocalStorage
from functions.platform import Platform
from tests.fakes.fake_google_apis import FakeGoogleApis
from tests.fakes.google_events import BUCKET
from tests.fakes.platform import FakeJobs, FakeMetrics, FakeModels, FakeTasks

MAIN = Path(__file__).resolve().parents[2] / "functions" / "main.py"
ENTRY_POINTS = ("start_pipeline", "on_preprocess_output", "on_training_complete", "on_release_event",
                "reconcile_runs")


class ReadRecordingStorage(LocalStorage):
    """The local bucket, remembering which objects were read."""

    def __init__(self, bucket_dir: Path):
        super().__init__(bucket_dir)
        self.reads: list[str] = []

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        self.reads.append(name)
        return super().read(name, max_bytes)


@dataclass
class Cloud:
    config: Config
    storage: ReadRecordingStorage
    jobs: FakeJobs
    models: FakeModels
    tasks: FakeTasks
    metrics: FakeMetrics

    def objects(self) -> list[str]:
        """Every object of the bucket."""
        return self.storage.list("")


@pytest.fixture
def cloud(tmp_path, caplog):
    config = Config(bucket=BUCKET, local_root=str(tmp_path), local_api="http://127.0.0.1:1", debounce_seconds=0)
    fake = Cloud(config, ReadRecordingStorage(tmp_path / BUCKET), FakeJobs(), FakeModels(), FakeTasks(), FakeMetrics())
    caplog.set_level(logging.INFO, logger="mlrelay.functions")
    with bootstrap.override(config, Platform(fake.storage, fake.jobs, fake.models, fake.tasks, fake.metrics)):
        yield fake


@pytest.fixture(scope="module")
def clients():
    """A test client per entry point, by name.

    create_app executes main.py afresh as module "main" and appends its folder to sys.path on
    every call; both are put back afterwards so that no other test sees them.
    """
    saved_path, saved_main = list(sys.path), sys.modules.get("main")
    try:
        yield {name: functions_framework.create_app(target=name, source=str(MAIN),
                                                    signature_type="cloudevent").test_client()
               for name in ENTRY_POINTS}
    finally:
        sys.path[:] = saved_path
        if saved_main is None:
            sys.modules.pop("main", None)
        else:
            sys.modules["main"] = saved_main


@pytest.fixture
def apis():
    """A fake of the Dataflow and Vertex AI REST APIs on 127.0.0.1 that records every request."""
    fake = FakeGoogleApis()
    fake.url = fake.start()
    yield fake
    fake.stop()
    assert not fake.drift, "the fake answered outside the documented response schemas:\n" + "\n".join(fake.drift)
