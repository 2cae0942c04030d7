"""Admission: at most N runs active, a bounded queue started by the events that end runs, and a
daily run budget; every decision in the run ledger, however many deliveries race."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from events.run_id import run_id_for_message
from functions.local_adapters import LocalStorage
from functions.platform import Platform, TransientError
from functions.run_store import QUEUE_PREFIX, RunStore
from functions.stages.result import record
from functions.stages.start import admit_queued, start_run
from functions.stages.training import finish_training, start_training
from tests.fakes.google_events import (
    deliver, log_entry_message, object_finalized, run_request_message, vertex_job_line,
)
from tests.fakes.runs import NOW, message, training_ended, write_manifest
from tests.functions.stages.chain import status


def request(tag: str, at=NOW):
    """A start message of its own (a run of its own), published at `at`."""
    return replace(message(json.dumps({"limit": 100}).encode(), message_id=tag), event_time=at)


def states(config, platform, run_ids) -> list[str]:
    return [status(config, platform, run_id).state.value for run_id in run_ids]


def holders(runs: RunStore) -> dict[int, str]:
    """Each slot's holder (its highest generation's run)."""
    return {slot: runs.slot_holder(slot, generations[-1])["run_id"]
            for slot, generations in runs.admission_slots().items()}


def fail_by_training(config, platform, run_id: str) -> None:
    """The run's manifest arrives, its training job fails, and finish_training ends the run."""
    launched = start_training(config, platform, write_manifest(platform.storage, run_id))
    assert launched.action == "launched", launched
    platform.jobs.finish(launched.job, "JOB_STATE_FAILED", error="replica exited 1")
    assert finish_training(config, platform, training_ended(launched.job)).action == "recorded"
    assert status(config, platform, run_id).state.value == "failed"


def two_active_two_queued(config, platform) -> list[str]:
    results = [start_run(config, platform, request(tag, NOW + timedelta(seconds=i)))
               for i, tag in enumerate(("a", "b", "c", "d"))]
    assert [r.action for r in results] == ["launched", "launched", "queued", "queued"]
    return [r.run_id for r in results]


