"""Cloud Logging's router, locally: every LogEntry is kept, and sinks forward the ones they match.

A sink's filter is the very string deploy.sh installs in the cloud (events.sink_filters), applied
with the same query-language rules (local_cloud.logging.query); a matching entry is published to the sink's Pub/Sub topic as
the LogEntry JSON, which is what a Cloud Logging sink to Pub/Sub sends.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from local_cloud.logging.query import matches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sink:
    name: str
    filter: str
    topic: str


class LogRouter:
    def __init__(self, log_file: Path, sinks: list[Sink],
                 publish: Callable[[str, bytes, dict[str, str]], object]):
        self.log_file = Path(log_file)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)
        self.publish = publish
        self._lock = threading.Lock()

    def write(self, entry: dict) -> list[str]:
        """Store an entry and route it; returns the names of the sinks that forwarded it."""
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            with open(self.log_file, "a") as handle:
                handle.write(line + "\n")
        routed = []
        for sink in self.sinks:
            try:
                if not matches(sink.filter, entry):
                    continue
            except ValueError:
                log.exception("sink %s has a filter that does not parse", sink.name)
                continue
            # A sink to Pub/Sub publishes the LogEntry as JSON, with its timestamp as an attribute.
            try:
                self.publish(sink.topic, line.encode(),
                             {"logging.googleapis.com/timestamp": entry.get("timestamp", "")})
            except Exception:  # a sink whose topic is gone loses the entry, as in the cloud
                log.warning("sink %s could not publish entry %s", sink.name, entry.get("insertId"))
                continue
            routed.append(sink.name)
        return routed

    def entries(self) -> list[dict]:
        if not self.log_file.exists():
            return []
        with self._lock:
            return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]
