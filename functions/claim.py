"""Launch once: a create-only claim with a lease, so that racing deliveries start one job.

Every delivery is at least once and duplicates may arrive together. Before launching, a stage
creates its launch marker (create-only: `if_generation_match=0` in Cloud Storage, a hard link
locally); only the delivery whose create succeeds launches, and it writes the job's name into the
marker afterwards. A delivery that finds the marker reports the job it names, or that another
delivery is launching right now. A marker left by a delivery that died between claiming and
launching is taken over once its lease has run out.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from functions.platform import AlreadyExists, NotFound, Storage, TransientError

# Longer than the functions' 540 s limit, so a live owner is never robbed of its claim.
LAUNCH_LEASE_S = 600.0


class Claimed(StrEnum):
    LAUNCHED = "launched"  # this delivery launched the work
    DUPLICATE = "duplicate"  # the work exists already
    IN_FLIGHT = "in-flight"  # another delivery holds the claim and is launching now


@dataclass(frozen=True)
class Claim:
    how: Claimed
    job: str | None  # the launched job's name (None while another delivery is launching)


def launch_once(storage: Storage, marker: str, find_existing: Callable[[], str | None],
                launch: Callable[[], str]) -> Claim:
    """Run `launch` at most once per marker, however many deliveries race here.

    `find_existing` looks the work up by what identifies it (a job label), for work launched
    before its marker was written; `launch` starts it and returns the job's name. A failed launch
    removes the claim so that the platform's retry may claim it again.
    """
    existing = find_existing()
    if existing:
        return Claim(Claimed.DUPLICATE, existing)
    token = uuid.uuid4().hex
    claim = json.dumps({"owner": token, "claimed": time.time()}).encode()
    if not storage.create(marker, claim):
        try:
            held = json.loads(storage.read(marker))
        except (NotFound, ValueError):
            raise TransientError(f"launch marker {marker} is being written; try again") from None
        if held.get("job"):
            return Claim(Claimed.DUPLICATE, held["job"])
        if held.get("owner") == token:
            pass  # our own claim: the create succeeded but its answer was lost and retried
        elif time.time() - float(held.get("claimed", 0)) < LAUNCH_LEASE_S:
            return Claim(Claimed.IN_FLIGHT, None)
        else:
            storage.write(marker, claim)  # the owner died: take the work over
    try:
        job = launch()
    except AlreadyExists:
        job = find_existing() or "already-exists"
        storage.write(marker, json.dumps({"owner": token, "job": job}).encode())
        return Claim(Claimed.DUPLICATE, job)
    except Exception:
        storage.delete(marker)
        raise
    storage.write(marker, json.dumps({"owner": token, "job": job, "claimed": time.time()}).encode())
    return Claim(Claimed.LAUNCHED, job)
