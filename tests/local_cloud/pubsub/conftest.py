"""The broker and push endpoint every test of the local Pub/Sub starts with."""
from __future__ import annotations

import pytest

from local_cloud.pubsub.broker import Broker
from tests.fakes.push_endpoint import Endpoint

PROJECT = "mlrelay-local"
FAST_RETRY = {"retry": True, "min_backoff_s": 0.01, "max_backoff_s": 0.02}


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def broker():
    instance = Broker(PROJECT, workers=8)
    instance.create_topic("runs")
    instance.start()
    yield instance
    instance.stop(timeout=2)
