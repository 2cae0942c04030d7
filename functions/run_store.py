"""The run store: the one owner of the pipeline bucket's layout.

Every object name the chain reads or writes is made here, and every read and write of a run goes
through `RunStore`: the functions, the command line and the benchmarks alike. The layout
(design.md, "Bucket layout"):

    triggers/<name>.json                        trigger files uploaded by users
    runs/<run_id>/request.json                  the validated request and its origin (create-only)
    runs/<run_id>/events/<stamp>-<stage>.json   the run ledger, append-only
    runs/<run_id>/<stage>/_LAUNCHED             a stage's launch marker (functions.claim)
    runs/<run_id>/preprocess/...                CSV shards, then _MANIFEST.json
    runs/<run_id>/train/                        the CustomJob's base output: model/, comparison.json,
                                                metrics.json
    runs/<run_id>/deploy/_DEPLOYED              the run's deployment, recorded once
    runs/<run_id>/release/_LAUNCHED             the run's release action (promote or roll back), once
    deployments/<operation>.json                which run a deploy operation belongs to, and why
    releases/<stamp>-<run_id>-<action>.json     every traffic change: who, when, why, from and to
    rollbacks/<rollback>/_LAUNCHED, _DONE       a requested rollback's deploy and its end, once
    endpoints/<endpoint>/_RELEASING             the one release in progress on an endpoint, and whose
    guards/debounce/<key>.json                  the last run a request from one origin started, and when
    guards/admission/slots/<slot>-<gen>.json    who holds one of the active-run slots (create-only; the
                                                highest generation of a slot is its holder)
    guards/admission/queue/<ticket>.json        a run waiting for a slot, numbered in the order queued
    guards/admission/admitted/<ticket>.json     a run admitted (started or queued), numbered, with the
                                                time the daily run budget counts it at

The path functions are pure, so an entry point can tell a manifest from any other object of the
bucket without I/O.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from events.errors import InvalidEvent
from events.ledger import STAGES, LedgerEvent, RunStatus, fold
from events.manifest import MANIFEST_NAME
from events.run_id import is_run_id
from events.run_request import RunRequest, parse_run_request
from events.timestamps import TimeLike, parse_sortable_stamp, sortable_stamp
from functions.platform import NotFound, Storage

TRIGGER_PREFIX = "triggers/"
ADMISSION_PREFIX = "guards/admission/"
SLOTS_PREFIX = ADMISSION_PREFIX + "slots/"
QUEUE_PREFIX = ADMISSION_PREFIX + "queue/"
ADMITTED_PREFIX = ADMISSION_PREFIX + "admitted/"
RUNS_PREFIX = "runs/"
DEPLOYMENTS_PREFIX = "deployments/"
RELEASES_PREFIX = "releases/"
ROLLBACKS_PREFIX = "rollbacks/"
MAX_MANIFEST_BYTES = 16 << 20
MAX_METRICS_BYTES = 1 << 20

_LEDGER_NAME = re.compile(r"^runs/([^/]+)/events/(\d{8}T\d{6}\.\d{6}Z)-([a-z]+)\.json$")
_SLOT_NAME = re.compile(re.escape(SLOTS_PREFIX) + r"(\d{3})-(\d{9})\.json")
_TICKET_NAME = re.compile(r"(\d{12})\.json")
_MANIFEST_NAME = re.compile(r"^runs/([^/]+)/preprocess/" + re.escape(MANIFEST_NAME) + "$")


# --- names ----------------------------------------------------------------------------------------


def run_prefix(run_id: str) -> str:
    """`runs/<run_id>/`, the folder of one run; ValueError for anything but a run id."""
    if not is_run_id(run_id):
        raise ValueError(f"not a run id: {run_id[:80]!r}")
    return f"{RUNS_PREFIX}{run_id}/"


def is_trigger_name(name: str) -> bool:
    """An object under triggers/ whose name walks nowhere else: no empty, "." or ".." segment (a
    Cloud Storage name may hold them; read through a directory, as locally, they would escape)."""
    if not name.startswith(TRIGGER_PREFIX) or name == TRIGGER_PREFIX or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name[len(TRIGGER_PREFIX):].split("/"))


def request_name(run_id: str) -> str:
    return run_prefix(run_id) + "request.json"


def ledger_prefix(run_id: str) -> str:
    """`runs/<run_id>/events/`: list it to read a run's ledger."""
    return run_prefix(run_id) + "events/"


