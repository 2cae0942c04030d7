"""The preprocessing pipeline graph: read once, prepare, optionally limit, split, write, manifest.

::

    Read (Parquet | CSV | BigQuery) -> Rebatch -> Prepare -> [Limit] -> WriteSplits
                                            \\ counts ----------------------\\-> WriteManifest

The manifest step's inputs are the finalized shard names that ``WriteToText`` returns, so
it runs only after every shard of both splits has been renamed to its final name.
"""

from __future__ import annotations

import apache_beam as beam

from beam_pipeline import records
from beam_pipeline.sources import ReadNatality, SourceSpec
from beam_pipeline.transforms import (
    BATCH_ROWS,
    KeepSmallest,
    PrepareRecords,
    Rebatch,
    WriteManifest,
    WriteSplits,
)


def build_pipeline(
    pipeline: beam.Pipeline,
    source: SourceSpec,
    out_dir: str,
    *,
    limit: int | None,
    num_shards: int,
    manifest_fields: dict,
    batch_rows: int = BATCH_ROWS,
) -> beam.PCollection:
    """Add the preprocessing transforms to ``pipeline``; returns the manifest-path PCollection."""
    tables = (
        pipeline
        | "Read" >> ReadNatality(source)
        | "Rebatch" >> Rebatch(batch_rows)
    )
    prepared = tables | "Prepare" >> PrepareRecords()
    kept = prepared["records"]
    if limit is not None:
        kept = kept | "Limit" >> KeepSmallest(limit, batch_rows)
    written = kept | "Split" >> WriteSplits(out_dir, num_shards)
    counts = (prepared["counts"], written["counts"]) | "AllCounts" >> beam.Flatten()
    return {
        records.TRAIN: written[records.TRAIN],
        records.EVAL: written[records.EVAL],
        "counts": counts,
    } | "Manifest" >> WriteManifest(out_dir, manifest_fields)
