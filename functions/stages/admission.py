"""Admission: how many runs may be active at once, how many may wait, and how many a day.

start_run asks here once a request is validated and debounced, before anything is launched:

- at most `max_active_runs` runs are active at once: a run is active from its admission until its
  ledger reaches a terminal state (deployed, rejected, rolled-back, failed);
- up to `max_queued_runs` more wait `queued`, each started by the event that ends an active run
  (functions.stages.start.admit_queued); a request beyond them is rejected with the reason;
- at most `daily_run_budget` runs are admitted (started, or queued to start) in the 24 h before a
  request's event time; past it a request is rejected with the reason and when the next may come.

Concurrent function instances decide at once, so every count is held by create-only markers of the
bucket (functions.run_store names them), never by a count read and then acted on:

- Active slots, `slots/<slot>-<generation>.json`, slot < max_active_runs. A slot's holder is its
  highest generation. A run takes a slot that never had one by creating generation 0, and the slot
  of a run that has ended by creating the next generation; of racing admissions only one can create
  a name, and the highest generation is never deleted (only the superseded ones are), so one that
  looked before another took the slot collides rather than taking it twice. Whether a holder has
  ended is read from its own ledger, so a run that ended without anyone freeing its slot (a crash
  between its last record and the next admission) holds nothing: nothing is freed, only taken over.
- Queue and budget tickets, `queue/<n>.json` and `admitted/<n>.json`, numbered one past the
  highest listed. Two admissions that counted the same tickets both try the same number: one
  collides, lists again and counts the other, so neither bound is exceeded however many arrive.

The daily budget is held by the budget-th last admission: a request is within the budget unless
that admission is younger than 24 h before the request's event time (exact when requests are
admitted in the order of their event times, as they are but for the odd late delivery); it is
then the next to leave the window, which says when the next request may be admitted.

Every decision for one run is taken under the run's preprocessing launch claim (functions.claim),
so the redeliveries of its start event decide one at a time, and a run already holding a slot is
found holding it (a launch that failed after the slot was taken is retried in the same slot).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from events.ledger import RunStatus
from events.timestamps import format_rfc3339
from functions.claim import LAUNCH_LEASE_S
from functions.config import ENV_NAMES, Config
from functions.platform import TransientError
from functions.run_store import RunStore

BUDGET_WINDOW = timedelta(hours=24)
# Each collision on a ticket or a slot means that another admission went ahead, so this bounds
# only pathological contention; past it the event is retried.
CONTENDED_ATTEMPTS = 64


def _setting(name: str, config: Config) -> str:
    """`MLRELAY_X=value`, for a reason that names the setting a user would change."""
    return f"MLRELAY_{ENV_NAMES[name]}={getattr(config, name)}"


class Admitted(StrEnum):
    SLOT = "slot"  # the run holds an active slot: launch it
    QUEUED = "queued"  # the run waits for a slot
    REJECTED = "rejected"  # the queue is full, or the daily budget spent


@dataclass(frozen=True)
class Admission:
    """What admission decided for one request; `details` go into its ledger record."""

    outcome: Admitted
    reason: str = ""
    slot: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Slot:
    generations: list[int]
    holder: str | None = None  # None: none yet, or another admission's, being taken this moment
    taken: datetime | None = None
    ended: bool | None = None  # read from the holder's ledger when first asked


class Slots:
    """The active-run slots as one listing shows them, each holder read once and judged once.

    A view, not a lock: what it says may be out of date a moment later, and `take` relies on the
    create-only markers, not on the view, for never giving one slot to two runs.
    """

    def __init__(self, config: Config, runs: RunStore, slots: dict[int, _Slot]):
        self.limit = config.max_active_runs
        self.runs = runs
        self.slots = slots

    @classmethod
    def read(cls, config: Config, runs: RunStore) -> "Slots":
        """One listing, and one read per slot that has a holder."""
        slots = {}
        for index, generations in runs.admission_slots().items():
            held = runs.slot_holder(index, generations[-1]) or {}
            slots[index] = _Slot(generations, held.get("run_id"), _moment(held.get("taken")))
        return cls(config, runs, slots)

    def held_by(self, run_id: str) -> int | None:
        return next((index for index, slot in self.slots.items() if slot.holder == run_id), None)

    def active(self) -> list[str]:
        """The runs holding a slot that have not ended (a slot being taken counts, as "?")."""
        return [slot.holder or "?" for index, slot in sorted(self.slots.items()) if not self._ended(slot)]

    def has_free(self) -> bool:
        return next(self._free(), None) is not None

    def hold(self, run_id: str, now: datetime | None = None) -> int | None:
        """The slot the run holds, taking a free one if it holds none; None when none is free."""
        held = self.held_by(run_id)
        return held if held is not None else self.take(run_id, now)

    def take(self, run_id: str, now: datetime | None = None) -> int | None:
        """Take a free slot for the run: its number, or None when every slot is held."""
        now = now or datetime.now(timezone.utc)
        for index in self._free():
            slot = self.slots.get(index) or _Slot([])
            generation = slot.generations[-1] + 1 if slot.generations else 0
            if self.runs.take_slot(index, generation, run_id, now):
                self.runs.drop_slot_generations(index, slot.generations)
                self.slots[index] = _Slot([generation], run_id, now, ended=False)
                return index
            # another admission took it first: it is held, by a run this view has not read
            self.slots[index] = _Slot(slot.generations + [generation], None, now, ended=False)
        return None

    def _free(self):
        """The slots a run may take, those that never had a holder first (they cost no read)."""
        if any(index >= self.limit for index in self.slots) and len(self.active()) >= self.limit:
            return  # the cap was lowered: runs in the slots beyond it still count
        never = [index for index in range(self.limit) if index not in self.slots]
        yield from never
        for index in range(self.limit):
            if index not in never and self._ended(self.slots[index]):
                yield index

    def _ended(self, slot: _Slot) -> bool:
        if slot.ended is None:
            slot.ended = self._holder_has_ended(slot)
        return slot.ended

    def _holder_has_ended(self, slot: _Slot) -> bool:
        if slot.holder is None:
            return False
        statuses: list[RunStatus] = self.runs.statuses(slot.holder)
        if statuses:
            return statuses[0].terminal
        # No ledger at all: a run whose admission died before it recorded anything. Past the
        # launch claim's lease no delivery of it is still at work, so its slot is free.
        taken = slot.taken or datetime.min.replace(tzinfo=timezone.utc)
        return (datetime.now(timezone.utc) - taken).total_seconds() > LAUNCH_LEASE_S


def admit_request(config: Config, runs: RunStore, run_id: str, at: datetime) -> Admission:
    """Decide for a validated request whose event time is `at`: a slot, the queue, or a refusal.

    A run already holding a slot (a redelivery after a failed launch) keeps it and is not counted
    against the budget again. A slot is taken only when no run is queued, so that a new request
    never overtakes the ones waiting; one that queues although a slot looks free is started by
    the pass over the queue that start_run makes after queueing it.
    """
    slots = Slots.read(config, runs)
    held = slots.held_by(run_id)
    if held is not None:
        return Admission(Admitted.SLOT, slot=held)
    budget = _count_against_budget(config, runs, run_id, at)
    if isinstance(budget, Admission):
        return budget
    try:
        if not runs.queue_tickets():
            slot = slots.take(run_id)
            if slot is not None:
                return Admission(Admitted.SLOT, slot=slot)
        decision = _enqueue(config, runs, run_id, slots)
    except BaseException:
        if budget is not None:
            runs.drop_admitted(budget)  # not admitted: the retry counts it again
        raise
    if decision.outcome == Admitted.REJECTED and budget is not None:
        runs.drop_admitted(budget)
    return decision


def _enqueue(config: Config, runs: RunStore, run_id: str, slots: Slots) -> Admission:
    limit = config.max_queued_runs
    for _ in range(CONTENDED_ATTEMPTS):
        tickets = runs.queue_tickets()
        if len(tickets) >= limit:
            active = _active_now(config, runs, slots)
            reason = (f"{len(active)} runs active ({_setting('max_active_runs', config)}) and {len(tickets)} "
                      f"queued, the queue's limit ({_setting('max_queued_runs', config)}): not started; "
                      f"send the request again once a run has ended")
            return Admission(Admitted.REJECTED, reason, details={
                "active": active, "queued": len(tickets), "max_active_runs": config.max_active_runs,
                "max_queued_runs": limit})
        ticket = tickets[-1] + 1 if tickets else 0
        if runs.enqueue(ticket, run_id, datetime.now(timezone.utc)):
            position = len(tickets) + 1
            active = _active_now(config, runs, slots)
            why = (f"{len(active)} runs active, the most at once ({_setting('max_active_runs', config)})"
                   if len(active) >= config.max_active_runs else f"{len(tickets)} runs queued before it go first")
            reason = f"{why}: queued at position {position} of at most {limit}; it starts when an active run ends"
            return Admission(Admitted.QUEUED, reason, details={
                "active": active, "position": position, "ticket": ticket,
                "max_active_runs": config.max_active_runs, "max_queued_runs": limit})
    raise TransientError("the run queue is contended; try again")


def _active_now(config: Config, runs: RunStore, slots: Slots) -> list[str]:
    """The active runs, for a reason: the view's, or a fresh one's when the view shows a slot free
    (it was read before this admission found the queue, and racing admissions fill slots)."""
    active = slots.active()
    return active if len(active) >= config.max_active_runs else Slots.read(config, runs).active()


def _count_against_budget(config: Config, runs: RunStore, run_id: str, at: datetime) -> int | Admission | None:
    """Count the run against the daily budget: its ticket, a refusal, or None when there is no budget."""
    budget = config.daily_run_budget
    if budget <= 0:
        return None
    for _ in range(CONTENDED_ATTEMPTS):
        tickets = runs.admitted_tickets()
        if len(tickets) >= budget:
            oldest = runs.admitted_entry(tickets[-budget])
            if oldest is None:
                continue  # refused after all, or pruned, since the listing: look again
            counted = _moment(oldest.get("at"))
            if counted is not None and counted > at - BUDGET_WINDOW:
                frees = counted + BUDGET_WINDOW
                reason = (f"the daily run budget is spent: {budget} runs were admitted in the 24 h before this "
                          f"request ({_setting('daily_run_budget', config)}); the next can be admitted from "
                          f"{format_rfc3339(frees, digits=0)}")
                return Admission(Admitted.REJECTED, reason, details={
                    "daily_run_budget": budget, "admitted_in_window": budget,
                    "next_admission_at": format_rfc3339(frees)})
        ticket = tickets[-1] + 1 if tickets else 0
        if runs.count_admitted(ticket, run_id, at):
            # The budget looks back `budget` tickets; keep twice that, so that tickets dropped by
            # refusals never leave it short. Never the highest, which numbers the next.
            for old in tickets[:max(0, len(tickets) + 1 - 2 * budget)]:
                runs.drop_admitted(old)
            return ticket
    raise TransientError("the daily run budget is contended; try again")


def _moment(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
