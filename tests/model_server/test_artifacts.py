"""AIP_STORAGE_URI to a local directory: paths as they are, gs:// prefixes downloaded."""

from __future__ import annotations

import pytest

from model_server.artifacts import local_model_dir, split_gcs_uri


class Blob:
    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data

    def download_to_filename(self, filename: str) -> None:
        with open(filename, "wb") as file:
            file.write(self.data)


class Client:
    """The one call the download makes of google.cloud.storage.Client."""

    def __init__(self, blobs: dict[str, dict[str, bytes]]):
        self.blobs = blobs
        self.listed: list[tuple[str, str]] = []

    def list_blobs(self, bucket: str, prefix: str = ""):
        self.listed.append((bucket, prefix))
        return [Blob(name, data) for name, data in self.blobs.get(bucket, {}).items() if name.startswith(prefix)]


def test_paths_and_file_uris_are_used_as_they_are(tmp_path):
    assert local_model_dir(str(tmp_path)) == str(tmp_path)
    assert local_model_dir(f"file://{tmp_path}") == str(tmp_path)
    with pytest.raises(ValueError, match="AIP_STORAGE_URI is not set"):
        local_model_dir("")


def test_a_gcs_prefix_is_downloaded_with_its_layout(tmp_path):
    client = Client({"vertex-copy": {
        "m/model/saved_model.pb": b"graph", "m/model/variables/variables.index": b"index",
        "m/model/": b"", "m/model-other/x": b"not this model", "elsewhere/y": b"no"}})
    directory = local_model_dir("gs://vertex-copy/m/model/", scratch=tmp_path / "copy", client=client)
    files = sorted(p.relative_to(directory).as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert files == ["saved_model.pb", "variables/variables.index"]
    assert client.listed == [("vertex-copy", "m/model/")]
    with pytest.raises(FileNotFoundError, match="no objects under gs://vertex-copy/empty"):
        local_model_dir("gs://vertex-copy/empty", scratch=tmp_path / "none", client=client)


def test_gcs_uris_split_into_bucket_and_prefix():
    assert split_gcs_uri("gs://b/runs/r/train/model") == ("b", "runs/r/train/model/")
    assert split_gcs_uri("gs://b") == ("b", "")
    with pytest.raises(ValueError):
        split_gcs_uri("gs:///x")
