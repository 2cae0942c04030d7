"""The local Cloud Tasks: queues, tasks, and their dispatch at each task's scheduleTime.

The API methods take and return the REST JSON of Cloud Tasks v2 (the HTTP front,
``local_cloud.tasks.http``, checks bodies against the discovery document before they get here)
and raise ``ApiError`` as the service answers: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS.

Dispatch waits for nothing but its next task. One scheduler thread keeps the tasks in a heap by
scheduleTime and waits on a condition until the earliest is due; creating or deleting a task
wakes it (so does close(), which ends it at once). A due task's attempt is counted
(dispatchCount, firstAttempt, lastAttempt), then handed to a small pool of dispatch threads that
call the injected ``deliver(http_request) -> HTTP status`` with the request Cloud Tasks would
send (``resources.dispatch_request``): the task's HttpRequest JSON with the headers Cloud Tasks
adds. Locally no OAuth or OIDC token is minted: the token the task names is recorded in the
request and the Authorization header says, unsigned, which account it stands for.

A status from 200 to 299 is success, and the task is deleted, as Cloud Tasks deletes an executed
task. Any other status, or an exception from ``deliver`` (recorded as UNAVAILABLE: no answer), is a
failed attempt: the task is scheduled again after the backoff of its RetryConfig (the queue's
unless the task has its own; ``local_cloud.tasks.retry``), or deleted once its retries are
spent. A task deleted while its attempt runs is not retried and its outcome is dropped.

The heap is rebuilt from the store when the service starts, so a store that outlives the process
(a later step) resumes the schedule; an attempt that was running when the process stopped is
then made again, which at-least-once delivery allows.
"""
from __future__ import annotations

import base64
import heapq
import itertools
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Mapping

from local_cloud.tasks.resources import UNAVAILABLE, attempt_status, check_location, check_queue_name, \
    dispatch_request, new_queue, new_task, not_found, render_task, retry_policy, split_task_name
from local_cloud.tasks.state import Attempt, TaskRecord, TaskStore
from local_cloud.tasks.wire import MICROS, TASK_VIEW, enum_name
from model_server.errors import ApiError, invalid

log = logging.getLogger(__name__)

Deliver = Callable[[dict], int]

DISPATCH_THREADS = 4
MAX_PAGE_SIZE = 1000
CLOSE_TIMEOUT_S = 5.0


def now_us() -> int:
    return time.time_ns() // 1000