class CountingStorage(LocalStorage):
    """The local bucket, counting every call the functions make of it."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []

    def _count(self, method, name):
        self.calls.append((method, name))

    def read(self, name, max_bytes=None):
        self._count("read", name)
        return super().read(name, max_bytes)

    def write(self, name, data, content_type="application/json"):
        self._count("write", name)
        return super().write(name, data, content_type)

    def create(self, name, data, content_type="application/json"):
        self._count("create", name)
        return super().create(name, data, content_type)

    def exists(self, name):
        self._count("exists", name)
        return super().exists(name)

    def list(self, prefix):
        self._count("list", prefix)
        return super().list(prefix)

    def list_folders(self, prefix):
        self._count("list_folders", prefix)
        return super().list_folders(prefix)

    def delete(self, name):
        self._count("delete", name)
        return super().delete(name)


def counting(platform) -> Platform:
    return replace(platform, storage=CountingStorage(platform.storage.root))


# --- a burst ----------------------------------------------------------------------------------


def test_twenty_requests_at_once_start_two_queue_eight_and_refuse_the_rest_with_reasons(env, runs):
    config, platform = env
    platform.jobs.launch_delay_s = 0.05  # launches overlap the other deliveries' admissions
    gate = threading.Barrier(20)
    results = {}

    def deliver_one(i):
        gate.wait()
        results[i] = start_run(config, platform, request(f"burst-{i}", NOW + timedelta(milliseconds=i)))

    threads = [threading.Thread(target=deliver_one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    actions = [r.action.value for r in results.values()]
    assert (actions.count("launched"), actions.count("queued"), actions.count("rejected")) == (2, 8, 10), actions
    assert len(platform.jobs.preprocess_calls) == 2
    launched = {r.run_id for r in results.values() if r.action == "launched"}
    assert set(holders(runs).values()) == launched
    queued = [r for r in results.values() if r.action == "queued"]
    assert sorted(r.extra["position"] for r in queued) == list(range(1, 9))
    assert len(runs.queue_tickets()) == 8
    assert len(runs.admitted_tickets()) == 10, "a refused run is not counted against the daily budget"
    # every decision is in the ledger, with its reason
    for result in results.values():
        folded = status(config, platform, result.run_id)
        assert folded.state.value == {"launched": "preprocessing", "queued": "queued",
                                      "rejected": "rejected"}[result.action.value]
        assert not folded.anomalies, folded.anomalies
        if result.action == "queued":
            assert "2 runs active" in folded.reason and "MLRELAY_MAX_ACTIVE_RUNS=2" in folded.reason
            assert f"queued at position {result.extra['position']} of at most 8" in folded.reason
        if result.action == "rejected":
            assert folded.reason == result.detail
            assert "2 runs active" in folded.reason and "8 queued, the queue's limit" in folded.reason
            assert "MLRELAY_MAX_QUEUED_RUNS=8" in folded.reason


def test_with_no_queue_a_request_beyond_the_active_runs_is_refused(env):
    config, platform = env
    config = replace(config, max_active_runs=1, max_queued_runs=0)
    assert start_run(config, platform, request("a")).action == "launched"
    refused = start_run(config, platform, request("b"))
    assert refused.action == "rejected" and "0 queued, the queue's limit" in refused.detail
    assert status(config, platform, refused.run_id).state.value == "rejected"


# --- the queue moves when a run ends ----------------------------------------------------------------


def test_a_run_failed_by_its_training_job_lets_the_oldest_queued_run_start(env, runs):
    config, platform = env
    a, b, c, d = two_active_two_queued(config, platform)
    fail_by_training(config, platform, a)

    started = admit_queued(config, platform, "e-end")

    assert [(r.action.value, r.run_id) for r in started] == [("launched", c)]
    assert [call[0] for call in platform.jobs.preprocess_calls] == [a, b, c]
    assert states(config, platform, [a, b, c, d]) == ["failed", "preprocessing", "preprocessing", "queued"]
    assert sorted(holders(runs).values()) == sorted([b, c])
    assert [runs.queued_entry(t)["run_id"] for t in runs.queue_tickets()] == [d]
    folded = status(config, platform, c)
    assert not folded.anomalies and folded.stages["request"].end is not None
    preprocessing = [e for e in runs.ledger(c)[c] if e.state.value == "preprocessing"]
    assert [e.cause_event_id for e in preprocessing] == ["e-end"]
    # the same record as a run launched on arrival
    first = next(e for e in runs.ledger(b)[b] if e.state.value == "preprocessing")
    assert set(first.details) == set(preprocessing[0].details) and set(first.job_ids) == set(preprocessing[0].job_ids)
    # nothing else ended: the next pass starts nothing
    assert admit_queued(config, platform, "e-other") == []


def test_the_event_that_ends_a_run_starts_the_queued_one_through_the_entry_point(clients, cloud, caplog):
    for message_id in ("8001", "8002", "8003"):
        assert deliver(clients["start_pipeline"], run_request_message(b"{}", message_id)).status_code == 200
    first, second = (call[0] for call in cloud.jobs.preprocess_calls)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mlrelay.functions"]
    waiting = lines[-1]
    assert (waiting["function"], waiting["action"]) == ("start_pipeline", "queued")
    assert "position 1" in waiting["detail"]
    manifest = write_manifest(cloud.storage, first)
    assert deliver(clients["on_preprocess_output"],
                   object_finalized(manifest.object_name, 100, event_id="4001")).status_code == 200
    (job_id,) = cloud.jobs.jobs
    cloud.jobs.finish(job_id, "JOB_STATE_FAILED", error="replica exited 1")
    caplog.clear()

    line = vertex_job_line(job_id, "Job failed.", job_state="FAILED")
    assert deliver(clients["on_training_complete"], log_entry_message(line)).status_code == 200

    (report,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mlrelay.functions"]
    assert report["action"] == "recorded" and report["run_id"] == first
    assert report["admitted"] == [waiting["run_id"]]
    assert [call[0] for call in cloud.jobs.preprocess_calls] == [first, second, waiting["run_id"]]


def test_a_run_that_ends_while_another_is_being_queued_does_not_strand_it(env, runs):
    """A ends after C's admission saw both slots held but before C's ticket existed: A's own pass
    over the queue found nothing. C's start looks again once its ticket exists, and starts."""
    config, platform = env
    a = start_run(config, platform, request("a")).run_id
    start_run(config, platform, request("b"))
    ended = []

    class EndingStorage(LocalStorage):
        def create(self, name, data, content_type="application/json"):
            if name.startswith(QUEUE_PREFIX) and not ended:
                ended.append(record(RunStore(self, "b"), a, "train", "failed", "e-end", reason="job failed"))
                assert admit_queued(config, platform, "e-end") == []  # A's pass: no ticket yet
            return super().create(name, data, content_type)

    racing = replace(platform, storage=EndingStorage(platform.storage.root))
    result = start_run(config, racing, request("c"))

    assert ended and result.action == "launched"
    assert status(config, platform, result.run_id).state.value == "preprocessing"
    assert runs.queue_tickets() == []


