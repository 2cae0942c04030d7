"""The manifest contract: one definition for the functions, the same as the copies the pipeline
and the trainer ship, and a check that accepts what the pipeline writes and refuses the rest."""
from __future__ import annotations

import pytest

from beam_pipeline import manifest as pipeline_manifest
from beam_pipeline import records
from events.manifest import MANIFEST_FORMAT, MANIFEST_NAME, SPLITS, check_manifest, summarize
from trainer import schema as trainer_schema
from trainer.inputs import parse_manifest

RUN = "run-20261127-050000-abcdef0123"


def test_the_pipeline_and_the_trainer_ship_the_same_name_format_and_splits():
    assert (pipeline_manifest.MANIFEST_NAME, pipeline_manifest.MANIFEST_FORMAT) == (MANIFEST_NAME, MANIFEST_FORMAT)
    assert (trainer_schema.MANIFEST_NAME, trainer_schema.MANIFEST_FORMAT) == (MANIFEST_NAME, MANIFEST_FORMAT)
    assert tuple(records.SPLITS) == tuple(trainer_schema.SPLITS) == SPLITS


def built_by_the_pipeline(run_id=RUN):
    return pipeline_manifest.build_manifest(
        out_dir="gs://b/runs/x/preprocess",
        shard_paths={"train": ["gs://b/runs/x/preprocess/train.csv-00000-of-00001"],
                     "eval": ["gs://b/runs/x/preprocess/eval.csv-00000-of-00001"]},
        counts={pipeline_manifest.ROWS_READ: 10, pipeline_manifest.ROWS_VALID: 9,
                pipeline_manifest.records_count_name("train"): 7, pipeline_manifest.records_count_name("eval"): 2},
        created="2026-11-27T05:00:00Z", run_id=run_id, source={"kind": "file", "path": "x"}, limit=None,
        options={})


def test_what_the_pipeline_writes_passes_the_check_and_the_trainer_reads_it():
    manifest = built_by_the_pipeline()
    assert check_manifest(manifest, RUN) is None
    assert summarize(manifest).rows == {"train": 14, "eval": 4}
    assert summarize(manifest).input["rows_dropped"] == 1
    spec = parse_manifest(manifest, "/data")
    assert spec.train_files == ("/data/train.csv-00000-of-00001",)


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(format="mlrelay.preprocess/v0"), "format"),
    (lambda m: m.update(run_id="run-20261127-050000-ffffffffff"), "names run"),
    (lambda m: m.pop("splits"), "no splits"),
    (lambda m: m["splits"]["eval"].update(shards=[]), "no eval shards"),
    (lambda m: m["splits"]["train"].update(rows=0), "no train rows"),
    (lambda m: m["splits"]["train"].update(rows="14"), "no train rows"),
])
def test_a_manifest_that_cannot_start_training_is_refused_with_the_reason(change, words):
    manifest = built_by_the_pipeline()
    change(manifest)
    assert words in (check_manifest(manifest, RUN) or "")


def test_anything_but_an_object_is_refused():
    for value in ([], "text", None, 3):
        assert check_manifest(value, RUN) == "manifest is not a JSON object"
