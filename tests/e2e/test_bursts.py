"""Bursts through the local cloud with the guards at their defaults, every event delivered twice.

Twenty uploads of one trigger file in five seconds start one run. Twenty different requests in a
second start at most two runs at a time; eight wait queued, each started by the end of an active
run; the rest are rejected saying why. Once they have all ended, the endpoint holds one model.
"""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from events.ledger import TERMINAL_STATES, RunState
from functions.config import Config
from local_cloud.cloud import LocalCloud, LocalCloudSettings
from mlrelay.demo import ensure_sample
from tests.e2e.test_local_chain import (
    SMALL_TRAINING,
    _runs_with_origin,
    assert_one_model_serves,
    publish_start,
    run_for_message,
    runs_of,
    storage_of,
    wait_for,
    wait_terminal,
)

pytestmark = pytest.mark.slow

# Small, but enough training to beat predicting the mean; a gate loose enough that each passes.
TINY = {**SMALL_TRAINING, "source": "data/natality.parquet", "release": {"tolerance": 0.5, "sliceTolerance": 0.5}}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("bursts")
    config = Config()  # the guards as deployed: debounce 60 s, 2 active, 8 queued, 24 a day
    settings = LocalCloudSettings(root=root, config=config, duplicate_deliveries=2, min_backoff_s=0.2,
                                  max_backoff_s=2.0, bake_seconds=2)
    ensure_sample(root / "buckets" / config.bucket, rows=4000, seed=3)
    local = LocalCloud(settings).start()
    yield local
    local.stop()


def test_twenty_uploads_of_one_trigger_file_in_five_seconds_start_one_run(cloud):
    data = json.dumps({**TINY, "seed": 1}).encode()
    uri = f"gs://{cloud.config.bucket}/triggers/again-and-again.json"
    began = time.monotonic()
    for _ in range(20):
        storage_of(cloud).write("triggers/again-and-again.json", data)
        time.sleep(0.2)
    assert time.monotonic() - began < 5
    runs = wait_for(lambda: _runs_with_origin(cloud, "object", uri, 20), 60, "a ledger for each upload")
    states = {run_id: wait_terminal(cloud, run_id) for run_id in runs}
    went = [run_id for run_id, status in states.items() if "not run again" not in (status.reason or "")]
    assert len(went) == 1, {r: (s.state.value, s.reason) for r, s in states.items()}
    assert states[went[0]].state == RunState.DEPLOYED
    assert len([j for j in cloud.jobs.all() if j.kind == "dataflow" and j.display_name in runs]) == 1


def test_twenty_requests_in_a_second_run_two_at_a_time_queue_eight_and_refuse_the_rest(cloud):
    began = time.monotonic()
    message_ids = [publish_start(cloud, {**TINY, "seed": 100 + index}) for index in range(20)]
    assert time.monotonic() - began < 1.5
    runs = [run_for_message(cloud, message_id) for message_id in message_ids]
    ended = {run_id: wait_terminal(cloud, run_id) for run_id in runs}

    store = runs_of(cloud)
    ledgers = {run_id: store.ledger(run_id)[run_id] for run_id in runs}
    launched = [r for r in runs if any(e.state == RunState.PREPROCESSING for e in ledgers[r])]
    queued = [r for r in runs if any(e.state == RunState.QUEUED for e in ledgers[r])]
    refused = [r for r in runs if r not in launched]
    assert len(launched) == 10 and len(queued) == 8, {r: ended[r].reason for r in runs}
    assert set(queued) <= set(launched)  # every queued run was started by an end, none lost
    for run_id in refused:
        assert ended[run_id].state == RunState.REJECTED and "queued" in ended[run_id].reason, ended[run_id].reason
    assert max_overlap(ledgers, launched) <= 2
    assert len(cloud.jobs.list_custom_jobs()) == len({j.labels.get("run_id") for j in cloud.jobs.list_custom_jobs()})
    assert_one_model_serves(cloud)


def max_overlap(ledgers: dict, runs: list[str]) -> int:
    """The most runs active at one moment, from the ledger: each from its preprocessing record to its end."""
    moments: list[tuple[datetime, int]] = []
    for run_id in runs:
        records = sorted(ledgers[run_id], key=lambda e: e.time)
        start = next(e.time for e in records if e.state == RunState.PREPROCESSING)
        end = next(e.time for e in records if e.state in TERMINAL_STATES)
        moments += [(start, 1), (end, -1)]
    active = most = 0
    for _, step in sorted(moments, key=lambda m: (m[0], m[1])):  # an end before a start at one instant
        active += step
        most = max(most, active)
    return most
