"""The endpoint's serving figures: per-second buckets, windows and periods, percentiles, and a
memory that stays bounded whatever the load or the time."""

from __future__ import annotations

import math
import threading
import tracemalloc

import pytest

from local_cloud.vertex.serving_figures import (
    BIN_COUNT,
    EXACT_SAMPLES,
    SMALLEST_BIN_MS,
    ServingFigures,
    bin_bounds,
    bin_index,
)

T0 = 1_800_000_000  # a whole second, in Unix time


def recorder(**options) -> ServingFigures:
    options.setdefault("clock", lambda: T0 + 60.0)
    return ServingFigures(**options)


def test_predicts_fall_in_the_second_they_end_and_windows_hold_whole_seconds():
    figures = recorder()
    for offset, latency, error in [(0.1, 1.0, False), (0.5, 2.0, True), (0.999, 4.0, False), (1.0, 8.0, False)]:
        figures.record("e1", "m1", T0 + offset, latency, error)
    figures.record("e1", "m2", T0 + 0.2, 3.0, False)
    figures.record("e2", "m1", T0 + 0.3, 3.0, True)

    whole = figures.figures("e1", "m1", T0, T0 + 2)
    assert (whole.requests, whole.errors) == (4, 1)
    first = figures.figures("e1", "m1", T0, T0 + 1)
    assert (first.requests, first.errors, first.latency_percentile(100)) == (3, 1, 4.0)
    second = figures.figures("e1", "m1", T0 + 1, T0 + 2)
    assert (second.requests, second.errors, second.latency_percentile(50)) == (1, 0, 8.0)
    assert figures.figures("e1", "m1", T0 - 5, T0).requests == 0
    assert figures.figures("e1", "m1", T0 - 5, T0).latency_percentile(99) is None
    assert figures.figures("e1", "nobody", T0, T0 + 2).requests == 0
    assert figures.deployed_models() == [("e1", "m1"), ("e1", "m2"), ("e2", "m1")]
    assert figures.deployed_models("e1") == [("e1", "m1"), ("e1", "m2")]


def test_periods_end_at_the_window_end_newest_first_and_empty_ones_are_left_out():
    figures = recorder()
    for second in range(10):
        figures.record("e", "m", T0 + second + 0.5, 1.0, second % 2 == 0)
    periods = figures.periods("e", "m", T0, T0 + 10, 4)
    assert [(p.start_s - T0, p.end_s - T0, p.requests, p.errors) for p in periods] == [
        (6, 10, 4, 2), (2, 6, 4, 2), (0, 2, 2, 1)]  # the oldest is cut at the window's start

    sparse = recorder()
    sparse.record("e", "m", T0 + 0.5, 1.0, False)
    sparse.record("e", "m", T0 + 9.5, 1.0, False)
    assert [(p.start_s - T0, p.end_s - T0, p.requests) for p in sparse.periods("e", "m", T0, T0 + 10, 3)] == [
        (7, 10, 1), (0, 1, 1)]
    with pytest.raises(ValueError):
        sparse.periods("e", "m", T0, T0 + 10, 0)


def test_the_percentile_of_a_quiet_window_is_exact_nearest_rank():
    figures = recorder()
    for latency in range(100, 0, -1):  # 100 ms .. 1 ms over two seconds, in no particular order
        figures.record("e", "m", T0 + (latency % 2) + 0.5, float(latency), False)
    window = figures.figures("e", "m", T0, T0 + 2)
    assert window.requests == 100
    assert window.latency_percentile(99) == 99.0  # the 99th smallest of 1..100
    assert window.latency_percentile(50) == 50.0
    assert window.latency_percentile(100) == 100.0
    assert window.latency_percentile(1) == 1.0

    one = recorder()
    one.record("e", "m", T0, 7.25, False)
    assert one.figures("e", "m", T0, T0 + 1).latency_percentile(99) == 7.25


