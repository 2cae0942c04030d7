"""The model's artifacts as a local directory, from AIP_STORAGE_URI.

Vertex AI copies a Model's artifactUri to a Cloud Storage location of its own and passes that as
AIP_STORAGE_URI (gs://...), readable with the container's credentials. The TensorFlow the image
pins has no gs:// file system of its own (that is tensorflow-io-gcs-filesystem, which it no longer
installs), so the directory is downloaded once at start with google-cloud-storage, imported only
then. A local path or file:// URI, as the tests and the local cloud pass, is used as it is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_server.model_loading import local_artifact_path


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` as (bucket, "some/prefix/"); the prefix is empty for a whole bucket."""
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"AIP_STORAGE_URI {uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def local_model_dir(storage_uri: str, scratch: Path | None = None, client=None) -> str:
    """A local directory holding the artifacts AIP_STORAGE_URI names (downloaded for gs:// URIs)."""
    if not storage_uri:
        raise ValueError("AIP_STORAGE_URI is not set: it names the model's artifacts")
    if not storage_uri.startswith("gs://"):
        return local_artifact_path(storage_uri)
    if client is None:
        from google.cloud import storage  # only for gs:// URIs: local runs need no Google client

        client = storage.Client()
    bucket, prefix = split_gcs_uri(storage_uri)
    target = Path(scratch or tempfile.mkdtemp(prefix="model-"))
    found = 0
    for blob in client.list_blobs(bucket, prefix=prefix):
        relative = blob.name[len(prefix):]
        if not relative or relative.endswith("/"):  # the folder placeholders some tools write
            continue
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(path))
        found += 1
    if not found:
        raise FileNotFoundError(f"no objects under {storage_uri}")
    return str(target)
