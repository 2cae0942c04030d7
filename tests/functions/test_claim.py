"""launch_once: one launch per marker, a dead claim taken over, a failed launch released."""
from __future__ import annotations

import json
import time

import pytest

from functions.claim import LAUNCH_LEASE_S, Claim, Claimed, launch_once
from functions.platform import AlreadyExists, TransientError


def test_the_first_claim_launches_and_later_ones_find_its_job(env):
    storage = env[1].storage
    launches = []
    first = launch_once(storage, "runs/r/m", lambda: None, lambda: launches.append(1) or "job-1")
    again = launch_once(storage, "runs/r/m", lambda: None, lambda: launches.append(1) or "job-2")
    assert first == Claim(Claimed.LAUNCHED, "job-1") and again == Claim(Claimed.DUPLICATE, "job-1")
    assert launches == [1]


def test_work_found_by_its_label_is_not_launched_again(env):
    storage = env[1].storage
    assert launch_once(storage, "runs/r/m", lambda: "job-0", lambda: "job-1") == Claim(Claimed.DUPLICATE, "job-0")
    assert not storage.exists("runs/r/m")


def test_a_dead_marker_is_taken_over_after_its_lease_and_a_live_one_is_not(env):
    storage = env[1].storage
    storage.create("runs/r/m", json.dumps({"owner": "dead", "claimed": time.time() - LAUNCH_LEASE_S - 1}).encode())
    assert launch_once(storage, "runs/r/m", lambda: None, lambda: "job-1") == Claim(Claimed.LAUNCHED, "job-1")
    storage.write("runs/r/n", json.dumps({"owner": "alive", "claimed": time.time()}).encode())
    assert launch_once(storage, "runs/r/n", lambda: None, lambda: "job-2") == Claim(Claimed.IN_FLIGHT, None)


def test_a_failed_launch_releases_the_claim_so_the_retry_launches(env):
    storage = env[1].storage

    def fail():
        raise TransientError("503")

    with pytest.raises(TransientError):
        launch_once(storage, "runs/r/m", lambda: None, fail)
    assert not storage.exists("runs/r/m")
    assert launch_once(storage, "runs/r/m", lambda: None, lambda: "job-1").how == Claimed.LAUNCHED


def test_a_409_means_the_work_exists(env):
    storage = env[1].storage

    def conflict():
        raise AlreadyExists("409")

    assert launch_once(storage, "runs/r/m", lambda: "job-9" if storage.exists("runs/r/m") else None,
                       conflict) == Claim(Claimed.DUPLICATE, "job-9")
    assert json.loads(storage.read("runs/r/m"))["job"] == "job-9"