def ledger_name(run_id: str, time: TimeLike, stage: str) -> str:
    """Where a ledger record lives; names sort by time within a run."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return f"{ledger_prefix(run_id)}{sortable_stamp(time)}-{stage}.json"


def parse_ledger_name(name: str) -> tuple[str, datetime, str] | None:
    """(run_id, time, stage) of a ledger object name, or None for any other object."""
    match = _LEDGER_NAME.fullmatch(name)
    if not match or not is_run_id(match.group(1)) or match.group(3) not in STAGES:
        return None
    try:
        moment = parse_sortable_stamp(match.group(2))
    except ValueError:
        return None
    return match.group(1), moment, match.group(3)


def preprocess_prefix(run_id: str) -> str:
    return run_prefix(run_id) + "preprocess/"


def manifest_name(run_id: str) -> str:
    return preprocess_prefix(run_id) + MANIFEST_NAME


def manifest_run_id(name: str) -> str | None:
    """The run whose preprocessing manifest this object is, else None (no I/O)."""
    match = _MANIFEST_NAME.fullmatch(name) if isinstance(name, str) else None
    return match.group(1) if match and is_run_id(match.group(1)) else None


def train_prefix(run_id: str) -> str:
    """The training job's base output directory (AIP_MODEL_DIR is its model/)."""
    return run_prefix(run_id) + "train/"


def metrics_name(run_id: str) -> str:
    return train_prefix(run_id) + "metrics.json"


def progress_name(run_id: str) -> str:
    """Where the trainer reports how far it is while it runs (rewritten after each evaluation)."""
    return train_prefix(run_id) + "progress.json"


def training_report_name(run_id: str) -> str:
    """The trainer's learning curves, per-slice RMSE and sample of predictions, for the run report."""
    return train_prefix(run_id) + "training_report.json"


def comparison_name(run_id: str) -> str:
    """The trainer's scores of the candidate and the champion on the same eval rows (the gate's input)."""
    return train_prefix(run_id) + "comparison.json"


def launch_marker_name(run_id: str, stage: str) -> str:
    if stage not in ("preprocess", "train", "deploy", "release"):
        raise ValueError(f"stage {stage!r} launches nothing")
    return f"{run_prefix(run_id)}{stage}/_LAUNCHED"


def deployed_marker_name(run_id: str) -> str:
    return run_prefix(run_id) + "deploy/_DEPLOYED"


def rollback_marker_name(subject: str, step: str) -> str:
    """A requested rollback's create-only markers: its deploy launched, its release recorded."""
    if step not in ("launched", "done"):
        raise ValueError(f"a rollback has no step {step!r}")
    return f"{ROLLBACKS_PREFIX}{subject}/_{step.upper()}"