class CloudTasksService:
    """Cloud Tasks v2's queues and tasks, dispatched through `deliver` when they are due.

    `store` keeps the queues and tasks (a fresh in-memory TaskStore unless given);
    `dispatch_threads` bounds the attempts running at once. The scheduler starts with the
    service; ``close()`` stops it.
    """

    def __init__(self, deliver: Deliver, *, store: TaskStore | None = None,
                 dispatch_threads: int = DISPATCH_THREADS):
        self._deliver = deliver
        self._store = store if store is not None else TaskStore()
        self._changed = threading.Condition(threading.Lock())
        self._due: list[tuple[int, int, str, int]] = []  # (scheduleTime µs, tie-break, name, generation)
        self._order = itertools.count()
        self._running: dict[str, int] = {}  # task name -> generation of its attempt in flight
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=dispatch_threads, thread_name_prefix="cloud-tasks-dispatch")
        for record in self._store.all_tasks():
            self._push(record)
        self._scheduler = threading.Thread(target=self._schedule, name="cloud-tasks-scheduler", daemon=True)
        self._scheduler.start()

    # --- queues ---------------------------------------------------------------------------------

    def create_queue(self, parent: str, queue: Mapping[str, Any]) -> dict:
        created = new_queue(parent, queue)
        with self._changed:
            if self._store.queue(created["name"]) is not None:
                raise ApiError("ALREADY_EXISTS", f"Queue {created['name']} already exists")
            self._store.add_queue(created)
        return created

    def get_queue(self, name: str) -> dict:
        check_queue_name(name)
        with self._changed:
            queue = self._store.queue(name)
        if queue is None:
            raise not_found(f"queue {name}")
        return queue

    def list_queues(self, parent: str, page_size: int = 0, page_token: str = "") -> dict:
        check_location(parent)
        with self._changed:
            queues = self._store.queues_in(parent)
        page, token = _page([queue["name"] for queue in queues], page_size, page_token, parent)
        by_name = {queue["name"]: queue for queue in queues}
        answer: dict[str, Any] = {"queues": [by_name[name] for name in page]} if page else {}
        if token:
            answer["nextPageToken"] = token
        return answer

    # --- tasks ----------------------------------------------------------------------------------

    def create_task(self, parent: str, request: Mapping[str, Any]) -> dict:
        """CreateTask: the task named in `request` (or a new name), at its scheduleTime."""
        check_queue_name(parent, "parent")
        view = _view(request.get("responseView") if isinstance(request, Mapping) else None)
        with self._changed:
            queue = self._store.queue(parent)
            if queue is None:
                raise not_found(f"queue {parent}")
            now = now_us()
            record = new_task(queue, request, now, self._new_task_id(parent, now))
            if self._store.name_taken(record.name, now):
                raise ApiError("ALREADY_EXISTS", f"Task {record.name} already exists or was deleted or "
                                                 "executed too recently for its name to be taken again")
            self._store.add_task(record)
            self._push(record)
            self._changed.notify_all()
        return render_task(record, view)

    def get_task(self, name: str, view: Any = None) -> dict:
        view = _view(view)
        split_task_name(name)
        with self._changed:
            record = self._store.task(name)
        if record is None:
            raise not_found(f"task {name}")
        return render_task(record, view)

    def list_tasks(self, parent: str, view: Any = None, page_size: int = 0, page_token: str = "") -> dict:
        view = _view(view)
        check_queue_name(parent, "parent")
        with self._changed:
            if self._store.queue(parent) is None:
                raise not_found(f"queue {parent}")
            records = self._store.tasks_in(parent)
        page, token = _page([record.name for record in records], page_size, page_token, parent)
        shown = set(page)
        answer: dict[str, Any] = {}
        if page:
            answer["tasks"] = [render_task(record, view) for record in records if record.name in shown]
        if token:
            answer["nextPageToken"] = token
        return answer

    def delete_task(self, name: str) -> dict:
        """DeleteTask: a task scheduled or being dispatched; it will not be attempted again."""
        split_task_name(name)
        with self._changed:
            if self._store.task(name) is None:
                raise not_found(f"task {name}")
            self._store.remove_task(name, now_us())
            self._changed.notify_all()
        return {}

    # --- life -----------------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is due and no attempt is running; False if `timeout` s pass first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._drop_stale()
                now = now_us()
                due_in = (self._due[0][0] - now) / MICROS if self._due else None
                if not self._running and (due_in is None or due_in > 0):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining if due_in is None or due_in <= 0 else min(remaining, due_in))

    def close(self) -> None:
        """Stop dispatching at once. Attempts already running finish in their threads; their
        outcomes are not recorded."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._scheduler.join(timeout=CLOSE_TIMEOUT_S)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "CloudTasksService":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- dispatch -------------------------------------------------------------------------------

    def _push(self, record: TaskRecord) -> None:
        heapq.heappush(self._due, (record.schedule_us, next(self._order), record.name, record.generation))

    def _drop_stale(self) -> None:
        """Pop heap entries of tasks deleted or rescheduled since they were pushed."""
        while self._due:
            _, _, name, generation = self._due[0]
            record = self._store.task(name)
            if record is not None and record.generation == generation and name not in self._running:
                return
            heapq.heappop(self._due)

    def _schedule(self) -> None:
        with self._changed:
            while not self._closed:
                self._drop_stale()
                if not self._due:
                    self._changed.wait()
                    continue
                now = now_us()
                wait_us = self._due[0][0] - now
                if wait_us > 0:
                    self._changed.wait(wait_us / MICROS)
                    continue
                _, _, name, _ = heapq.heappop(self._due)
                self._start_attempt(self._store.task(name), now)

    def _start_attempt(self, record: TaskRecord, now: int) -> None:
        """Count the attempt and hand it to a dispatch thread (the lock is held)."""
        request = dispatch_request(record)
        attempt = Attempt(schedule_us=record.schedule_us, dispatch_us=now)
        record = replace(record, dispatch_count=record.dispatch_count + 1,
                         first_attempt=record.first_attempt or attempt, last_attempt=attempt)
        self._store.save_task(record)
        self._running[record.name] = record.generation
        self._changed.notify_all()
        log.debug("dispatching %s (attempt %d) to %s", record.name, record.dispatch_count, request["url"])
        self._executor.submit(self._attempt, record.name, record.generation, request)

    def _attempt(self, name: str, generation: int, request: dict) -> None:
        """One attempt, on a dispatch thread: deliver, then record the outcome."""
        http_status: int | None = None
        try:
            answer = self._deliver(request)
            if isinstance(answer, bool) or not isinstance(answer, int):
                raise TypeError(f"deliver must return an HTTP status (int), returned {answer!r}")
            http_status = answer
            failure = ""
        except Exception as exc:  # the target could not be reached: a failed attempt, retried
            log.warning("task %s: the delivery to %s failed: %s", name, request.get("url"), exc)
            failure = f"the request could not be delivered: {exc}"
        with self._changed:
            if self._running.get(name) == generation:
                del self._running[name]
            self._changed.notify_all()
            record = self._store.task(name)
            if self._closed or record is None or record.generation != generation:
                return  # closed, or deleted while the attempt ran
            self._record_outcome(record, http_status, failure)

    def _record_outcome(self, record: TaskRecord, http_status: int | None, failure: str) -> None:
        now = now_us()
        status = attempt_status(http_status) if http_status is not None else (UNAVAILABLE, failure)
        attempt = replace(record.last_attempt, response_us=now, response_status=status, http_status=http_status)
        record = replace(record, last_attempt=attempt,
                         response_count=record.response_count + (http_status is not None))
        if http_status is not None and 200 <= http_status < 300:
            self._store.remove_task(record.name, now)
            log.info("task %s executed (HTTP %d, attempt %d)", record.name, http_status, record.dispatch_count)
            return
        queue = self._store.queue(record.queue)
        policy = retry_policy(queue, record) if queue is not None else None
        if policy is None or policy.gives_up(record.dispatch_count, record.first_attempt.dispatch_us, now):
            self._store.remove_task(record.name, now)
            log.warning("task %s failed %d times (last: %s); no more retries, deleted",
                        record.name, record.dispatch_count, status[1])
            return
        record = replace(record, schedule_us=now + policy.backoff_us(record.dispatch_count),
                         generation=record.generation + 1)
        self._store.save_task(record)
        self._push(record)
        log.info("task %s: attempt %d failed (%s); retried after %.3f s", record.name, record.dispatch_count,
                 status[1], (record.schedule_us - now) / MICROS)

    def _new_task_id(self, queue: str, now: int) -> str:
        """A random task id, as Cloud Tasks gives a task created without a name."""
        while True:
            task_id = str(secrets.randbits(63))
            if not self._store.name_taken(f"{queue}/tasks/{task_id}", now):
                return task_id


def _view(value: Any) -> str:
    view = enum_name(TASK_VIEW, value or "BASIC", "responseView")
    if view not in TASK_VIEW:
        raise invalid(f"responseView {value!r} is not one of {', '.join(TASK_VIEW)}")
    return "FULL" if view == "FULL" else "BASIC"


def _page(names: list[str], page_size: Any, page_token: Any, parent: str) -> tuple[list[str], str]:
    """The names of one list page (names sorted) and the token of the next ("" at the end)."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 0:
        raise invalid(f"pageSize must be a whole number >= 0, got {page_size!r}")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if page_token:
        try:
            after = base64.urlsafe_b64decode(str(page_token).encode("ascii")).decode("utf-8")
        except (ValueError, UnicodeError):
            after = ""
        if not after.startswith(parent + "/"):
            raise invalid(f"pageToken {page_token!r} is not a token this list gave")
        start = next((index for index, name in enumerate(names) if name > after), len(names))
    page = names[start:start + size]
    more = start + size < len(names)
    token = base64.urlsafe_b64encode(page[-1].encode("utf-8")).decode("ascii") if more and page else ""
    return page, token
