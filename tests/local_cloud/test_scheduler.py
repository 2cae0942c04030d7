"""Cloud Scheduler, locally: cron entries that publish to a topic when due."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from local_cloud.scheduler import ScheduleEntry, Scheduler
from tests.conftest import wait_until

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


def test_the_scheduler_publishes_at_each_due_minute_and_not_before():
    clock = [NOW + timedelta(seconds=58.5)]
    published: list = []
    entry = ScheduleEntry("retrain", "* * * * *", "start", b'{"limit": 5}', {"origin": "cron"})
    scheduler = Scheduler([entry], lambda topic, data, attrs: published.append((topic, data, attrs)),
                          now=lambda: clock[0] + timedelta(seconds=time.monotonic() - base))
    base = time.monotonic()
    scheduler.start()
    try:
        wait_until(lambda: len(published) == 1, 5, "the first due minute")
        assert published[0] == ("start", b'{"limit": 5}', {"origin": "cron"})
        assert scheduler.fired[0] == ("retrain", NOW + timedelta(minutes=1))
        time.sleep(0.5)
        assert len(published) == 1  # the next one is a minute away
    finally:
        scheduler.stop()


def test_a_bad_cron_expression_is_refused():
    with pytest.raises(ValueError, match="cron"):
        ScheduleEntry("bad", "every minute", "t", b"")
