"""What the local Cloud Tasks keeps: queues, tasks, and the names of tasks that are gone.

Kept behind `TaskStore`, in memory, or in a file with `FileTaskStore` (the local cloud's, so that a
bake's end survives a crash): it holds immutable records and plain JSON, hands out nothing it could
see changed behind its back, and is told of every change by a call. The
service (``local_cloud.tasks.service``) serialises every call under its own lock, so the store
needs none.

Names of deleted and executed tasks are kept as tombstones: Cloud Tasks refuses a task named
like one deleted or executed recently with ALREADY_EXISTS ("It can take up to 24 hours ... for
the task ID to be released", CreateTaskRequest.task in
https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks/create).
That is what makes a named task a once-only action, so a tombstone lasts the full 24 hours.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

TOMBSTONE_US = 24 * 3600 * 1_000_000
_TOMBSTONES_BEFORE_PRUNING = 4096


@dataclass(frozen=True)
class Attempt:
    """One dispatch of a task, as Task.firstAttempt / lastAttempt report it (times in µs)."""

    schedule_us: int
    dispatch_us: int
    response_us: int | None = None
    # google.rpc.Status of the answer (or of the failure to get one): (code, message).
    response_status: tuple[int, str] | None = None
    http_status: int | None = None  # the answer's HTTP status, None when there was no answer


@dataclass(frozen=True)
class TaskRecord:
    """A task as the store keeps it; the service replaces it (dataclasses.replace) to change it.

    `http_request` is the task's HttpRequest JSON, checked and completed (httpMethod named, the
    token's defaults filled in); treat it as read-only. `generation` counts the times the task was
    (re)scheduled, so that a stale entry of the dispatch queue is recognised.
    """

    name: str
    queue: str
    http_request: Mapping[str, Any]
    schedule_us: int
    create_us: int
    dispatch_deadline_us: int
    retry_config: Mapping[str, Any] | None = None  # the task's own RetryConfig JSON, if it has one
    dispatch_count: int = 0
    response_count: int = 0
    first_attempt: Attempt | None = None
    last_attempt: Attempt | None = None
    generation: int = 0


class TaskStore:
    """Queues (their Queue JSON by name), tasks (TaskRecord by name) and tombstones, in memory.

    `tombstone_us`: how long the name of a task that is gone stays taken.
    """

    def __init__(self, tombstone_us: int = TOMBSTONE_US):
        self.tombstone_us = tombstone_us
        self._queues: dict[str, dict] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._tombstones: dict[str, int] = {}  # task name -> when it may be taken again

    # --- queues ---------------------------------------------------------------------------------

    def add_queue(self, queue: Mapping[str, Any]) -> None:
        if queue["name"] in self._queues:
            raise KeyError(queue["name"])
        self._queues[queue["name"]] = copy.deepcopy(dict(queue))

    def queue(self, name: str) -> dict | None:
        found = self._queues.get(name)
        return copy.deepcopy(found) if found is not None else None

    def queues_in(self, location: str) -> list[dict]:
        prefix = location + "/queues/"
        return [copy.deepcopy(queue) for name, queue in sorted(self._queues.items()) if name.startswith(prefix)]

    # --- tasks ----------------------------------------------------------------------------------

    def add_task(self, record: TaskRecord) -> None:
        if record.name in self._tasks:
            raise KeyError(record.name)
        self._tasks[record.name] = _frozen_copy(record)

    def save_task(self, record: TaskRecord) -> None:
        if record.name not in self._tasks:
            raise KeyError(record.name)
        self._tasks[record.name] = record

    def task(self, name: str) -> TaskRecord | None:
        return self._tasks.get(name)

    def tasks_in(self, queue: str) -> list[TaskRecord]:
        """The queue's tasks, ordered by name (the order list pages follow)."""
        return sorted((record for record in self._tasks.values() if record.queue == queue),
                      key=lambda record: record.name)

    def all_tasks(self) -> Iterator[TaskRecord]:
        """Every task, for the scheduler to rebuild its queue from when the service starts."""
        return iter(list(self._tasks.values()))

    def remove_task(self, name: str, now_us: int) -> None:
        """Delete a task (deleted, executed or given up); its name stays taken for a while."""
        del self._tasks[name]
        if len(self._tombstones) >= _TOMBSTONES_BEFORE_PRUNING:
            self._tombstones = {key: until for key, until in self._tombstones.items() if until > now_us}
        self._tombstones[name] = now_us + self.tombstone_us

    def name_taken(self, name: str, now_us: int) -> bool:
        """Whether a new task may not take `name`: a task has it, or had it recently."""
        if name in self._tasks:
            return True
        until = self._tombstones.get(name)
        if until is None:
            return False
        if until <= now_us:
            del self._tombstones[name]
            return False
        return True


def _frozen_copy(record: TaskRecord) -> TaskRecord:
    return replace(record, http_request=copy.deepcopy(dict(record.http_request)),
                   retry_config=copy.deepcopy(dict(record.retry_config)) if record.retry_config else None)


class FileTaskStore(TaskStore):
    """The same store kept in a JSON file, replaced whole after every change: the local cloud's.

    A bake's end is a task due minutes after it is made; with the store in memory, a local cloud
    that crashed meanwhile lost it and the reconcile sweep had to end the bake. The service holds
    its lock around every call, so each write sees one consistent state. A local queue holds a
    few tasks, so rewriting the whole file costs nothing worth a database.
    """

    def __init__(self, path: Path, tombstone_us: int = TOMBSTONE_US):
        super().__init__(tombstone_us)
        self.path = Path(path)
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        self._queues = saved["queues"]
        self._tasks = {task["name"]: _record_from_json(task) for task in saved["tasks"]}
        self._tombstones = {name: int(until) for name, until in saved["tombstones"].items()}

    def _save(self) -> None:
        state = {"queues": self._queues, "tasks": [asdict(task) for task in self._tasks.values()],
                 "tombstones": self._tombstones}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    def add_queue(self, queue: Mapping[str, Any]) -> None:
        super().add_queue(queue)
        self._save()

    def add_task(self, record: TaskRecord) -> None:
        super().add_task(record)
        self._save()

    def save_task(self, record: TaskRecord) -> None:
        super().save_task(record)
        self._save()

    def remove_task(self, name: str, now_us: int) -> None:
        super().remove_task(name, now_us)
        self._save()


def _record_from_json(task: Mapping[str, Any]) -> TaskRecord:
    def attempt(value: Mapping[str, Any] | None) -> Attempt | None:
        if value is None:
            return None
        status = value.get("response_status")
        return Attempt(**{**value, "response_status": tuple(status) if status is not None else None})

    return TaskRecord(**{**task, "first_attempt": attempt(task.get("first_attempt")),
                         "last_attempt": attempt(task.get("last_attempt"))})