def test_the_histogram_bins_are_exponential_and_cover_every_latency():
    assert bin_index(0.0) == 0 and bin_index(SMALLEST_BIN_MS / 2) == 0
    assert bin_index(SMALLEST_BIN_MS) == 1
    assert bin_index(1e9) == BIN_COUNT - 1
    assert bin_bounds(0) == (0.0, SMALLEST_BIN_MS)
    assert bin_bounds(BIN_COUNT - 1)[1] == math.inf
    for latency in (0.06, 0.5, 1.0, 2.0, 9.99, 123.0, 45_000.0):
        lower, upper = bin_bounds(bin_index(latency))
        assert lower <= latency < upper
        assert upper / lower == pytest.approx(2 ** 0.25)  # four bins per doubling: about 19 % each


def test_a_busy_second_keeps_a_histogram_and_its_percentile_is_interpolated_in_the_bin():
    figures = recorder()
    for _ in range(198):
        figures.record("e", "m", T0 + 0.5, 2.0, False)
    figures.record("e", "m", T0 + 0.6, 500.0, True)
    figures.record("e", "m", T0 + 0.7, 500.0, True)
    window = figures.figures("e", "m", T0, T0 + 1)
    assert (window.requests, window.errors) == (200, 2)
    # rank ceil(0.99 * 200) = 198: the last 2 ms sample, so the top of 2 ms's bin
    lower, upper = bin_bounds(bin_index(2.0))
    assert (lower, upper) == (pytest.approx(SMALLEST_BIN_MS * 2 ** (21 / 4)), pytest.approx(SMALLEST_BIN_MS * 2 ** 5.5))
    assert window.latency_percentile(99) == pytest.approx(SMALLEST_BIN_MS * 2 ** 5.5)  # 2.26 ms
    slow_lower, _ = bin_bounds(bin_index(500.0))
    # rank 199, the first of the two in 500's bin, whose top is taken as the largest latency seen
    assert window.latency_percentile(99.5) == pytest.approx(slow_lower + (500.0 - slow_lower) / 2)
    assert window.latency_percentile(100) == 500.0
    # halfway through 2 ms's bin, by linear interpolation of rank 99 of its 198
    assert window.latency_percentile(49.5) == pytest.approx(lower + (upper - lower) * 99 / 198)

    steady = recorder()
    for _ in range(EXACT_SAMPLES * 3):
        steady.record("e", "m", T0 + 0.5, 3.0, False)
    assert steady.figures("e", "m", T0, T0 + 1).latency_percentile(99) == 3.0  # kept within [smallest, largest]


def test_a_window_mixing_exact_and_binned_seconds_uses_the_histogram():
    figures = recorder()
    for _ in range(EXACT_SAMPLES + 4):  # second 0: binned
        figures.record("e", "m", T0 + 0.5, 1.0, False)
    for _ in range(4):  # second 1: exact
        figures.record("e", "m", T0 + 1.5, 80.0, False)
    window = figures.figures("e", "m", T0, T0 + 2)
    assert window.requests == EXACT_SAMPLES + 8
    assert window.latency_percentile(100) == 80.0
    lower, upper = bin_bounds(bin_index(80.0))
    assert lower <= window.latency_percentile(99) <= upper  # rank 103 of 104 falls among the 80 ms ones
    lower, upper = bin_bounds(bin_index(1.0))
    assert lower <= window.latency_percentile(50) <= upper


