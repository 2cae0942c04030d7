"""The serving figures on disk: what the endpoint counted survives a crash of the local cloud.

In the cloud, an endpoint's serving figures live in Cloud Monitoring, outside Vertex AI, so a
canary whose bake outlives anything is still judged on every request it served. Locally they
are counted in the endpoint's process (``local_cloud.vertex.serving_figures``); this log keeps
them in ``<state>/serving-figures.jsonl`` so that the next cloud on the directory reads them
back, and a bake that spanned a kill -9 is judged on the requests before it as well.

One JSON line per (endpoint, deployed model, second): written just after that second ends, when
the next second's bucket of that model opens, when the figures are read (a bake's end reads
them), and when the endpoint closes. A bucket may be written again with more predicts in it
(one that ended late); the last line of a second wins. So a crash loses at most the predicts of
the last second or so before it. Lines are appended and flushed (the page cache keeps them through a kill -9; only a power
cut could lose the last few); at start the log is read, what has aged out of the retention is
dropped and the rest is written anew, so the file stays within the retention's size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def encode(endpoint_id: str, deployed_model_id: str, bucket) -> str:
    """One bucket (a ``serving_figures._Second``) as one JSON line, newline included."""
    entry = {"endpoint": endpoint_id, "deployed_model": deployed_model_id, "second": bucket.second,
             "count": bucket.count, "errors": bucket.errors, "low": bucket.low, "high": bucket.high}
    if bucket.samples is not None:
        entry["samples"] = list(bucket.samples)  # float32 values: exact as JSON doubles
    else:
        entry["bins"] = {str(index): count for index, count in enumerate(bucket.bins) if count}
    return json.dumps(entry, separators=(",", ":")) + "\n"


def decode(line: str) -> tuple[str, str, dict] | None:
    """(endpoint id, deployed model id, the bucket's fields) of a line; None for a torn or foreign line."""
    try:
        entry = json.loads(line)
        fields = {name: entry[name] for name in ("second", "count", "errors", "low", "high")}
        if not (isinstance(fields["second"], int) and isinstance(fields["count"], int) and fields["count"] > 0):
            return None
        if "samples" in entry:
            fields["samples"] = [float(value) for value in entry["samples"]]
        else:
            fields["bins"] = {int(index): int(count) for index, count in entry["bins"].items()}
        return str(entry["endpoint"]), str(entry["deployed_model"]), fields
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class ServingFiguresLog:
    """Append-only lines of buckets; ``load`` gives back the newest line of each kept second."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle = None

    def load(self, cutoff_second: int) -> list[tuple[str, str, dict]]:
        """Every bucket newer than ``cutoff_second``, the last line of each second; then the log is
        rewritten with those alone and opened for appending."""
        kept: dict[tuple[str, str, int], tuple[str, dict]] = {}
        torn = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    decoded = decode(line)
                    if decoded is None:
                        torn += 1
                        continue
                    endpoint_id, model_id, fields = decoded
                    if fields["second"] > cutoff_second:
                        kept[endpoint_id, model_id, fields["second"]] = (line if line.endswith("\n") else line + "\n",
                                                                          fields)
        if torn:
            log.warning("%s: skipped %d unreadable line(s) (a write cut short by a crash)", self.path, torn)
        ordered = sorted(kept.items(), key=lambda item: item[0][2])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_name(self.path.name + ".tmp")
        with fresh.open("w", encoding="utf-8") as out:
            out.writelines(line for _, (line, _) in ordered)
        os.replace(fresh, self.path)
        self._handle = self.path.open("a", encoding="utf-8")
        return [(endpoint_id, model_id, fields) for (endpoint_id, model_id, _), (_, fields) in ordered]

    def append(self, lines: list[str]) -> None:
        """Write ``lines`` (from :func:`encode`) and flush them to the operating system."""
        if self._handle is None or not lines:
            return
        self._handle.writelines(lines)
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
