"""The local endpoint's own serving figures: each deployed model's predictions, errors and latencies.

In the cloud, Vertex AI writes an endpoint's serving figures to Cloud Monitoring, per deployed
model (metric label ``deployed_model_id``): ``prediction/online/prediction_count``,
``prediction/online/error_count`` and ``prediction/online/prediction_latencies``
(https://docs.cloud.google.com/monitoring/api/metrics_gcp_a_b, section "aiplatform"). Locally
the endpoint counts them itself: ``local_cloud.vertex.http`` records every predict here as it
ends, and ``local_cloud.monitoring`` answers Cloud Monitoring's ``timeSeries.list`` from it.

What one predict leaves: the second it ended in, whether it failed, and how long it took. A
failure is an answer of HTTP status 500 or more (a server error: the container gone, crashed or
timed out); a 4xx answer (a body the model refuses) is the client's error, counted as a
request and not as an error. Google's metric list says only "Number of online prediction
errors" of error_count; that server errors are what it counts is this stand-in's reading.

Memory stays bounded: figures are kept in one bucket per second that saw a predict, for
``retention_s`` (24 h by default); older buckets are dropped as new ones come, and a deployed
model's figures go with its last bucket. A bucket holds its count, its error count and its
latencies: exactly (float32 milliseconds) while it holds at most ``EXACT_SAMPLES`` of them, else
as a histogram of fixed exponential bins (``BINS_PER_DOUBLING`` per doubling from
``SMALLEST_BIN_MS``; a bin spans about 19 %), so a bucket never holds more than about half a
kilobyte whatever the load. A percentile of a window is exact (nearest rank) when every bucket in
it kept its samples; otherwise it is interpolated inside the histogram bin holding that rank, as
Cloud Monitoring computes a percentile of a Distribution, and kept within the smallest and
largest latency the window saw.

Recording is the endpoint's hot path: one lock, a dictionary look-up, a few integer updates.
Given a log (``local_cloud.vertex.serving_figures_log``), each second's bucket is also written
to disk once it is complete (a one-shot timer per bucket, so about once a second per deployed
model while it serves, and never while it is idle), when the figures are read and at ``close``,
so that the figures outlive the process, as Cloud Monitoring's outlive the endpoint.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from local_cloud.vertex.serving_figures_log import ServingFiguresLog, encode

DEFAULT_RETENTION_S = 24 * 3600
EXACT_SAMPLES = 96  # float32 samples kept per bucket: as many bytes as its histogram would take
SMALLEST_BIN_MS = 0.05
BINS_PER_DOUBLING = 4
BIN_COUNT = 96  # bin 0: under SMALLEST_BIN_MS; the last: from about 593 s up
_LAST_BIN = BIN_COUNT - 1
LOG_DELAY_S = 0.1  # a second's bucket is logged this long after it ends (predicts end a little late)


def bin_index(latency_ms: float) -> int:
    """The histogram bin of a latency: 0 below SMALLEST_BIN_MS, then BINS_PER_DOUBLING per doubling."""
    if latency_ms < SMALLEST_BIN_MS:
        return 0
    return min(_LAST_BIN, 1 + int(BINS_PER_DOUBLING * math.log2(latency_ms / SMALLEST_BIN_MS)))


def bin_bounds(index: int) -> tuple[float, float]:
    """[lower, upper) of a bin in milliseconds (the last one's upper bound is infinite)."""
    if index <= 0:
        return 0.0, SMALLEST_BIN_MS
    lower = SMALLEST_BIN_MS * 2 ** ((index - 1) / BINS_PER_DOUBLING)
    upper = math.inf if index >= _LAST_BIN else SMALLEST_BIN_MS * 2 ** (index / BINS_PER_DOUBLING)
    return lower, upper


class _Second:
    """One second's figures of one deployed model."""

    __slots__ = ("second", "count", "errors", "low", "high", "samples", "bins", "logged")

    def __init__(self, second: int):
        self.second = second
        self.count = 0
        self.errors = 0
        self.low = math.inf
        self.high = 0.0
        self.samples: array | None = array("f")
        self.bins: array | None = None
        self.logged = 0  # the count when this bucket was last written to the log

    @classmethod
    def restored(cls, fields: dict) -> "_Second":
        """A bucket from its fields as the log kept them."""
        bucket = cls(fields["second"])
        bucket.count, bucket.errors = fields["count"], fields["errors"]
        bucket.low, bucket.high = float(fields["low"]), float(fields["high"])
        bucket.logged = bucket.count
        if "samples" in fields:
            bucket.samples = array("f", fields["samples"])
        else:
            bucket.samples = None
            bucket.bins = array("I", bytes(4 * BIN_COUNT))
            for index, count in fields["bins"].items():
                bucket.bins[min(max(index, 0), _LAST_BIN)] += count
        return bucket

    def add(self, latency_ms: float, error: bool) -> None:
        self.count += 1
        if error:
            self.errors += 1
        if latency_ms < self.low:
            self.low = latency_ms
        if latency_ms > self.high:
            self.high = latency_ms
        samples = self.samples
        if samples is None:
            self.bins[bin_index(latency_ms)] += 1
        elif len(samples) < EXACT_SAMPLES:
            samples.append(latency_ms)
        else:  # past the exact samples: from now on this second keeps a histogram
            bins = self.bins = array("I", bytes(4 * BIN_COUNT))
            for sample in samples:
                bins[bin_index(sample)] += 1
            bins[bin_index(latency_ms)] += 1
            self.samples = None


@dataclass
class Latencies:
    """The latencies of a window: exact samples while every second kept them, else a histogram."""

    count: int = 0
    low: float = math.inf
    high: float = 0.0
    samples: list[float] | None = field(default_factory=list)
    bins: list[int] | None = None

    def add(self, second: _Second) -> None:
        self.count += second.count
        self.low = min(self.low, second.low)
        self.high = max(self.high, second.high)
        if self.samples is not None and second.samples is not None:
            self.samples.extend(second.samples)
            return
        if self.bins is None:
            self.bins = [0] * BIN_COUNT
            for sample in self.samples or ():
                self.bins[bin_index(sample)] += 1
            self.samples = None
        if second.samples is not None:
            for sample in second.samples:
                self.bins[bin_index(sample)] += 1
        else:
            for index, count in enumerate(second.bins):
                if count:
                    self.bins[index] += count

    def percentile(self, percent: float) -> float | None:
        """The `percent`-th percentile in milliseconds (nearest rank), None for an empty window."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(percent / 100 * self.count))  # the rank-th smallest latency
        if self.samples is not None:
            return float(sorted(self.samples)[rank - 1])
        below = 0
        for index, count in enumerate(self.bins):
            if count and below + count >= rank:
                lower, upper = bin_bounds(index)
                upper = min(upper, self.high)
                value = lower + (upper - lower) * (rank - below) / count
                return min(max(value, self.low), self.high)
            below += count
        return self.high  # unreachable while the bins add up to count


@dataclass
class Figures:
    """A deployed model's figures over a window of whole seconds [start_s, end_s)."""

    start_s: int
    end_s: int
    requests: int = 0
    errors: int = 0
    latencies: Latencies = field(default_factory=Latencies)

    def add(self, second: _Second) -> None:
        self.requests += second.count
        self.errors += second.errors
        self.latencies.add(second)

    def latency_percentile(self, percent: float) -> float | None:
        return self.latencies.percentile(percent)


class ServingFigures:
    """Per (endpoint id, deployed model id): per-second buckets of predicts, kept ``retention_s``.

    Thread-safe. ``record`` is called by the endpoint as each predict ends; the rest reads. Times
    are Unix seconds; a bucket is the whole second [s, s + 1) a predict ended in, and a window
    of whole seconds [start_s, end_s) holds the buckets inside it.
    """

    def __init__(self, retention_s: int = DEFAULT_RETENTION_S, clock: Callable[[], float] = time.time,
                 log_path: str | Path | None = None):
        if retention_s < 1:
            raise ValueError("retention_s must be at least 1 second")
        self.retention_s = int(retention_s)
        self._clock = clock
        self._lock = threading.Lock()
        # (endpoint id, deployed model id) -> second -> bucket, oldest second first
        self._series: dict[tuple[str, str], OrderedDict[int, _Second]] = {}
        self._log = ServingFiguresLog(log_path) if log_path is not None else None
        if self._log is not None:
            for endpoint_id, model_id, fields in self._log.load(self._cutoff()):
                self._series.setdefault((endpoint_id, model_id), OrderedDict())[fields["second"]] = (
                    _Second.restored(fields))

    def _write_newest(self, keys: Iterable[tuple[str, str]]) -> None:
        """Log the newest bucket of each series in ``keys`` as it stands (under the lock)."""
        if self._log is None:
            return
        newest = [(key, next(reversed(buckets.values()))) for key in keys if (buckets := self._series.get(key))]
        self._log.append([self._logged(key, bucket) for key, bucket in newest if bucket.logged != bucket.count])

    def _write_second(self, key: tuple[str, str], second: int) -> None:
        """Log one second's bucket of a series, if it is still kept and changed since it was logged."""
        with self._lock:
            bucket = (self._series.get(key) or {}).get(second)
            if self._log is not None and bucket is not None and bucket.logged != bucket.count:
                self._log.append([self._logged(key, bucket)])

    @staticmethod
    def _logged(key: tuple[str, str], bucket: _Second) -> str:
        bucket.logged = bucket.count
        return encode(*key, bucket)

    def close(self) -> None:
        """Log every series' newest bucket and close the log (the figures stay readable)."""
        with self._lock:
            self._write_newest(list(self._series))
            if self._log is not None:
                self._log.close()
                self._log = None

    def record(self, endpoint_id: str, deployed_model_id: str, end_time: float, latency_ms: float,
               error: bool) -> None:
        """One predict that ended at `end_time` (Unix seconds) after `latency_ms`; `error`: a 5xx answer."""
        second = int(end_time // 1)
        key = (endpoint_id, deployed_model_id)
        opened = False
        with self._lock:
            buckets = self._series.get(key)
            if buckets is None:
                self._forget_stale(second - self.retention_s)
                buckets = self._series[key] = OrderedDict()
            bucket = buckets.get(second)
            if bucket is None:
                if buckets:  # the newest second so far is complete
                    self._write_newest([key])
                bucket = buckets[second] = _Second(second)
                opened = self._log is not None
                cutoff = second - self.retention_s
                while True:  # drop what has aged out, from the oldest (seconds arrive in order)
                    oldest = next(iter(buckets))
                    if oldest > cutoff:
                        break
                    del buckets[oldest]
            bucket.add(latency_ms, error)
        if opened:  # and this one is written once it is complete, traffic or not (outside the lock)
            delay = max(0.0, second + 1 + LOG_DELAY_S - self._clock())
            done = threading.Timer(delay, self._write_second, (key, second))
            done.daemon = True
            done.start()

    def _forget_stale(self, cutoff: int) -> None:
        """Drop deployed models whose newest bucket is at or before `cutoff` (under the lock)."""
        for key in [key for key, buckets in self._series.items() if not buckets or next(reversed(buckets)) <= cutoff]:
            del self._series[key]

    def _cutoff(self) -> int:
        return int(self._clock() // 1) - self.retention_s

    def deployed_models(self, endpoint_id: str | None = None) -> list[tuple[str, str]]:
        """(endpoint id, deployed model id) of every series with figures still kept, sorted."""
        with self._lock:
            self._forget_stale(self._cutoff())
            return sorted(key for key in self._series if endpoint_id is None or key[0] == endpoint_id)

    def bucket_count(self) -> int:
        """How many per-second buckets are kept in all (what bounds the memory)."""
        with self._lock:
            return sum(len(buckets) for buckets in self._series.values())

    def figures(self, endpoint_id: str, deployed_model_id: str, start_s: int, end_s: int) -> Figures:
        """The figures of the whole seconds [start_s, end_s)."""
        if end_s > start_s:
            for period in self.periods(endpoint_id, deployed_model_id, start_s, end_s, end_s - start_s):
                return period  # one period spans the window
        return Figures(start_s, end_s)

    def periods(self, endpoint_id: str, deployed_model_id: str, start_s: int, end_s: int,
                period_s: int) -> list[Figures]:
        """The figures of [start_s, end_s) cut into periods of `period_s` seconds that end at
        end_s, end_s - period_s, ... (the oldest is cut at start_s), newest first; periods that
        saw no predict are left out."""
        if period_s < 1:
            raise ValueError("period_s must be at least 1 second")
        with self._lock:
            buckets = self._series.get((endpoint_id, deployed_model_id))
            if not buckets:
                return []
            self._write_newest([(endpoint_id, deployed_model_id)])  # what is read is what a crash keeps
            start_s = max(start_s, self._cutoff() + 1)
            chosen: Iterable[_Second]
            if end_s - start_s <= len(buckets):
                chosen = [bucket for bucket in map(buckets.get, range(start_s, end_s)) if bucket is not None]
            else:
                chosen = [bucket for second, bucket in buckets.items() if start_s <= second < end_s]
            periods: dict[int, Figures] = {}
            for bucket in chosen:
                index = (end_s - 1 - bucket.second) // period_s
                period = periods.get(index)
                if period is None:
                    period_end = end_s - index * period_s
                    period = periods[index] = Figures(max(start_s, period_end - period_s), period_end)
                period.add(bucket)
        return [periods[index] for index in sorted(periods)]
