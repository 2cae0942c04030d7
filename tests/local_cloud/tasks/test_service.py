"""The scheduler: tasks dispatched in scheduleTime order without polling, close() at once,
deletion during an attempt, retries that run out, and a store's tasks taken up on start."""
from __future__ import annotations

import threading
import time

import pytest

from local_cloud.tasks.resources import new_queue, new_task
from local_cloud.tasks.service import CloudTasksService, now_us
from local_cloud.tasks.state import TaskStore
from model_server.errors import ApiError
from tests.local_cloud.tasks.conftest import LOCATION, PUBLISH_URL, QUEUE, Blocked, Target


def _task(task_id: str, seconds_ahead: float) -> dict:
    from local_cloud.tasks.wire import format_timestamp

    return {"task": {"name": f"{QUEUE}/tasks/{task_id}", "httpRequest": {"url": PUBLISH_URL},
                     "scheduleTime": format_timestamp(now_us() + int(seconds_ahead * 1e6))}}


@pytest.fixture
def service_with():
    made = []

    def make(*answers, retry: dict | None = None) -> tuple[CloudTasksService, Target]:
        target = Target(*answers)
        service = CloudTasksService(target)
        made.append(service)
        service.create_queue(LOCATION, {"name": QUEUE, "retryConfig": retry or {}})
        return service, target

    yield make
    for service in made:
        service.close()


def test_tasks_are_dispatched_in_schedule_order_not_creation_order(service_with):
    service, target = service_with()
    for task_id, ahead in (("third", 0.3), ("first", 0.1), ("second", 0.2)):
        service.create_task(QUEUE, _task(task_id, ahead))
    requests = target.wait_for(3)
    assert [request["headers"]["X-CloudTasks-TaskName"] for request in requests] == ["first", "second", "third"]
    assert service.wait_idle(1) and service.list_tasks(QUEUE) == {}


def test_close_stops_the_scheduler_at_once():
    service = CloudTasksService(Target())
    service.create_queue(LOCATION, {"name": QUEUE})
    service.create_task(QUEUE, _task("far", 3600))
    scheduler = service._scheduler
    started = time.monotonic()
    service.close()
    assert time.monotonic() - started < 0.5 and not scheduler.is_alive()
    service.close()  # twice is harmless


def test_a_task_deleted_during_its_attempt_is_not_retried(service_with):
    blocked = Blocked(500)
    service, target = service_with(blocked)
    service.create_task(QUEUE, _task("in-flight", 0))
    assert blocked.entered.wait(5)
    assert service.get_task(f"{QUEUE}/tasks/in-flight")["dispatchCount"] == 1
    service.delete_task(f"{QUEUE}/tasks/in-flight")
    assert not service.wait_idle(0.05)  # the attempt is still running
    blocked.release.set()
    assert service.wait_idle(2)
    with pytest.raises(ApiError) as gone:
        service.get_task(f"{QUEUE}/tasks/in-flight")
    assert gone.value.status == "NOT_FOUND" and len(target.requests) == 1


def test_retries_run_out_and_the_task_is_deleted(service_with):
    service, target = service_with(500, 500, 500, 500, retry={"maxAttempts": 3, "minBackoff": "0.01s"})
    service.create_task(QUEUE, _task("doomed", 0))
    target.wait_for(3)
    assert service.wait_idle(2)
    assert service.list_tasks(QUEUE) == {} and len(target.requests) == 3
    # The given-up task's name stays taken.
    with pytest.raises(ApiError) as again:
        service.create_task(QUEUE, _task("doomed", 0))
    assert again.value.status == "ALREADY_EXISTS"


def test_a_deliver_that_answers_nonsense_is_a_failed_attempt(service_with):
    service, target = service_with(lambda request: "OK", retry={"minBackoff": "0.01s"})
    service.create_task(QUEUE, _task("odd", 0))
    target.wait_for(2)
    assert service.wait_idle(2) and service.list_tasks(QUEUE) == {}


def test_tasks_a_store_holds_are_scheduled_when_the_service_starts():
    store = TaskStore()
    queue = new_queue(LOCATION, {"name": QUEUE})
    store.add_queue(queue)
    store.add_task(new_task(queue, _task("left-over", -1), now_us(), "unused"))
    target = Target()
    with CloudTasksService(target, store=store) as service:
        [request] = target.wait_for(1)
        assert request["headers"]["X-CloudTasks-TaskName"] == "left-over"
        assert service.wait_idle(1) and store.task(f"{QUEUE}/tasks/left-over") is None


def test_many_tasks_at_once_are_each_delivered_once(service_with):
    service, target = service_with()
    threads = [threading.Thread(target=service.create_task, args=(QUEUE, _task(f"t{i}", 0.05))) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    target.wait_for(40)
    assert service.wait_idle(2)
    names = sorted(request["headers"]["X-CloudTasks-TaskName"] for request in target.requests)
    assert names == sorted(f"t{i}" for i in range(40))


def test_list_pages_and_views(service_with):
    service, _ = service_with()
    for i in range(5):
        service.create_task(QUEUE, {**_task(f"t{i}", 600), "responseView": "BASIC"})
    first = service.list_tasks(QUEUE, page_size=2)
    assert [task["name"][-2:] for task in first["tasks"]] == ["t0", "t1"]
    second = service.list_tasks(QUEUE, page_size=2, page_token=first["nextPageToken"])
    assert [task["name"][-2:] for task in second["tasks"]] == ["t2", "t3"]
    last = service.list_tasks(QUEUE, page_size=2, page_token=second["nextPageToken"])
    assert [task["name"][-2:] for task in last["tasks"]] == ["t4"] and "nextPageToken" not in last
    for bad in ({"page_token": "bm90LWEtbmFtZQ=="}, {"page_size": -1}, {"view": "ALL"}):
        with pytest.raises(ApiError) as refused:
            service.list_tasks(QUEUE, **bad)
        assert refused.value.status == "INVALID_ARGUMENT"


def test_a_task_kept_in_a_file_is_dispatched_by_the_next_service_and_its_name_stays_taken(tmp_path):
    from local_cloud.tasks.state import FileTaskStore

    path = tmp_path / "tasks.json"
    first = CloudTasksService(Target(), store=FileTaskStore(path))
    first.create_queue(LOCATION, {"name": QUEUE})
    first.create_task(QUEUE, _task("bake-end-r", 0.6))  # due after this service is gone
    first.create_task(QUEUE, _task("done-soon", 0.0))
    first.wait_idle(2)
    first.close()  # as a crash would leave it: the file is all that remains

    target = Target()
    second = CloudTasksService(target, store=FileTaskStore(path))
    try:
        assert second.get_queue(QUEUE)["name"] == QUEUE
        (request,) = target.wait_for(1)
        assert request["headers"]["X-CloudTasks-TaskName"] == "bake-end-r"
        assert second.wait_idle(2) and second.list_tasks(QUEUE) == {}
        with pytest.raises(ApiError, match="executed too recently"):  # an executed task's name stays taken
            second.create_task(QUEUE, _task("done-soon", 0))
    finally:
        second.close()
    assert FileTaskStore(path).task(f"{QUEUE}/tasks/bake-end-r") is None
