"""The preprocessing manifest: the contract between the Beam pipeline and everything after it.

Preprocessing writes `_MANIFEST.json` beside its CSV shards only after every shard exists, so
the manifest's arrival is the one event that says "the data is complete". This module is its one
definition for the functions: the name, the format tag and the check a manifest must pass before
training is launched on it. `beam_pipeline/` (which writes it) and `trainer/` (which reads it)
ship on their own and keep their own copies of the name and format on purpose; a test holds the
three together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = "mlrelay.preprocess/v1"
SPLITS = ("train", "eval")
# The pipeline's input counts that the data check compares (functions.release.data_check).
INPUT_COUNTS = ("rows_read", "rows_dropped", "rows_valid")


@dataclass(frozen=True)
class ManifestSummary:
    """What the functions record of a manifest: rows per split and the pipeline's input counts."""

    rows: dict[str, int]
    input: dict[str, Any]


def check_manifest(manifest: object, run_id: str) -> str | None:
    """The reason a manifest cannot start training, or None when it can."""
    if not isinstance(manifest, dict):
        return "manifest is not a JSON object"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"manifest format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}"
    if manifest.get("run_id") not in (None, run_id):
        return f"manifest names run {manifest.get('run_id')!r}, not {run_id!r}"
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        return "manifest has no splits"
    for split in SPLITS:
        entry = splits.get(split)
        if not isinstance(entry, dict) or not entry.get("shards"):
            return f"manifest lists no {split} shards"
        shards = entry["shards"]
        if not isinstance(shards, list) or not all(isinstance(shard, str) and shard for shard in shards):
            return f"manifest's {split} shards must be a list of file names, not {_short(shards)}"
        rows = entry.get("rows")
        if not _is_count(rows) or rows <= 0:  # a bool is an int to Python, not a count
            return f"manifest has no {split} rows (rows must be a positive integer, not {_short(rows)})"
    inputs = manifest.get("input")
    if inputs is not None and not isinstance(inputs, dict):
        return f"manifest's input must be an object of counts, not {_short(inputs)}"
    for key in INPUT_COUNTS:
        value = (inputs or {}).get(key)
        if value is not None and not _is_count(value):
            return f"manifest's input.{key} must be a count (an integer of at least 0), not {_short(value)}"
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object) -> str:
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."


def summarize(manifest: Mapping[str, Any]) -> ManifestSummary:
    """The counts of a manifest that passed `check_manifest`."""
    inputs = manifest.get("input")
    return ManifestSummary(rows={split: manifest["splits"][split]["rows"] for split in SPLITS},
                           input=dict(inputs) if isinstance(inputs, dict) else {})
