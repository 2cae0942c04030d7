"""Which shards a training run reads: from preprocessing's ``_MANIFEST.json``, or a directory.

Preprocessing writes the manifest after every shard exists, so the manifest is the list of
complete inputs. Without a manifest (a hand-made directory) the shards are found by name and
must form complete ``-SSSSS-of-NNNNN`` sets. Every problem is a :class:`TrainerInputError`
whose message says what is wrong, raised before any training starts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from trainer import schema
from trainer.paths import to_local_path


class TrainerInputError(ValueError):
    """The trainer's input (arguments, manifest, shards) is missing, incomplete or malformed."""


@dataclass(frozen=True)
class DataSpec:
    """The files of each split and what the manifest says about where the data came from."""

    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]
    manifest_path: str | None = None
    run_id: str | None = None
    sample: Mapping[str, Any] | None = None


_SHARD_NAME = re.compile(r"^(?P<split>train|eval)\.csv-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def parse_manifest(doc: Any, base_dir: str) -> DataSpec:
    """Validate a parsed manifest and resolve its shard names against ``base_dir``."""
    where = "manifest"
    if not isinstance(doc, dict):
        raise TrainerInputError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != schema.MANIFEST_FORMAT:
        raise TrainerInputError(
            f"{where}: format is {doc.get('format')!r}, expected {schema.MANIFEST_FORMAT!r}"
        )
    splits = doc.get("splits")
    if not isinstance(splits, dict):
        raise TrainerInputError(f"{where}: 'splits' must be an object with 'train' and 'eval'")
    files: dict[str, tuple[str, ...]] = {}
    for split in schema.SPLITS:
        entry = splits.get(split)
        if not isinstance(entry, dict):
            raise TrainerInputError(f"{where}: splits.{split} is missing")
        shards = entry.get("shards")
        if not isinstance(shards, list) or not shards:
            raise TrainerInputError(f"{where}: splits.{split}.shards must be a non-empty list")
        if not all(isinstance(name, str) and name for name in shards):
            raise TrainerInputError(f"{where}: splits.{split}.shards must hold file names")
        files[split] = tuple(_resolve_shard(base_dir, name) for name in shards)
    source = doc.get("source")
    sample = source.get("sample") if isinstance(source, dict) else None
    run_id = doc.get("run_id")
    return DataSpec(
        train_files=files["train"],
        eval_files=files["eval"],
        run_id=run_id if isinstance(run_id, str) else None,
        sample=sample if isinstance(sample, dict) else None,
    )


def _resolve_shard(base_dir: str, name: str) -> str:
    if name.startswith(schema.MANIFEST_NAME):
        raise TrainerInputError(f"manifest lists itself as a shard: {name!r}")
    if name.startswith("gs://") or os.path.isabs(name):
        return to_local_path(name)
    return os.path.join(base_dir, name)


def load_manifest(manifest_path: str) -> DataSpec:
    """Read, validate and resolve a manifest file; check that every listed shard exists."""
    local = to_local_path(manifest_path)
    try:
        with open(local, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise TrainerInputError(f"manifest not found: {local}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainerInputError(f"cannot read manifest {local}: {error}") from None
    try:
        spec = parse_manifest(doc, os.path.dirname(local))
    except TrainerInputError as error:
        raise TrainerInputError(f"{local}: {error}") from None
    missing = [path for path in spec.train_files + spec.eval_files if not os.path.isfile(path)]
    if missing:
        raise TrainerInputError(
            f"manifest {local} lists {len(missing)} shard(s) that do not exist, e.g. {missing[0]}"
        )
    return DataSpec(
        train_files=spec.train_files,
        eval_files=spec.eval_files,
        manifest_path=local,
        run_id=spec.run_id,
        sample=spec.sample,
    )


def complete_shard_sets(names: list[str]) -> dict[str, tuple[str, ...]]:
    """Group shard file names by split, checking each split is one complete ``-of-N`` set.

    Returns the names of each split in shard order. Names that are not shards are ignored.
    """
    found: dict[str, dict[int, str]] = {split: {} for split in schema.SPLITS}
    counts: dict[str, set[int]] = {split: set() for split in schema.SPLITS}
    for name in names:
        match = _SHARD_NAME.match(name)
        if match is None:
            continue
        split = match["split"]
        found[split][int(match["index"])] = name
        counts[split].add(int(match["count"]))
    result: dict[str, tuple[str, ...]] = {}
    for split in schema.SPLITS:
        if not found[split]:
            raise TrainerInputError(f"no {split}.csv-SSSSS-of-NNNNN shards found")
        if len(counts[split]) != 1:
            raise TrainerInputError(
                f"{split} shards disagree on their count: {sorted(counts[split])}"
            )
        (count,) = counts[split]
        absent = sorted(set(range(count)) - set(found[split]))
        if absent or max(found[split]) >= count:
            raise TrainerInputError(
                f"{split} shards are incomplete: expected {count}, missing indexes {absent[:5]}"
            )
        result[split] = tuple(found[split][index] for index in range(count))
    return result


def discover_data(data_dir: str) -> DataSpec:
    """Use ``data_dir/_MANIFEST.json`` when it exists, else the complete shard sets found there."""
    local_dir = to_local_path(data_dir)
    if not os.path.isdir(local_dir):
        raise TrainerInputError(f"data directory not found: {local_dir}")
    manifest = os.path.join(local_dir, schema.MANIFEST_NAME)
    if os.path.exists(manifest):
        return load_manifest(manifest)
    shard_sets = complete_shard_sets(sorted(os.listdir(local_dir)))
    return DataSpec(
        train_files=tuple(os.path.join(local_dir, n) for n in shard_sets["train"]),
        eval_files=tuple(os.path.join(local_dir, n) for n in shard_sets["eval"]),
    )
