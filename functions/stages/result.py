"""What a stage did (for the function's log line and for tests), and the ledger record it writes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum

from events.ledger import LedgerEvent
from functions.claim import Claim
from functions.run_store import RunStore


class Action(StrEnum):
    LAUNCHED = "launched"  # this event started the stage's job
    DUPLICATE = "duplicate"  # the work was started already (a redelivery)
    IN_FLIGHT = "in-flight"  # another delivery is launching the same work right now
    REJECTED = "rejected"  # bad input, or no room: the run ends with the reason in its ledger
    QUEUED = "queued"  # every active slot is held: the run waits, started when an active run ends
    RECORDED = "recorded"  # a job's end was confirmed and written to the ledger
    IGNORED = "ignored"  # not this stage's event, or not one of our runs


@dataclass(frozen=True)
class StageResult:
    action: Action
    run_id: str | None = None
    detail: str = ""
    job: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_claim(cls, claim: Claim, run_id: str, **extra) -> "StageResult":
        return cls(Action(claim.how.value), run_id, job=claim.job, extra=extra)


def record(runs: RunStore, run_id: str, stage: str, state: str, cause: str, *,
           job_ids: dict[str, str] | None = None, timings: dict[str, float] | None = None,
           at: datetime | None = None, **details) -> None:
    """Append one record to the run's ledger.

    The record's time is now, or `at`: the moment the step was decided, when a racing delivery
    could record the next step between that moment and this write.
    """
    runs.append(LedgerEvent(run_id=run_id, stage=stage, state=state, time=at or datetime.now(timezone.utc),
                            cause_event_id=cause, job_ids=job_ids or {}, details=details,
                            timings=timings or {}))


def launch_timing(started: float) -> dict[str, float]:
    """How long the launch call took, as the ledger's timings record it."""
    return {"launch_s": round(time.monotonic() - started, 4)}
