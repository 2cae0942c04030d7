"""How `mlrelay demo` follows a run: woken by its ledger and nothing else."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

from events.ledger import LedgerEvent
from functions.local_adapters import LocalStorage
from functions.run_store import RunStore, ledger_name, request_name
from mlrelay.demo import follow_run

RUN = "run-20261127-080000-0123456789"
OTHER = "run-20261127-075900-abcdefabcd"
TRIGGER = "gs://mlrelay/triggers/demo.json"
STARTED = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)


def record(storage: LocalStorage, stage: str, state: str, seconds: int) -> None:
    event = LedgerEvent(run_id=RUN, stage=stage, state=state, time=STARTED + timedelta(seconds=seconds))
    storage.write(ledger_name(RUN, event.time, stage), event.to_json())


def request(storage: LocalStorage, run_id: str, trigger: str) -> None:
    storage.write(request_name(run_id), json.dumps({"origin": {"object": trigger}}).encode())


def test_follow_run_wakes_on_the_ledger_and_not_on_the_runs_other_files(tmp_path):
    storage = LocalStorage(tmp_path)
    request(storage, OTHER, "gs://mlrelay/triggers/another.json")
    seen: list[tuple[str | None, str | None, float]] = []
    result: list = []

    def show(run_id, status) -> None:
        seen.append((run_id, status.state.value if status else None, time.monotonic()))

    follower = threading.Thread(target=lambda: result.append(follow_run(tmp_path, RunStore(storage, "mlrelay"), TRIGGER, 60, show)))
    follower.start()
    time.sleep(0.3)
    request(storage, RUN, TRIGGER)  # the function starts the run
    record(storage, "request", "requested", 0)
    deadline = time.monotonic() + 10
    while not any(state == "requested" for _, state, _ in seen):
        assert time.monotonic() < deadline, seen
        time.sleep(0.01)

    # Training output and another run's files, written over half a second, wake nobody.
    quiet_from = len(seen)
    began = time.monotonic()
    for index in range(25):
        storage.write(f"runs/{RUN}/train/model/variables/part-{index}", b"x" * 100)
        storage.write(f"runs/{OTHER}/events/20261127T075901.{index:06d}Z-request.json", b"{}")
        time.sleep(0.02)
    wakes = [moment for _, _, moment in seen[quiet_from:] if moment >= began]
    assert len(wakes) <= 1, f"{len(wakes)} wakes for files outside the ledger"  # at most the 1 s clock tick

    for seconds, (stage, state) in enumerate(
            [("preprocess", "preprocessing"), ("train", "training"), ("deploy", "deploying"), ("deploy", "deployed")], 1):
        record(storage, stage, state, seconds)
    follower.join(10)
    assert not follower.is_alive()
    assert result[0].state.value == "deployed" and result[0].run_id == RUN
    assert seen[-1][:2] == (RUN, "deployed")