def test_memory_is_bounded_by_the_retention_and_not_by_the_load():
    now = [T0 + 0.0]
    figures = ServingFigures(retention_s=10, clock=lambda: now[0])
    for second in range(100):
        now[0] = T0 + second + 0.5
        figures.record("e", "m", now[0], 1.0, False)
    assert figures.bucket_count() == 10
    assert figures.figures("e", "m", T0, T0 + 100).requests == 10  # the seconds older than 10 s are gone
    assert figures.figures("e", "m", T0, T0 + 50).requests == 0

    # a deployed model that stopped serving is forgotten once its last second has aged out
    figures.record("e", "old", now[0], 1.0, False)
    now[0] += 30
    figures.record("e", "new", now[0], 1.0, False)
    assert figures.deployed_models() == [("e", "new")]

    # ten thousand predicts in one second take no more room than a hundred
    busy = ServingFigures()
    for _ in range(200):
        busy.record("e", "m", T0 + 0.5, 2.0, False)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(10_000):
            busy.record("e", "m", T0 + 0.5, 1.0 + index % 50, index % 7 == 0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2048, grown
    assert busy.bucket_count() == 1
    assert busy.figures("e", "m", T0, T0 + 1).requests == 10_200


def test_recording_from_many_threads_loses_nothing():
    figures = recorder()

    def work(thread: int) -> None:
        for index in range(2000):
            figures.record("e", f"m{thread % 2}", T0 + (index % 3) + 0.5, 1.0 + index % 10, index % 4 == 0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals = [figures.figures("e", m, T0, T0 + 3) for m in ("m0", "m1")]
    assert [t.requests for t in totals] == [8000, 8000]
    assert [t.errors for t in totals] == [2000, 2000]


# --- on disk: the figures outlive the process -----------------------------------------------------


def _window(figures: ServingFigures, model: str = "m1"):
    window = figures.figures("e1", model, T0, T0 + 60)
    return window.requests, window.errors, window.latency_percentile(50), window.latency_percentile(99)


def test_a_new_recorder_on_the_log_reads_back_what_the_last_one_counted_without_being_closed(tmp_path):
    log = tmp_path / "serving-figures.jsonl"
    first = recorder(log_path=log)
    for second in range(5):
        for index in range(3 if second < 4 else 200):  # the fifth second overflows into a histogram
            first.record("e1", "m1", T0 + second + index / 1000, 1.0 + index + second, index % 50 == 0)
    first.record("e1", "m2", T0 + 2.5, 7.0, True)
    expected = _window(first), _window(first, "m2")  # reading writes the newest buckets too
    first.record("e1", "m1", T0 + 4.9, 1000.0, False)  # after the read, before the crash: lost

    again = recorder(log_path=log)  # `first` never closed: a kill -9
    assert (_window(again), _window(again, "m2")) == expected
    assert again.bucket_count() == 6
    assert again.deployed_models() == [("e1", "m1"), ("e1", "m2")]


def test_close_writes_the_newest_seconds_and_the_log_drops_what_aged_out(tmp_path):
    log = tmp_path / "serving-figures.jsonl"
    now = [T0 + 10.0]
    first = ServingFigures(retention_s=30, clock=lambda: now[0], log_path=log)
    first.record("e1", "m1", T0 + 1, 2.0, False)
    first.record("e1", "m1", T0 + 9, 3.0, False)
    first.close()
    assert len(log.read_text().splitlines()) == 2
    first.record("e1", "m1", T0 + 9.5, 4.0, False)  # still counted in memory, no longer logged

    now[0] = T0 + 35.0  # the first second has aged out of the 30 s retention
    again = ServingFigures(retention_s=30, clock=lambda: now[0], log_path=log)
    assert len(log.read_text().splitlines()) == 1, "rewritten with what is kept"
    for _ in range(3):
        assert again.figures("e1", "m1", T0, T0 + 60).requests == 1
    assert len(log.read_text().splitlines()) == 1, "a bucket read again unchanged is not written again"


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_rest_is_kept(tmp_path, caplog):
    log = tmp_path / "serving-figures.jsonl"
    first = recorder(log_path=log)
    first.record("e1", "m1", T0 + 1, 2.0, False)
    first.record("e1", "m1", T0 + 2, 3.0, True)
    first.close()
    with log.open("a") as out:
        out.write('{"endpoint":"e1","deployed_model":"m1","second":18')  # torn
    again = recorder(log_path=log)
    assert _window(again)[:2] == (2, 1)
    assert "skipped 1 unreadable line" in caplog.text
    assert all(line.endswith("}") for line in log.read_text().splitlines())


def test_a_second_is_logged_just_after_it_ends_even_when_no_predict_follows(tmp_path):
    import time

    log = tmp_path / "serving-figures.jsonl"
    figures = ServingFigures(log_path=log)  # the real clock: the timer is real too
    now = time.time()
    figures.record("e1", "m1", now, 2.0, False)
    figures.record("e1", "m1", now, 3.0, True)
    deadline = time.monotonic() + 5
    while not log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "copy.jsonl").write_text(log.read_text())  # what a kill -9 now would leave
    again = ServingFigures(log_path=tmp_path / "copy.jsonl")
    window = again.figures("e1", "m1", int(now) - 1, int(now) + 2)
    assert (window.requests, window.errors) == (2, 1)
