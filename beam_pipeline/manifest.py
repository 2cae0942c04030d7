"""``_MANIFEST.json``: the list of complete output shards, written last.

Downstream stages start when the manifest appears, so it must only ever describe shards
that exist and counts that add up. :func:`build_manifest` checks the counts and
:func:`write_manifest` checks every listed shard before writing the file atomically.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Mapping

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import records

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = "mlrelay.preprocess/v1"

# The counts the pipeline gathers for the manifest.
ROWS_READ = "rows_read"
ROWS_VALID = "rows_valid"


def records_count_name(split: str) -> str:
    """The name under which the records written to ``split`` are counted."""
    return f"{split}_records"


class ManifestError(RuntimeError):
    """The outputs do not add up to a manifest that may be published."""


def utc_now() -> str:
    """The current time as ISO-8601 UTC, to the second (e.g. ``2024-05-01T12:00:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_path(out_dir: str) -> str:
    return FileSystems.join(out_dir, MANIFEST_NAME)


def relative_shard_names(out_dir: str, paths: list[str]) -> list[str]:
    """The names of shard files relative to ``out_dir``, sorted; each must sit directly in it."""
    prefix = out_dir.rstrip("/") + "/"
    names = []
    for path in paths:
        name = path[len(prefix):] if path.startswith(prefix) else ""
        if not name or "/" in name:
            raise ManifestError(f"shard {path} is not a file directly under {out_dir}")
        names.append(name)
    return sorted(names)


def build_manifest(
    *,
    out_dir: str,
    shard_paths: Mapping[str, list[str]],
    counts: Mapping[str, int],
    created: str,
    run_id: str | None,
    source: Mapping[str, Any],
    limit: int | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest document, after checking that the counts add up.

    ``counts`` holds ``ROWS_READ``, ``ROWS_VALID`` and ``records_count_name(split)``
    (missing = 0).
    No valid row is an input error: there is nothing to train on, so no manifest.
    """
    rows_read = int(counts.get(ROWS_READ, 0))
    rows_valid = int(counts.get(ROWS_VALID, 0))
    if rows_valid == 0:
        where = source.get("path") or source.get("query") or "the source"
        raise records.InputError(
            f"no valid rows in {where}: {rows_read} row(s) read, none passed the filters "
            f"({records.VALID_ROW_SQL}, is_male not NULL)"
        )
    if rows_valid > rows_read:
        raise ManifestError(f"{rows_valid} valid rows out of only {rows_read} read")
    split_records = {
        split: int(counts.get(records_count_name(split), 0)) for split in records.SPLITS
    }
    expected = rows_valid if limit is None else min(rows_valid, limit)
    if sum(split_records.values()) != expected:
        raise ManifestError(
            f"the splits hold {sum(split_records.values())} records, expected {expected}"
        )
    splits = {}
    for split in records.SPLITS:
        names = relative_shard_names(out_dir, list(shard_paths.get(split, [])))
        if not names:
            raise ManifestError(f"no {split} shard was written")
        splits[split] = {
            "shards": names,
            "rows": 2 * split_records[split],
            "records": split_records[split],
        }
    return {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "created": created,
        "source": dict(source),
        "columns": [{"name": name, "type": kind} for name, kind in records.OUTPUT_COLUMNS],
        "splits": splits,
        "input": {
            "rows_read": rows_read,
            "rows_dropped": rows_read - rows_valid,
            "rows_valid": rows_valid,
            "limit": limit,
        },
        "options": dict(options),
    }


def write_manifest(out_dir: str, manifest: Mapping[str, Any]) -> str:
    """Write ``manifest`` as ``out_dir/_MANIFEST.json`` once every listed shard exists.

    Locally the file is written under a temporary name and renamed, so a reader never sees
    it half written; a Cloud Storage object becomes visible only when its upload completes.
    Returns the manifest's path.
    """
    for split, entry in manifest["splits"].items():
        for name in entry["shards"]:
            if not FileSystems.exists(FileSystems.join(out_dir, name)):
                raise ManifestError(f"{split} shard {name} is missing from {out_dir}")
    data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")
    final = manifest_path(out_dir)
    local = FileSystems.get_scheme(final) in (None, "file")
    temporary = FileSystems.join(out_dir, f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp")
    target = temporary if local else final
    with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    if local:
        FileSystems.rename([target], [final])
    return final


def read_manifest(out_dir: str) -> dict[str, Any]:
    """The manifest written to ``out_dir``."""
    with FileSystems.open(
        manifest_path(out_dir), compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        return json.loads(handle.read())


def remove_stale_manifest(out_dir: str) -> bool:
    """Delete a manifest left by an earlier run in ``out_dir``; True if there was one.

    A new run rewrites the shards, so an old manifest would describe files being replaced.
    """
    path = manifest_path(out_dir)
    if FileSystems.exists(path):
        FileSystems.delete([path])
        return True
    return False