def debounce_marker_name(key: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        raise ValueError(f"debounce key {key!r} is not a sha256 hex digest")
    return f"guards/debounce/{key}.json"


def admission_slot_name(slot: int, generation: int) -> str:
    """One holder of an active-run slot: the slot's next holder creates the next generation."""
    if not (0 <= slot < 1000 and 0 <= generation < 10**9):
        raise ValueError(f"no admission slot {slot} generation {generation}")
    return f"{SLOTS_PREFIX}{slot:03d}-{generation:09d}.json"


def queue_ticket_name(ticket: int) -> str:
    return _ticket_name(QUEUE_PREFIX, ticket)


def admitted_ticket_name(ticket: int) -> str:
    return _ticket_name(ADMITTED_PREFIX, ticket)


def _ticket_name(prefix: str, ticket: int) -> str:
    if not 0 <= ticket < 10**12:
        raise ValueError(f"ticket {ticket} is out of range")
    return f"{prefix}{ticket:012d}.json"


def release_slot_name(endpoint_id: str) -> str:
    return f"endpoints/{endpoint_id}/_RELEASING"


def release_record_name(time: TimeLike, run_id: str, action: str) -> str:
    if not re.fullmatch(r"[a-z-]+", action):
        raise ValueError(f"release action {action!r} is not a lowercase word")
    return f"{RELEASES_PREFIX}{sortable_stamp(time)}-{run_id}-{action}.json"


def deployment_index_name(operation_name: str) -> str:
    """The index entry of a deploy operation (`.../operations/<id>`), keyed by its id."""
    return f"{DEPLOYMENTS_PREFIX}{operation_name.rsplit('/', 1)[-1]}.json"


# --- the store ------------------------------------------------------------------------------------


class RunStore:
    """Runs in the pipeline bucket, read and written through the storage port."""

    def __init__(self, storage: Storage, bucket: str):
        self.storage = storage
        self.bucket = bucket

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    # the request

    def create_request(self, run_id: str, document: dict[str, Any]) -> bool:
        """Write request.json once; False when the run exists already (a redelivery)."""
        return self.storage.create(request_name(run_id), json.dumps(document, indent=2).encode())

    def has_run(self, run_id: str) -> bool:
        return self.storage.exists(request_name(run_id))

    def request_document(self, run_id: str) -> dict[str, Any]:
        """request.json as written; NotFound when the run has none, ValueError when unreadable."""
        document = json.loads(self.storage.read(request_name(run_id)))
        if not isinstance(document, dict):
            raise ValueError(f"{request_name(run_id)} is not a JSON object")
        return document

    def read_request(self, run_id: str) -> RunRequest:
        """The validated request the run was started with."""
        return parse_run_request(json.dumps(self.request_document(run_id)["request"]))

    def request_origin(self, run_id: str) -> dict[str, Any]:
        """Where the run came from (trigger file or message), or {} when that cannot be read."""
        try:
            origin = self.request_document(run_id).get("origin")
        except (NotFound, ValueError):
            return {}
        return origin if isinstance(origin, dict) else {}

    def run_ids(self) -> list[str]:
        """Every run of the bucket, oldest first (run ids sort by time)."""
        folders = (folder[len(RUNS_PREFIX):].rstrip("/") for folder in self.storage.list_folders(RUNS_PREFIX))
        return sorted(run_id for run_id in folders if is_run_id(run_id))

    def find_run_for_trigger(self, trigger_uri: str, others: set[str] | None = None) -> str | None:
        """The run a trigger file (gs://bucket/triggers/...) started, if it has started one, newest first.

        A caller that looks again and again (while the run is starting) passes `others`: the runs
        found to be another trigger's are added to it and skipped on the next look, so each
        request.json is read once; a run whose request is not readable yet is looked at again.
        """
        for run_id in reversed(self.run_ids()):
            if others is not None and run_id in others:
                continue
            origin = self.request_origin(run_id)
            if origin.get("object") == trigger_uri:
                return run_id
            if origin and others is not None:
                others.add(run_id)
        return None

    # trigger files

    def read_trigger(self, name: str, max_bytes: int) -> bytes:
        """A trigger file's bytes; NotFound, or ValueError when it is larger than max_bytes."""
        if not is_trigger_name(name):
            raise ValueError(f"{name!r} is not a trigger file")
        return self.storage.read(name, max_bytes=max_bytes)

    # the ledger

    def append(self, event: LedgerEvent) -> None:
        self.storage.write(ledger_name(event.run_id, event.time, event.stage), event.to_json())

    def ledger(self, run_id: str | None = None) -> dict[str, list[LedgerEvent]]:
        """Every readable ledger record (of every run, or of one), grouped by run id."""
        grouped: dict[str, list[LedgerEvent]] = {}
        for name in self.storage.list(ledger_prefix(run_id) if run_id else RUNS_PREFIX):
            if parse_ledger_name(name) is None:
                continue
            try:
                event = LedgerEvent.from_json(self.storage.read(name))
            except (NotFound, InvalidEvent):
                continue
            grouped.setdefault(event.run_id, []).append(event)
        return grouped

    def statuses(self, run_id: str | None = None) -> list[RunStatus]:
        """Runs folded from their ledgers, oldest first."""
        folded = [fold(events) for events in self.ledger(run_id).values()]
        return sorted(folded, key=lambda status: status.started)

    # stage outputs

    def read_manifest(self, run_id: str) -> Any:
        """The run's manifest, parsed; NotFound, or ValueError when it is not JSON."""
        return json.loads(self.storage.read(manifest_name(run_id), max_bytes=MAX_MANIFEST_BYTES))

    def read_comparison(self, run_id: str) -> Any:
        """comparison.json the trainer wrote, parsed; NotFound, or ValueError when it is not JSON."""
        return json.loads(self.storage.read(comparison_name(run_id), max_bytes=MAX_METRICS_BYTES))

    def read_metrics(self, run_id: str) -> dict[str, Any]:
        """metrics.json the trainer wrote, or {} when there is none to read."""
        try:
            metrics = json.loads(self.storage.read(metrics_name(run_id), max_bytes=MAX_METRICS_BYTES))
        except (NotFound, ValueError):
            return {}
        return metrics if isinstance(metrics, dict) else {}

    # deployments

    def index_deployment(self, operation_name: str, run_id: str, model_version: str, **details: Any) -> None:
        """Remember which run a deploy operation belongs to, and why it was started (`details`:
        its kind, the champion beside it): its end arrives as a log line."""
        document = {**details, "run_id": run_id, "operation": operation_name, "model_version": model_version}
        self.storage.write(deployment_index_name(operation_name), json.dumps(document).encode())

    def deployment(self, operation_name: str) -> dict[str, Any] | None:
        """The index entry of a deploy operation, or None when it is not one of ours."""
        try:
            return json.loads(self.storage.read(deployment_index_name(operation_name)))
        except NotFound:
            return None

    def mark_deployed(self, run_id: str, deployment: dict[str, Any]) -> bool:
        """Record the run's deployment once; False when a redelivery recorded it already."""
        return self.storage.create(deployed_marker_name(run_id), json.dumps(deployment).encode())

    def deployed_record(self, run_id: str) -> dict[str, Any] | None:
        """What mark_deployed recorded for the run, or None."""
        try:
            return json.loads(self.storage.read(deployed_marker_name(run_id)))
        except (NotFound, ValueError):
            return None

    def last_serving_run(self, other_than: str) -> RunStatus | None:
        """The latest run whose model went into service (deployed), other than `other_than`."""
        served = [s for s in self.statuses() if s.run_id != other_than and s.state.value == "deployed"]
        return max(served, key=lambda s: s.updated, default=None)

    # releases

    def claim_release_slot(self, endpoint_id: str, holder: str) -> str | None:
        """Hold the endpoint's one release slot for `holder` (a run, or a rollback): None when it
        is ours now, else who holds it. Create-only, so racing deploys cannot both hold it; a
        holder that ended without freeing it (a crash) is taken over."""
        name = release_slot_name(endpoint_id)
        for _ in range(2):
            if self.storage.create(name, json.dumps({"holder": holder}).encode()):
                return None
            try:
                current = json.loads(self.storage.read(name))["holder"]
            except (NotFound, ValueError, KeyError, TypeError):
                continue  # freed, or being written, this very moment: look again
            if current == holder:
                return None
            if not self._holder_has_ended(current):
                return current
            self.storage.delete(name)
        return "another release"

    def free_release_slot(self, endpoint_id: str, holder: str) -> None:
        """Give the slot up, if `holder` has it (a redelivery may find it freed already)."""
        name = release_slot_name(endpoint_id)
        try:
            current = json.loads(self.storage.read(name)).get("holder")
        except (NotFound, ValueError, AttributeError):
            return
        if current == holder:
            self.storage.delete(name)

    def debounce(self, key: str, run_id: str, at: datetime, window_s: float) -> tuple[str, float] | None:
        """Claim `key` for `run_id` at `at`: None when this run may go ahead (first, a redelivery of
        it, or the last run with this key is older than the window), else (that run, seconds since)."""
        name = debounce_marker_name(key)
        ours = json.dumps({"run_id": run_id, "at": at.isoformat()}).encode()
        if self.storage.create(name, ours):
            return None
        try:
            held = json.loads(self.storage.read(name))
            other, since = held["run_id"], (at - datetime.fromisoformat(held["at"])).total_seconds()
        except (NotFound, ValueError, KeyError, TypeError):
            self.storage.write(name, ours)  # unreadable: this run takes the key
            return None
        if other == run_id:
            return None
        if abs(since) < window_s:
            return other, since
        self.storage.write(name, ours)  # the last one is old enough: this run starts anew
        return None

    # admission (functions.stages.admission decides; these are its markers)

    def admission_slots(self) -> dict[int, list[int]]:
        """Each active-run slot that has had a holder: its generations present, lowest first."""
        slots: dict[int, list[int]] = {}
        for name in self.storage.list(SLOTS_PREFIX):
            match = _SLOT_NAME.fullmatch(name)
            if match:
                slots.setdefault(int(match.group(1)), []).append(int(match.group(2)))
        return {slot: sorted(generations) for slot, generations in sorted(slots.items())}

    def slot_holder(self, slot: int, generation: int) -> dict[str, Any] | None:
        """What a slot generation's marker holds ({"run_id", "taken"}), or None when it cannot be read."""
        return self._read_object(admission_slot_name(slot, generation))

    def take_slot(self, slot: int, generation: int, run_id: str, taken: datetime) -> bool:
        """Become the slot's holder at this generation; False when another run did first."""
        body = json.dumps({"run_id": run_id, "taken": taken.isoformat()}).encode()
        return self.storage.create(admission_slot_name(slot, generation), body)

    def drop_slot_generations(self, slot: int, generations: list[int]) -> None:
        """Delete superseded generations of a slot (never call it with the slot's highest)."""
        for generation in generations:
            self.storage.delete(admission_slot_name(slot, generation))

    def queue_tickets(self) -> list[int]:
        """The tickets of the runs waiting for a slot, oldest first."""
        return self._tickets(QUEUE_PREFIX)

    def queued_entry(self, ticket: int) -> dict[str, Any] | None:
        """A queue ticket's content ({"run_id", "queued"}), or None when it is gone."""
        return self._read_object(queue_ticket_name(ticket))

    def enqueue(self, ticket: int, run_id: str, queued: datetime) -> bool:
        """Queue the run under this ticket; False when the ticket is another run's."""
        body = json.dumps({"run_id": run_id, "queued": queued.isoformat()}).encode()
        return self.storage.create(queue_ticket_name(ticket), body)

    def dequeue(self, ticket: int) -> None:
        self.storage.delete(queue_ticket_name(ticket))

    def admitted_tickets(self) -> list[int]:
        """The tickets of the runs the daily run budget counts, oldest first."""
        return self._tickets(ADMITTED_PREFIX)

    def admitted_entry(self, ticket: int) -> dict[str, Any] | None:
        """An admission's record ({"run_id", "at"}), or None when it is gone."""
        return self._read_object(admitted_ticket_name(ticket))

    def count_admitted(self, ticket: int, run_id: str, at: datetime) -> bool:
        """Count the run against the budget under this ticket; False when the ticket is another run's."""
        body = json.dumps({"run_id": run_id, "at": at.isoformat()}).encode()
        return self.storage.create(admitted_ticket_name(ticket), body)

    def drop_admitted(self, ticket: int) -> None:
        """Forget an admission: one refused after all, or one too old for the budget to look at."""
        self.storage.delete(admitted_ticket_name(ticket))

    def _tickets(self, prefix: str) -> list[int]:
        found = (_TICKET_NAME.fullmatch(name[len(prefix):]) for name in self.storage.list(prefix))
        return sorted(int(match.group(1)) for match in found if match)

    def _read_object(self, name: str) -> dict[str, Any] | None:
        try:
            document = json.loads(self.storage.read(name))
        except (NotFound, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def _holder_has_ended(self, holder: str) -> bool:
        if is_run_id(holder):
            return any(status.terminal for status in self.statuses(holder))
        return self.storage.exists(rollback_marker_name(holder, "done"))

    def record_release(self, time: TimeLike, run_id: str, action: str, document: dict[str, Any]) -> None:
        """One traffic change of the endpoint (create-only: a redelivery keeps the first record)."""
        body = {**document, "run_id": run_id, "action": action}
        self.storage.create(release_record_name(time, run_id, action), json.dumps(body, sort_keys=True).encode())

    def releases(self) -> list[dict[str, Any]]:
        """Every traffic change, oldest first."""
        found = []
        for name in self.storage.list(RELEASES_PREFIX):
            try:
                found.append(json.loads(self.storage.read(name, max_bytes=MAX_METRICS_BYTES)))
            except (NotFound, ValueError):
                continue
        return found
