"""Google's long-running Operations, kept in the model service's state.

Uploads, undeploys and endpoint creation end inside their request; a deploy ends later, on the
thread that loads the model. Clients read an Operation or wait for it to end
(``operations/{id}:wait``); a service that is closing answers every wait at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Mapping

from local_cloud.vertex.rest_rules import TYPE_URL_PREFIX, ApiError, format_timestamp
from local_cloud.vertex.state import next_id


def operation_id(name: str) -> str:
    """The id at the end of an Operation's name (or the id itself); NOT_FOUND when it is none."""
    found = name.rsplit("/", 1)[-1]
    if not found.isdigit():
        raise ApiError("NOT_FOUND", f"operation {name} does not exist")
    return found


class Operations:
    """The Operations of one service's state, guarded by the service's lock.

    ``start`` and ``finish`` are called with that lock held, inside the change they record;
    ``get`` and ``wait`` take it themselves.
    """

    def __init__(self, state: dict, lock: threading.RLock):
        self._state = state
        self._lock = lock
        self._finished = threading.Condition(lock)
        self._closing = False

    def start(self, parent_name: str, metadata_type: str, extra_metadata: Mapping | None = None) -> dict:
        """A new, unfinished Operation under ``parent_name`` (a model or an endpoint)."""
        new_id = next_id(self._state, "operation")
        now = format_timestamp(time.time())
        operation = {
            "name": f"{parent_name}/operations/{new_id}",
            "metadata": {
                "@type": TYPE_URL_PREFIX + metadata_type,
                "genericMetadata": {"createTime": now, "updateTime": now},
                **(extra_metadata or {}),
            },
            "done": False,
        }
        self._state["operations"][new_id] = operation
        return operation

    def finish(self, operation: dict, *, response: dict | None = None, error: ApiError | None = None) -> dict:
        """Mark an operation done (under the lock) and return the copy to report."""
        operation["metadata"]["genericMetadata"]["updateTime"] = format_timestamp(time.time())
        operation["done"] = True
        if error is not None:
            operation["error"] = error.rpc_status()
        else:
            operation["response"] = response
        self._finished.notify_all()
        return json.loads(json.dumps(operation))

    def get(self, name: str) -> dict:
        """GET .../operations/{id}: an Operation, by full name or id."""
        with self._lock:
            operation = self._state["operations"].get(operation_id(name))
            if operation is None:
                raise ApiError("NOT_FOUND", f"operation {name} does not exist")
            return json.loads(json.dumps(operation))

    def wait(self, name: str, timeout: float = 60.0) -> dict:
        """POST .../operations/{id}:wait: the Operation once done, or as it is when time runs out.

        A service that is closing answers at once with the Operation as it is.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            wanted = operation_id(name)
            while True:
                operation = self._state["operations"].get(wanted)
                if operation is None:
                    raise ApiError("NOT_FOUND", f"operation {name} does not exist")
                remaining = deadline - time.monotonic()
                if operation["done"] or remaining <= 0 or self._closing:
                    return json.loads(json.dumps(operation))
                self._finished.wait(remaining)

    def close(self) -> None:
        """Answer every wait now and every later one at once."""
        with self._lock:
            self._closing = True
            self._finished.notify_all()
