"""Where the trainer reads and writes, on Vertex AI and locally.

Vertex AI mounts every Cloud Storage bucket under ``/gcs/`` with Cloud Storage FUSE and tells
a custom job where to put its outputs with ``AIP_*`` variables (``AIP_MODEL_DIR`` =
``<baseOutputDirectory>/model/``). The trainer reads and writes plain files only, so one code
path serves Vertex AI (through the mount) and a local run (a directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

GCS_SCHEME = "gs://"
GCS_FUSE_ROOT = "/gcs/"


def to_local_path(uri: str) -> str:
    """Return the file-system path for ``uri``: ``gs://B/x`` becomes ``/gcs/B/x``.

    Anything that is not a ``gs://`` URI is returned unchanged.
    """
    if not uri.startswith(GCS_SCHEME):
        return uri
    rest = uri[len(GCS_SCHEME):]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ValueError(f"Cloud Storage URI {uri!r} has no bucket name")
    return GCS_FUSE_ROOT + rest


@dataclass(frozen=True)
class OutputLocations:
    """The local paths a training run writes to."""

    job_dir: str
    model_dir: str
    metrics_path: str
    comparison_path: str
    progress_path: str
    report_path: str
    tensorboard_dir: str | None


def resolve_output_locations(job_dir: str | None, environ: Mapping[str, str]) -> OutputLocations:
    """Decide where the SavedModel, metrics.json and TensorBoard logs go.

    ``AIP_MODEL_DIR`` wins for the model (Vertex AI uploads what is there); otherwise the model
    goes to ``<job-dir>/model``. metrics.json, comparison.json, progress.json and
    training_report.json go to the job dir; without ``--job-dir`` the job dir is the model dir's
    parent, which is Vertex's base output directory.
    """
    aip_model_dir = environ.get("AIP_MODEL_DIR") or None
    if job_dir is None and aip_model_dir is None:
        raise ValueError("no output location: pass --job-dir or set AIP_MODEL_DIR")
    if aip_model_dir is not None:
        model_dir = to_local_path(aip_model_dir).rstrip("/")
    else:
        model_dir = os.path.join(to_local_path(job_dir).rstrip("/"), "model")
    if job_dir is not None:
        local_job_dir = to_local_path(job_dir).rstrip("/")
    else:
        local_job_dir = os.path.dirname(model_dir)
    tensorboard = environ.get("AIP_TENSORBOARD_LOG_DIR") or None
    return OutputLocations(
        job_dir=local_job_dir,
        model_dir=model_dir,
        metrics_path=os.path.join(local_job_dir, "metrics.json"),
        comparison_path=os.path.join(local_job_dir, "comparison.json"),
        progress_path=os.path.join(local_job_dir, "progress.json"),
        report_path=os.path.join(local_job_dir, "training_report.json"),
        tensorboard_dir=to_local_path(tensorboard) if tensorboard else None,
    )
