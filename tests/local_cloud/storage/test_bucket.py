"""The bucket directory's object-finalize events, from real file-system events."""
from __future__ import annotations

import base64
import hashlib
import time

import pytest

from functions.local_adapters import LocalStorage
from local_cloud.storage.bucket import BucketWatcher, object_name
from tests.conftest import wait_until


@pytest.fixture
def watched(tmp_path):
    got: list = []
    watcher = BucketWatcher("b", tmp_path, got.append)
    watcher.start()
    yield tmp_path, got
    watcher.stop()


def names(items):
    return [item.name for item in list(items)]


def finalized(got, name):
    wait_until(lambda: name in names(got), 5, f"the finalize of {name}")


def test_a_file_is_finalized_when_closed_not_while_written(watched):
    root, got = watched
    (root / "runs").mkdir()
    time.sleep(0.2)
    with open(root / "runs" / "a.csv", "wb") as handle:
        handle.write(b"x" * 1000)
        handle.flush()
        time.sleep(0.3)
        assert "runs/a.csv" not in names(got)
        handle.write(b"y")
    finalized(got, "runs/a.csv")
    resource = next(i for i in got if i.name == "runs/a.csv").resource
    assert resource["size"] == "1001" and resource["bucket"] == "b"
    assert resource["md5Hash"] == base64.b64encode(hashlib.md5(b"x" * 1000 + b"y").digest()).decode()
    assert int(resource["generation"]) > 0


def test_a_staged_write_is_one_finalize_of_the_final_name(watched):
    root, got = watched
    LocalStorage(root).write("triggers/t.json", b"{}")
    finalized(got, "triggers/t.json")
    time.sleep(0.3)
    assert names(got).count("triggers/t.json") == 1
    assert not [n for n in names(got) if n.endswith(".mlrelay-part")]


def test_a_create_only_write_is_finalized_once_and_a_second_create_loses(watched):
    root, got = watched
    storage = LocalStorage(root)
    assert storage.create("runs/r/_LAUNCHED", b'{"owner": "a"}')
    assert not storage.create("runs/r/_LAUNCHED", b'{"owner": "b"}')
    finalized(got, "runs/r/_LAUNCHED")
    time.sleep(0.3)
    assert names(got).count("runs/r/_LAUNCHED") == 1
    assert storage.read("runs/r/_LAUNCHED") == b'{"owner": "a"}'


def test_files_written_into_a_brand_new_directory_tree_are_not_missed(watched):
    root, got = watched
    deep = root / "runs" / "r1" / "preprocess"
    deep.mkdir(parents=True)
    for i in range(5):
        (deep / f"s{i}").write_bytes(b"z")
    wait_until(lambda: {f"runs/r1/preprocess/s{i}" for i in range(5)} <= set(names(got)), 5, "the five shards")


def test_object_names_refuse_paths_outside_the_bucket(tmp_path):
    assert object_name(tmp_path, tmp_path / "a" / "b") == "a/b"
    assert object_name(tmp_path, tmp_path.parent / "x") is None
    assert object_name(tmp_path, tmp_path / "runs" / ".x.json.0f.mlrelay-part") is None
