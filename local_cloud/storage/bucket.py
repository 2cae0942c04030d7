"""A Cloud Storage bucket as a directory, with object-finalize events from real file-system events.

An object is finalized in Cloud Storage when its upload completes, never before. Locally the same
moment is a file closed after writing (inotify IN_CLOSE_WRITE) or a file renamed into place (how
Beam and our own atomic writes publish a file). Both come from watchdog's inotify observer.

One gap in inotify is covered by hand: a file written and closed inside a directory that was created
an instant earlier can be complete before the observer has put a watch on the new directory, and
then only a simulated "created" event is seen. For such files the watcher checks that no process
holds the file open for writing (/proc/*/fd) and finalizes it then; a file still open gets its close
event later.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import google_crc32c
from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from events.storage import storage_object_resource
from functions.local_adapters import is_staging_name

log = logging.getLogger(__name__)
# watchdog re-adds a watch for a directory it saw created twice (its own event and its recursive scan
# of the parent) and warns that it replaces the callback: harmless, and noisy in every run.
warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch", category=RuntimeWarning)


@dataclass(frozen=True)
class FinalizedObject:
    """An object that has just become complete, with its GCS JSON API resource."""

    bucket: str
    name: str
    resource: dict
    event_time: str


def object_name(bucket_dir: Path, path: Path) -> str | None:
    """The object name of a file in the bucket directory, or None if it is not an object."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(bucket_dir))
    except ValueError:
        return None
    if not rel.parts or is_staging_name(rel.name):
        return None
    return rel.as_posix()


def describe_object(bucket: str, bucket_dir: Path, name: str) -> dict | None:
    """The GCS object resource for a file, hashing it as GCS does (md5 and crc32c, base64)."""
    path = bucket_dir / name
    try:
        stat = path.stat()
        md5 = hashlib.md5()
        crc = google_crc32c.Checksum()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                md5.update(chunk)
                crc.update(chunk)
    except (FileNotFoundError, IsADirectoryError):
        return None
    # GCS generations are microsecond timestamps; the file's mtime gives the same kind of number.
    generation = stat.st_mtime_ns // 1000
    created = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=timezone.utc)
    return storage_object_resource(
        bucket=bucket,
        name=name,
        generation=generation,
        size=stat.st_size,
        md5_b64=base64.b64encode(md5.digest()).decode(),
        crc32c_b64=base64.b64encode(crc.digest()).decode(),
        created=created,
        content_type=guess_content_type(name),
    )


def guess_content_type(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    if ".csv" in name:
        return "text/csv"
    return "application/octet-stream"


def is_open_for_writing(path: Path) -> bool:
    """True when some process on this machine holds `path` open for writing (Linux /proc)."""
    target = os.path.realpath(path)
    proc = Path("/proc")
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                if os.readlink(fd) != target:
                    continue
                flags_line = (pid_dir / "fdinfo" / fd.name).read_text().splitlines()[1]
            except (OSError, IndexError):
                continue
            flags = int(flags_line.split()[1], 8)
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


class BucketWatcher(FileSystemEventHandler):
    """Turns file-system events under one bucket directory into object-finalize callbacks.

    With a `watermark` file, objects that became complete while no watcher ran are finalized when
    the next one starts, as Cloud Storage's notifications wait in Pub/Sub while their subscribers
    are down. The watermark is the newest modification time of an object already handed on (the
    callback publishes durably, so once it returns the notification is safe); at start every object
    at least that new is handed on again, which may repeat a notification (delivery is at least once
    anyway) but never skips one. A first start has nothing to catch up: it starts the mark now.
    """

    def __init__(self, bucket: str, bucket_dir: Path, on_finalize: Callable[[FinalizedObject], None],
                 *, watermark: Path | None = None):
        self.bucket = bucket
        self.bucket_dir = Path(bucket_dir)
        self.on_finalize = on_finalize
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._observer: InotifyObserver | None = None
        self._watermark_path = watermark
        self._watermark_ns = 0

    def start(self) -> None:
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        self._observer = InotifyObserver()
        self._observer.schedule(self, str(self.bucket_dir), recursive=True)
        self._observer.start()
        if self._watermark_path is not None:
            self._catch_up()  # after the observer is on: an object written meanwhile is seen either way

    def _catch_up(self) -> None:
        path = self._watermark_path
        assert path is not None
        try:
            since = int(path.read_text())
        except (FileNotFoundError, ValueError):
            self._watermark_ns = time.time_ns()
            self._save_watermark()
            return
        self._watermark_ns = since
        missed = []
        for directory, _, files in os.walk(self.bucket_dir):
            for file_name in files:
                file_path = Path(directory) / file_name
                try:
                    modified = file_path.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                if modified >= since and object_name(self.bucket_dir, file_path) is not None:
                    missed.append((modified, file_path))
        caught_up = 0
        for _, file_path in sorted(missed):  # oldest first, as they were written
            if not is_open_for_writing(file_path):  # one still being written gets its close event
                caught_up += 1
                self._finalize(file_path)
        if caught_up:
            log.info("notified %d object(s) written while no local cloud ran", caught_up)

    def _save_watermark(self) -> None:
        if self._watermark_path is None:
            return
        tmp = self._watermark_path.with_name(self._watermark_path.name + ".tmp")
        tmp.write_text(str(self._watermark_ns))
        os.replace(tmp, self._watermark_path)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # watchdog callbacks -------------------------------------------------------------------------

    def on_closed(self, event: FileClosedEvent) -> None:
        self._finalize(Path(os.fsdecode(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            self._finalize(Path(os.fsdecode(event.dest_path)))

    def on_created(self, event: FileSystemEvent) -> None:
        # A file opened for writing is finalized by its close event. A file that appears complete
        # gets no close event: a hard link (create-only writes) or a simulated creation (the file
        # was complete before its new directory was watched). Finalize it if nobody writes it.
        if isinstance(event, FileCreatedEvent):
            path = Path(os.fsdecode(event.src_path))
            if path.exists() and not is_open_for_writing(path):
                self._finalize(path)
        elif isinstance(event, DirCreatedEvent):
            return

    # --------------------------------------------------------------------------------------------

    def _finalize(self, path: Path) -> None:
        name = object_name(self.bucket_dir, path)
        if name is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            return  # renamed or deleted again before we looked: a later event covers it
        if not path.is_file():
            return
        identity = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._seen.get(name) == identity:
                return  # the same generation, seen through two events
            self._seen[name] = identity
        resource = describe_object(self.bucket, self.bucket_dir, name)
        if resource is None:
            return
        event_time = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        try:
            self.on_finalize(FinalizedObject(self.bucket, name, resource, event_time))
        except Exception:  # one bad subscriber must not stop the watcher thread
            log.exception("finalize callback failed for gs://%s/%s", self.bucket, name)
            return
        with self._lock:
            if stat.st_mtime_ns > self._watermark_ns:
                self._watermark_ns = stat.st_mtime_ns
                self._save_watermark()
