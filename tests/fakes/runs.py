"""Builders of what the stages read: start triggers, manifests, job ends."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from events.log_entries import JobKind, JobTerminal, JobOutcome
from events.manifest import MANIFEST_FORMAT
from functions.release.gate import COMPARISON_FORMAT
from functions.run_store import comparison_name, manifest_name
from functions.triggers import JobEnded, ManifestWritten, StartMessage, TriggerFile

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


def message(data: bytes, message_id: str = "m-1") -> StartMessage:
    return StartMessage(event_id=message_id, event_time=NOW, topic="mlrelay-start", message_id=message_id,
                        data=data)


def trigger_file(object_name: str, generation: int, size: int = 0, event_id: str = "e-1",
                 bucket: str = "b") -> TriggerFile:
    return TriggerFile(event_id, NOW, bucket, object_name, generation, size)


def write_manifest(storage, run_id: str, **override) -> ManifestWritten:
    """A manifest as preprocessing writes it (two splits of one shard each), and its event."""
    manifest = {"format": MANIFEST_FORMAT, "run_id": run_id,
                "splits": {"train": {"shards": ["train.csv-00000-of-00001"], "rows": 10},
                           "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 4}},
                "input": {"rows_read": 8, "rows_dropped": 1, "rows_valid": 7, "limit": None}}
    manifest.update(override)
    storage.write(manifest_name(run_id), json.dumps(manifest).encode())
    return ManifestWritten("e-manifest", "b", manifest_name(run_id), run_id)


def training_ended(job_id: str, outcome: JobOutcome = JobOutcome.SUCCEEDED, event_id: str = "e-end") -> JobEnded:
    return JobEnded(event_id, JobTerminal(JobKind.VERTEX_CUSTOM_JOB, job_id, outcome))


def write_comparison(storage, run_id: str, candidate: float = 1.0, champion: float | None = None,
                     champion_uri: str | None = None, mean: float = 2.0) -> dict:
    """comparison.json as the trainer writes it: the candidate's RMSE on its eval rows, the mean
    baseline's, and the champion's (`champion` None: the trainer was given no champion)."""
    document = {"format": COMPARISON_FORMAT, "eval_rows": 400, "mean_baseline_rmse": mean,
                "candidate": {"rmse": candidate, "slices": {}}, "champion": None}
    if champion is not None:
        document["champion"] = {"artifact_uri": champion_uri, "rmse": champion, "slices": {}}
    storage.write(comparison_name(run_id), json.dumps(document).encode())
    return document
