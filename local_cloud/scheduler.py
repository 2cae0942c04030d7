"""Cloud Scheduler, locally: cron entries that publish a body to a Pub/Sub topic.

A Cloud Scheduler job with a Pub/Sub target publishes its message body (and attributes) to the topic
at each time its cron schedule names, in its time zone. Here a thread sleeps until the next due
time of any entry and publishes; nothing polls the chain.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from croniter import croniter


@dataclass(frozen=True)
class ScheduleEntry:
    name: str
    cron: str
    topic: str
    body: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    time_zone: str = "Etc/UTC"

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"schedule {self.name!r}: {self.cron!r} is not a cron expression")
        ZoneInfo(self.time_zone)  # raises for an unknown zone

    def next_after(self, moment: datetime) -> datetime:
        local = moment.astimezone(ZoneInfo(self.time_zone))
        return croniter(self.cron, local).get_next(datetime).astimezone(timezone.utc)


class Scheduler:
    def __init__(self, entries: list[ScheduleEntry], publish: Callable[[str, bytes, dict[str, str]], object],
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.entries = list(entries)
        self.publish = publish
        self.now = now
        self.fired: list[tuple[str, datetime]] = []
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.entries:
            return
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        start = self.now()
        due = {entry.name: entry.next_after(start) for entry in self.entries}
        while not self._stop:
            name = min(due, key=due.get)
            wait = (due[name] - self.now()).total_seconds()
            if wait > 0:
                self._wake.wait(timeout=min(wait, 60.0))
                continue
            entry = next(e for e in self.entries if e.name == name)
            attributes = dict(entry.attributes)
            self.publish(entry.topic, entry.body, attributes)
            self.fired.append((name, due[name]))
            due[name] = entry.next_after(due[name])
