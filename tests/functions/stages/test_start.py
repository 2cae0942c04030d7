"""start_run: a request recorded once, preprocessing launched once, bad requests rejected."""
from __future__ import annotations

import json
import threading
import time

import pytest

from functions.local_adapters import LocalStorage
from functions.platform import AlreadyExists, Platform, TransientError
from functions.run_store import RunStore, request_name
from functions.stages.start import start_run
from tests.fakes.runs import message, trigger_file


def state(runs: RunStore, run_id: str) -> str:
    (status,) = runs.statuses(run_id)
    return status.state.value


def test_a_valid_message_records_the_request_and_launches_preprocessing(env, runs):
    config, platform = env
    result = start_run(config, platform, message(b'{"limit": 1000, "source": "data/x.parquet"}'))
    assert result.action == "launched"
    doc = json.loads(platform.storage.read(request_name(result.run_id)))
    assert doc["request"]["limit"] == 1000 and doc["origin"]["kind"] == "message"
    (run_id, source, out_uri, limit, labels), = platform.jobs.preprocess_calls
    assert source == "gs://b/data/x.parquet" and out_uri == f"gs://b/runs/{run_id}/preprocess/"
    assert limit == 1000 and labels == {"run_id": run_id}
    assert state(runs, run_id) == "preprocessing"


def test_a_redelivered_message_maps_to_the_same_run_and_launches_nothing_more(env):
    config, platform = env
    first = start_run(config, platform, message(b"{}"))
    again = start_run(config, platform, message(b"{}"))
    assert again.run_id == first.run_id and again.action == "duplicate"
    assert len(platform.jobs.preprocess_calls) == 1


def test_concurrent_duplicates_launch_once(env):
    config, platform = env
    platform.jobs.launch_delay_s = 0.2
    results = []
    threads = [threading.Thread(target=lambda: results.append(start_run(config, platform, message(b"{}"))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(platform.jobs.preprocess_calls) == 1
    assert [r.action for r in results].count("launched") == 1


def test_a_duplicate_that_overtakes_the_requests_writer_still_leaves_the_ledger_in_order(env):
    """Delivery A creates request.json; delivery B runs to the launch while A is held up before
    its "requested" record. The records still fold as requested -> preprocessing."""
    config, platform = env
    trigger = message(b"{}")
    overtaken = []

    class OvertakenStorage(LocalStorage):
        def create(self, name, data, content_type="application/json"):
            created = super().create(name, data, content_type)
            if created and name.endswith("/request.json") and not overtaken:
                overtaken.append(start_run(config, platform, trigger))  # B, while A waits here
                time.sleep(0.01)
            return created

    platform = Platform(OvertakenStorage(platform.storage.root), platform.jobs, platform.models, platform.tasks,
                        platform.metrics)
    first = start_run(config, platform, trigger)
    assert overtaken[0].action == "launched" and first.action != "launched"
    assert len(platform.jobs.preprocess_calls) == 1
    (status,) = RunStore(platform.storage, "b").statuses(first.run_id)
    assert status.state.value == "preprocessing"
    assert not status.anomalies, status.anomalies


@pytest.mark.parametrize("raw, words", [
    (b"not json", "not JSON"),
    (b'{"batchSize": 0}', "batchSize"),
    (b'{"bogus": 1}', "bogus"),
    (b"", "empty"),
    (bytes(range(256)) * 4, ""),
    (b'{"source": "../../etc/passwd.csv"}', "source"),
])
def test_a_malformed_request_is_rejected_with_a_reason_and_launches_nothing(env, runs, raw, words):
    config, platform = env
    result = start_run(config, platform, message(raw))
    assert result.action == "rejected" and words in result.detail
    (status,) = runs.statuses(result.run_id)
    assert status.state.value == "rejected" and status.reason
    assert platform.jobs.preprocess_calls == []


def test_trigger_files_are_read_checked_for_size_and_must_be_under_triggers(env):
    config, platform = env
    platform.storage.write("triggers/ok.json", b'{"limit": 5}')
    ok = start_run(config, platform, trigger_file("triggers/ok.json", 7, size=12))
    assert ok.action == "launched"
    big = start_run(config, platform, trigger_file("triggers/big.json", 8, size=10 << 20))
    assert big.action == "rejected" and "64 KiB" in big.detail
    gone = start_run(config, platform, trigger_file("triggers/gone.json", 9))
    assert gone.action == "rejected" and "no longer exists" in gone.detail
    outside = start_run(config, platform, trigger_file("runs/x/request.json", 1))
    assert outside.action == "ignored"
    other_bucket = start_run(config, platform, trigger_file("triggers/ok.json", 7, bucket="elsewhere"))
    assert other_bucket.action == "ignored"
    assert len(platform.jobs.preprocess_calls) == 1


def test_a_transient_launch_failure_raises_and_the_retry_launches(env):
    config, platform = env
    platform.jobs.fail_next = TransientError("503")
    with pytest.raises(TransientError):
        start_run(config, platform, message(b"{}"))
    assert start_run(config, platform, message(b"{}")).action == "launched"
    assert len(platform.jobs.preprocess_calls) == 1


def test_a_409_from_the_job_api_counts_as_done(env):
    config, platform = env
    platform.jobs.fail_next = AlreadyExists("job name in use")
    assert start_run(config, platform, message(b"{}")).action == "duplicate"


# --- bursts --------------------------------------------------------------------------------------


def test_a_burst_of_one_request_from_one_origin_starts_one_run(env):
    """Twenty uploads of one trigger file, or one body published ten times, used to start a run each."""
    from dataclasses import replace
    from datetime import timedelta

    config, platform = env
    config = replace(config, debounce_seconds=60, max_active_runs=4)  # the four runs it starts stay active
    body = b'{"limit": 5000}'
    first = message(body, message_id="m-1")
    assert start_run(config, platform, first).action == "launched"
    assert start_run(config, platform, first).action == "duplicate"  # a redelivery is the same run
    repeats = [start_run(config, platform, replace(message(body, message_id=f"m-{i}"),
                                                   event_time=first.event_time + timedelta(seconds=i)))
               for i in range(2, 6)]
    assert [r.action for r in repeats] == ["rejected"] * 4
    assert all("not run again" in r.detail and "mlrelay-start" in r.detail for r in repeats)
    assert len(platform.jobs.preprocess_calls) == 1
    rejected = RunStore(platform.storage, "b").statuses(repeats[0].run_id)[0]
    assert rejected.state.value == "rejected" and not platform.storage.exists(request_name(repeats[0].run_id))
    # another request, or the same one after the window, is a run of its own
    assert start_run(config, platform, message(b'{"limit": 6000}', message_id="m-9")).action == "launched"
    later = replace(message(body, message_id="m-10"), event_time=first.event_time + timedelta(seconds=61))
    assert start_run(config, platform, later).action == "launched"
    # one trigger file uploaded again with the same content (a new generation) is the same request
    upload = trigger_file("triggers/nightly.json", generation=1, size=len(body))
    platform.storage.write("triggers/nightly.json", body)
    assert start_run(config, platform, upload).action == "launched"
    again = replace(trigger_file("triggers/nightly.json", generation=2, size=len(body), event_id="e-2"),
                    event_time=upload.event_time + timedelta(seconds=3))
    assert start_run(config, platform, again).action == "rejected"
    assert len(platform.jobs.preprocess_calls) == 4
