"""`mlrelay status --follow`: a line (or a JSON object) per change of a run, ending when the run ends."""
from __future__ import annotations

import io
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

from events.ledger import LedgerEvent
from functions.local_adapters import LocalStorage
from functions.run_store import RunStore, request_name
from mlrelay.cli import main
from mlrelay.progress import JsonDisplay, LiveDisplay, PlainDisplay, follow, snapshot
from functions.run_store import progress_name

RUN = "run-20261127-080000-0123456789"
NEXT = "run-20261127-090000-abcdefabcd"
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
GATE = {"blessed": True, "reason": "blessed: candidate RMSE 1.048 is 20.4 % below the mean baseline's 1.316",
        "checks": []}


def progress(seen: int, done: int, rmse: float) -> bytes:
    return json.dumps({"format": "mlrelay.training-progress/v1", "examples_seen": seen, "examples_total": 300,
                       "evaluations_done": done, "evaluations_total": 3, "last_eval_rmse": rmse,
                       "updated": "2026-11-27T08:00:05Z"}).encode()


def steps(run_id: str):
    """A run's life, one write at a time: its ledger records and the trainer's progress reports."""
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    def ledger(stage, state, seconds, **details):
        job_ids = details.pop("job_ids", {})
        return ("record", LedgerEvent(run_id, stage, state, at(seconds), job_ids=job_ids, details=details))

    return [
        ("request", None),
        ledger("request", "requested", 0),
        ledger("preprocess", "preprocessing", 0.5, job_ids={"preprocess": "df-1"}),
        ledger("train", "training", 3.0, job_ids={"train": "77"}, rows={"train": 800, "eval": 200}),
        ("progress", progress(100, 1, 1.10)),
        ("progress", progress(100, 1, 1.10)),  # rewritten with nothing new: no news
        ("progress", progress(300, 3, 1.05)),
        ledger("deploy", "deploying", 9.0, gate=GATE, rollout="first", traffic_split={"0": 100},
               model_version="projects/p/locations/r/models/babyweight@1"),
        ledger("deploy", "deployed", 11.0, traffic_split={"1": 100}),
    ]


def play(runs: RunStore, run_id: str, pause: float = 0.08, before: float = 0.1) -> threading.Thread:
    """Write the run's steps from another thread, as the chain would, a pause apart."""
    def write() -> None:
        time.sleep(before)
        for kind, item in steps(run_id):
            if kind == "request":
                runs.storage.write(request_name(run_id), json.dumps({"origin": {"kind": "message"}}).encode())
            elif kind == "record":
                runs.append(item)
            else:
                runs.storage.write(progress_name(run_id), item)
            time.sleep(pause)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_plain_mode_prints_one_line_per_change_and_ends_with_the_run(tmp_path):
    runs = RunStore(LocalStorage(tmp_path), "mlrelay")
    out = io.StringIO()
    writer = play(runs, RUN)
    last = follow(runs, RUN, PlainDisplay(out), poll_s=0.02, timeout_s=20)
    writer.join(5)
    assert last is not None and last["state"] == "deployed" and last["terminal"]
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text  # no redraw, no escape codes
    said = [re.sub(r"^\[ *[\d.]+ s\] ", "", line) for line in text.splitlines()]
    assert said == [
        f"{RUN}: waiting for the run's first record",  # the follower looked before the run existed
        f"{RUN}: state requested",
        f"{RUN}: hand-off request → preprocess after 0.5 s",
        f"{RUN}: state preprocessing",
        f"{RUN}: hand-off preprocess → train after 2.5 s",
        f"{RUN}: state training",
        f"{RUN}: training 100 of 300 examples (33%), evaluation 1 of 3, last eval RMSE 1.1000",
        f"{RUN}: training 300 of 300 examples (100%), evaluation 3 of 3, last eval RMSE 1.0500",
        f"{RUN}: hand-off train → deploy after 6.0 s",
        f"{RUN}: state deploying",
        f"{RUN}: gate blessed: candidate RMSE 1.048 is 20.4 % below the mean baseline's 1.316",
        f"{RUN}: release first, traffic new:100%",
        f"{RUN}: run ended deployed",
    ], text


def test_without_a_run_it_waits_for_the_next_one(tmp_path):
    runs = RunStore(LocalStorage(tmp_path), "mlrelay")
    for kind, item in steps(RUN):  # a run that has ended already is not the one to follow
        if kind == "record":
            runs.append(item)
    out = io.StringIO()
    writer = play(runs, NEXT, pause=0.02, before=0.2)
    last = follow(runs, None, PlainDisplay(out), poll_s=0.02, timeout_s=20)
    writer.join(5)
    assert last["run_id"] == NEXT and last["state"] == "deployed"
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("waiting for the next run to start")
    assert all(RUN not in line for line in lines) and lines[-1].endswith(f"{NEXT}: run ended deployed")


def test_a_run_that_does_not_end_in_time_gives_none(tmp_path):
    runs = RunStore(LocalStorage(tmp_path), "mlrelay")
    runs.append(LedgerEvent(RUN, "request", "requested", T0))
    assert follow(runs, RUN, PlainDisplay(io.StringIO()), poll_s=0.01, timeout_s=0.1) is None


def test_json_mode_writes_one_parseable_object_per_change(tmp_path):
    runs = RunStore(LocalStorage(tmp_path), "mlrelay")
    out = io.StringIO()
    writer = play(runs, RUN, pause=0.05)
    follow(runs, RUN, JsonDisplay(out), poll_s=0.02, timeout_s=20)
    writer.join(5)
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(o["format"] == "mlrelay.run-progress/v1" and o["changes"] and o["run_id"] == RUN for o in objects)
    assert [o["training"]["examples_seen"] for o in objects if "training" in o and any(
        c.startswith("training") for c in o["changes"])] == [100, 300]
    assert objects[-1]["terminal"] and objects[-1]["state"] == "deployed"
    assert objects[-1]["changes"][-1] == "run ended deployed"
    assert not any(o["terminal"] for o in objects[:-1])


def test_the_cli_follows_a_run_as_json_lines_and_exits_by_its_outcome(tmp_path, capsys):
    runs = RunStore(LocalStorage(tmp_path / "buckets" / "mlrelay"), "mlrelay")
    for kind, item in steps(RUN):
        if kind == "record":
            runs.append(item)
    assert main(["status", RUN, "--follow", "--json", "--root", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()  # ended already: one object, everything in it
    assert json.loads(line)["changes"][-1] == "run ended deployed"
    runs.append(LedgerEvent(NEXT, "request", "rejected", T0, details={"reason": "the queue is full"}))
    assert main(["status", NEXT, "--follow", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().out.rstrip().endswith(f"{NEXT}: run ended rejected: the queue is full")


def test_the_terminal_display_draws_each_stage_with_the_training_progress(tmp_path):
    runs = RunStore(LocalStorage(tmp_path), "mlrelay")
    for kind, item in steps(RUN)[:5]:
        if kind == "record":
            runs.append(item)
        elif kind == "progress":
            runs.storage.write(progress_name(RUN), item)
    out = io.StringIO()
    display = LiveDisplay(out, width=120)
    display.show(snapshot(runs, RUN), ["state training"])
    display.close()
    drawn = out.getvalue()
    assert f"run {RUN}: training" in drawn
    for words in ("preprocess", "preprocessing", "100/300 examples (33%) · eval 1/3 · RMSE 1.1000",
                  "state training"):
        assert words in drawn, drawn
