"""Requests that arrive together, run as one model call: the batching TensorFlow Serving does.

Shared by the serving container (``model_server.app``, whose model calls run on a thread) and
the local endpoint (``local_cloud.vertex.http``, whose calls are requests to a serving container,
awaited on the event loop), so that both batch in the same way.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Union

from model_server.errors import ApiError
from model_server.row_format import check_prediction_count

# Requests that arrive together run as one model call of at most this many instances.
DEFAULT_MAX_BATCH_INSTANCES = 1_000


class _BatchJob:
    __slots__ = ("instances", "future", "predictions", "error")

    def __init__(self, instances: list, future: asyncio.Future):
        self.instances = instances
        self.future = future
        self.predictions: list | None = None
        self.error: BaseException | None = None


class PredictionBatcher:
    """Runs the predictions that arrive together as one model call, as TensorFlow Serving does.

    A SavedModel call costs about the same for one row as for a hundred, so requests that
    arrive while the model is busy wait and then go in together, up to ``max_batch_instances``.
    The first request starts a call at once, so a lone request waits for nothing. Calls run one
    at a time on ``executor`` (one thread), so the event loop keeps reading requests meanwhile.
    ``predict(instances) -> predictions`` takes and gives row-format lists, so turning JSON
    into tensors and back is done once per batch. A batch the model refuses is retried request
    by request, so one bad request cannot fail the others. Lives on one event loop.
    Without an executor, ``predict`` is a coroutine function, awaited on that loop.
    """

    def __init__(self, predict: Union[Callable[[list], list], Callable[[list], Awaitable[list]]],
                 executor: ThreadPoolExecutor | None,
                 max_batch_instances: int = DEFAULT_MAX_BATCH_INSTANCES):
        self._predict = predict
        self._executor = executor
        self._max_batch_instances = max_batch_instances
        self._queue: list[_BatchJob] = []
        self._drainer: asyncio.Task | None = None

    def waiting(self) -> int:
        """How many requests wait for the next model call."""
        return len(self._queue)

    def run(self, instances: list) -> Awaitable[list]:
        """The predictions for one request's instances, once its batch has run."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_BatchJob(instances, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())  # kept: the loop holds tasks weakly
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take_batch()
                try:
                    if self._executor is None:
                        await self._execute_async(batch)
                    else:
                        await loop.run_in_executor(self._executor, self._execute, batch)
                except asyncio.CancelledError:  # the server is stopping
                    for job in batch:
                        job.future.cancel()
                    raise
                except Exception as exc:  # the executor is shut down: every request of the batch hears why
                    for job in batch:
                        job.error = job.error or exc
                for job in batch:
                    if job.future.done():  # cancelled with its request as the server stops
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    elif job.predictions is None:
                        job.future.set_exception(
                            ApiError("INTERNAL", "the prediction batch ended without an answer for this request"))
                    else:
                        job.future.set_result(job.predictions)
        finally:
            self._drainer = None

    def _take_batch(self) -> list[_BatchJob]:
        total = len(self._queue[0].instances)
        taken = 1
        while taken < len(self._queue) and total + len(self._queue[taken].instances) <= self._max_batch_instances:
            total += len(self._queue[taken].instances)
            taken += 1
        batch = self._queue[:taken]
        del self._queue[:taken]
        return batch

    def _execute(self, batch: list[_BatchJob]) -> None:
        """On the worker thread: one model call for the batch, or one per request if refused."""
        if len(batch) > 1:
            joined = [instance for job in batch for instance in job.instances]
            try:
                predictions = self._predict(joined)
            except Exception:  # retried request by request below, so each gets its own answer
                predictions = None
            if _split(batch, joined, predictions):
                return
        for job in batch:
            try:
                job.predictions = check_prediction_count(self._predict(job.instances), len(job.instances))
            except Exception as exc:  # handed to the request it belongs to
                job.error = exc

    async def _execute_async(self, batch: list[_BatchJob]) -> None:
        """``_execute`` for a predict awaited on the loop; requests retried one by one go together."""
        if len(batch) > 1:
            joined = [instance for job in batch for instance in job.instances]
            try:
                predictions = await self._predict(joined)
            except Exception:  # retried request by request below, so each gets its own answer
                predictions = None
            if _split(batch, joined, predictions):
                return

        async def alone(job: _BatchJob) -> None:
            try:
                job.predictions = check_prediction_count(await self._predict(job.instances), len(job.instances))
            except Exception as exc:  # handed to the request it belongs to
                job.error = exc

        await asyncio.gather(*(alone(job) for job in batch))


def _split(batch: list[_BatchJob], joined: list, predictions) -> bool:
    """Hand each request its share of a batch's predictions; False if there is not one per instance."""
    if not isinstance(predictions, list) or len(predictions) != len(joined):
        return False
    start = 0
    for job in batch:
        job.predictions = predictions[start: start + len(job.instances)]
        start += len(job.instances)
    return True