def test_a_new_request_never_overtakes_the_queued_ones(env, runs):
    """A slot is free (its run ended, and nothing started the queue): the newcomer queues behind C,
    and the look at the queue its start makes starts C, the oldest."""
    config, platform = env
    a, b, c, d = two_active_two_queued(config, platform)
    record(runs, a, "train", "failed", "e-end", reason="training job failed")

    late = start_run(config, platform, request("e", NOW + timedelta(seconds=9)))

    assert late.action == "queued" and late.extra["admitted"] == [c]
    assert "2 runs queued before it go first" in late.detail and late.extra["position"] == 3
    assert states(config, platform, [c, d, late.run_id]) == ["preprocessing", "queued", "queued"]


def test_two_runs_ending_at_once_start_two_queued_runs_once_each(env, runs):
    config, platform = env
    platform.jobs.launch_delay_s = 0.05
    a, b, c, d = two_active_two_queued(config, platform)
    record(runs, a, "train", "failed", "e-1", reason="training job failed")
    record(runs, b, "train", "failed", "e-2", reason="training job failed")
    gate = threading.Barrier(2)
    passes = []

    def one_pass(cause):
        gate.wait()
        passes.append(admit_queued(config, platform, cause))

    threads = [threading.Thread(target=one_pass, args=(cause,)) for cause in ("e-1", "e-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    launched = sorted(r.run_id for results in passes for r in results if r.action == "launched")
    assert launched == sorted([c, d])
    assert [call[0] for call in platform.jobs.preprocess_calls].count(c) == 1
    assert sorted(holders(runs).values()) == sorted([c, d]) and runs.queue_tickets() == []


# --- redeliveries ------------------------------------------------------------------------------


def test_a_redelivered_start_of_a_queued_run_queues_it_once(env, runs):
    config, platform = env
    a, b, c, d = two_active_two_queued(config, platform)
    again = start_run(config, platform, request("c", NOW + timedelta(seconds=2)))
    assert again.run_id == c and again.action == "duplicate" and "queued already" in again.detail
    results = []

    def redeliver() -> None:
        try:
            results.append(start_run(config, platform, request("d", NOW + timedelta(seconds=3))).action.value)
        except TransientError:  # another delivery is writing the launch marker: the platform retries
            results.append("retried")

    threads = [threading.Thread(target=redeliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and set(results) <= {"duplicate", "in-flight", "retried"}, results
    assert [runs.queued_entry(t)["run_id"] for t in runs.queue_tickets()] == [c, d]
    queued_records = [e for e in runs.ledger(c)[c] + runs.ledger(d)[d] if e.state.value == "queued"]
    assert len(queued_records) == 2
    assert len(platform.jobs.preprocess_calls) == 2 and len(runs.admitted_tickets()) == 4


def test_a_redelivered_start_of_an_active_run_takes_no_second_slot(env, runs):
    config, platform = env
    platform.jobs.fail_next = TransientError("503")
    try:
        start_run(config, platform, request("a"))
    except TransientError:
        pass
    (slot_holder,) = holders(runs).values()
    again = start_run(config, platform, request("a"))  # the retry, in the slot it took
    assert again.action == "launched" and list(holders(runs).values()) == [slot_holder] == [again.run_id]
    assert start_run(config, platform, request("a")).action == "duplicate"
    assert len(runs.admitted_tickets()) == 1
    assert start_run(config, platform, request("b")).action == "launched"


# --- slots whose holders ended ---------------------------------------------------------------


def test_a_slot_whose_holder_ended_without_freeing_it_is_taken_over(env, runs):
    """The run ended (its record is written) but nothing started the queue: a crash in between."""
    config, platform = env
    a = start_run(config, platform, request("a")).run_id
    b = start_run(config, platform, request("b")).run_id
    (slot_of_a,) = [slot for slot, run in holders(runs).items() if run == a]
    record(runs, a, "train", "failed", "e-end", reason="training job failed")

    c = start_run(config, platform, request("c"))

    assert c.action == "launched"
    assert holders(runs) == {slot_of_a: c.run_id, 1 - slot_of_a: b}
    assert runs.admission_slots()[slot_of_a] == [1], "the superseded generation is gone"
    assert start_run(config, platform, request("d")).action == "queued"


def test_a_slot_held_by_a_run_with_no_ledger_is_taken_over_once_its_lease_is_past(env, runs):
    """An admission that died before its run recorded anything leaves a slot no ledger will end."""
    config, platform = env
    ghost = run_id_for_message("mlrelay-start", "ghost", NOW)
    runs.take_slot(0, 0, ghost, datetime.now(timezone.utc) - timedelta(hours=1))
    fresh = run_id_for_message("mlrelay-start", "fresh", NOW)
    runs.take_slot(1, 0, fresh, datetime.now(timezone.utc))

    c = start_run(config, platform, request("c"))

    assert c.action == "launched" and holders(runs) == {0: c.run_id, 1: fresh}
    assert start_run(config, platform, request("d")).action == "queued", "a fresh holder is still starting"


def test_a_queued_run_that_ended_meanwhile_is_dropped_from_the_queue(env, runs):
    config, platform = env
    a, b, c, d = two_active_two_queued(config, platform)
    record(runs, c, "request", "rejected", "operator", reason="cancelled by an operator")
    record(runs, a, "train", "failed", "e-end", reason="training job failed")

    started = admit_queued(config, platform, "e-end")

    assert [(r.action.value, r.run_id) for r in started] == [("duplicate", c), ("launched", d)]
    assert runs.queue_tickets() == []
    assert states(config, platform, [c, d]) == ["rejected", "preprocessing"]


# --- faults ---------------------------------------------------------------------------------


def test_a_failure_starting_a_queued_run_is_logged_and_left_for_the_next_pass(env, runs, caplog):
    config, platform = env
    a, b, c, d = two_active_two_queued(config, platform)
    record(runs, a, "train", "failed", "e-end", reason="training job failed")
    platform.jobs.fail_next = TransientError("dataflow: 503")
    caplog.set_level(logging.WARNING, logger="functions.stages.start")

    assert admit_queued(config, platform, "e-end") == []

    assert any("starting queued runs failed" in r.getMessage() for r in caplog.records)
    assert c in holders(runs).values(), "the slot it took stays its own"
    assert [runs.queued_entry(t)["run_id"] for t in runs.queue_tickets()] == [c, d]
    started = admit_queued(config, platform, "e-sweep")
    assert [(r.action.value, r.run_id) for r in started] == [("launched", c)]
    assert sorted(holders(runs).values()) == sorted([b, c])
    assert [call[0] for call in platform.jobs.preprocess_calls] == [a, b, c]


def test_admit_queued_with_nothing_queued_costs_one_listing(env):
    config, platform = env
    platform = counting(platform)
    assert [start_run(config, platform, request(tag)).action.value for tag in "ab"] == ["launched"] * 2
    platform.storage.calls.clear()

    assert admit_queued(config, platform) == []

    assert platform.storage.calls == [("list", QUEUE_PREFIX)]


def test_admit_queued_with_every_slot_busy_reads_only_the_slots_and_their_holders(env):
    config, platform = env
    platform = counting(platform)
    a, b, c, d = two_active_two_queued(config, platform)
    platform.storage.calls.clear()

    assert admit_queued(config, platform) == []

    calls = platform.storage.calls
    assert {method for method, _ in calls} <= {"list", "read"}, "a full pass writes nothing"
    # the queue, the slots and their two holders, each holder's ledger (listed, then its
    # records), and the oldest ticket
    assert len(calls) <= 2 + 2 + 2 * 3 + 1, calls


# --- the daily budget ------------------------------------------------------------------------


def test_the_daily_budget_refuses_the_25th_run_in_24_hours_and_admits_again_after(env, runs):
    config, platform = env
    config = replace(config, max_active_runs=50)
    admitted = [start_run(config, platform, request(f"day-{i}", NOW + timedelta(minutes=i))) for i in range(24)]
    assert {r.action.value for r in admitted} == {"launched"}

    refused = start_run(config, platform, request("day-24", NOW + timedelta(hours=23)))

    assert refused.action == "rejected"
    assert "daily run budget is spent: 24 runs were admitted in the 24 h" in refused.detail
    assert "MLRELAY_DAILY_RUN_BUDGET=24" in refused.detail and "2026-11-28T05:00:00Z" in refused.detail
    folded = status(config, platform, refused.run_id)
    assert folded.state.value == "rejected" and folded.reason == refused.detail
    assert len(platform.jobs.preprocess_calls) == 24
    # refused is an end: a redelivery of the same event, later, is not admitted after all
    assert start_run(config, platform, request("day-24", NOW + timedelta(hours=23))).action == "duplicate"
    # a day after the first, one more may start; then the second's day must pass too
    assert start_run(config, platform, request("day-25", NOW + timedelta(hours=24))).action == "launched"
    next_one = start_run(config, platform, request("day-26", NOW + timedelta(hours=24)))
    assert next_one.action == "rejected" and "2026-11-28T05:01:00Z" in next_one.detail
    assert len(runs.admitted_tickets()) <= 2 * 24


def test_a_budget_of_zero_is_no_budget(env, runs):
    config, platform = env
    config = replace(config, max_active_runs=40, daily_run_budget=0)
    assert {start_run(config, platform, request(f"n-{i}")).action.value for i in range(30)} == {"launched"}
    assert runs.admitted_tickets() == []
