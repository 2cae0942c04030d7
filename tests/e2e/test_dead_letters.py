"""A start event that fails every delivery waits in the dead-letter subscription; `mlrelay
dead-letters list` shows it, `replay` carries its run to the end, and a second replay does nothing.

The reconcile sweep is off here, so that the replay alone is what carries the run on; every event is
delivered twice.
"""
from __future__ import annotations

import json

import pytest

from functions.config import Config
from local_cloud.cloud import LocalCloud, LocalCloudSettings
from mlrelay.cli import main
from mlrelay.demo import ensure_sample
from tests.e2e.test_bursts import TINY
from tests.e2e.test_local_chain import publish_start, runs_of, wait_for, wait_terminal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("dead-letters")
    config = Config()
    settings = LocalCloudSettings(root=root, config=config, duplicate_deliveries=2, min_backoff_s=0.1,
                                  max_backoff_s=0.3, bake_seconds=2, sweep_cron=None)
    ensure_sample(root / "buckets" / config.bucket, rows=4000, seed=3)
    local = LocalCloud(settings).start()
    yield local
    local.stop()


def dead_letters(cloud, capsys) -> list[dict]:
    assert main(["dead-letters", "list", "--json", "--root", str(cloud.root)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_dead_lettered_start_is_listed_then_replayed_into_one_run_and_a_second_replay_does_nothing(
        cloud, capsys, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "")  # the command points it at the local cloud; undone after
    cloud.api.inject_fault("flexTemplates:launch", 503, count=1000)  # Dataflow is down for a while
    message_id = publish_start(cloud, {**TINY, "seed": 7})
    wait_for(lambda: dead_letters(cloud, capsys), 60, "a dead letter")
    cloud.api.clear_faults()  # and well again
    assert cloud.broker.wait_idle(30)
    letters = dead_letters(cloud, capsys)

    # Each copy of the event that failed every attempt is a dead letter (the other copy of a
    # delivered-twice event may have been acknowledged as in flight beside it).
    assert 1 <= len(letters) <= 2, letters
    for letter in letters:
        assert letter["function"] == "start_pipeline" and letter["attempts"] == 5, letter
        assert "HTTP 500" in (letter["last_error"] or ""), letter
        assert letter["event"] == {"type": "pubsub", "json": {**TINY, "seed": 7}}, letter
    (stuck,) = runs_of(cloud).statuses()
    assert stuck.state.value == "requested"  # recorded, never launched: nothing else would start it
    assert runs_of(cloud).request_origin(stuck.run_id)["messageId"] == message_id
    assert dead_letters(cloud, capsys) == letters  # listing acknowledges nothing

    assert main(["dead-letters", "replay", letters[0]["id"], "--root", str(cloud.root)]) == 0
    assert letters[0]["id"] in capsys.readouterr().out
    ended = wait_terminal(cloud, stuck.run_id)
    assert ended.state.value == "deployed", (ended.reason, runs_of(cloud).ledger(stuck.run_id))
    # Replaying again (every letter left, or the same event published anew): nothing more happens.
    assert main(["dead-letters", "replay", "--all", "--root", str(cloud.root)]) == 0
    capsys.readouterr()
    publish_start(cloud, {**TINY, "seed": 7})
    assert dead_letters(cloud, capsys) == []
    cloud.broker.wait_idle(30)
    dataflow = [job for job in cloud.jobs.all() if job.kind == "dataflow"]
    assert [job.display_name for job in dataflow] == [stuck.run_id]  # one run, one job, for three starts
    refused = [s for s in runs_of(cloud).statuses() if s.run_id != stuck.run_id]
    assert all(s.state.value == "rejected" and "not run again" in s.reason for s in refused), refused
