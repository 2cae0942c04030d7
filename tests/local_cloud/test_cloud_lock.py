"""One local cloud per state directory: a second is refused with the first's pid, and the
directory is free again once the first stops (or dies: the lock is the process's own)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from local_cloud.cloud import LOCK_FILE, STATE_FILE, LocalCloud, LocalCloudBusy, LocalCloudSettings, hold_root
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_a_second_local_cloud_on_one_directory_is_refused_and_leaves_the_first_alone(tmp_path):
    first = LocalCloud(LocalCloudSettings(root=tmp_path)).start()
    try:
        state = json.loads((tmp_path / STATE_FILE).read_text())
        second = LocalCloud(LocalCloudSettings(root=tmp_path))
        with pytest.raises(LocalCloudBusy, match=f"pid {state['pid']}"):
            second.start()
        second.stop()
        assert (tmp_path / STATE_FILE).exists(), "the refused cloud must not remove the running one's state"
    finally:
        first.stop()
    again = LocalCloud(LocalCloudSettings(root=tmp_path)).start()
    again.stop()


def test_a_killed_holder_leaves_the_directory_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from pathlib import Path; from local_cloud.cloud import hold_root;"
                               "held_root = hold_root(Path(sys.argv[2])); print('held', flush=True); time.sleep(60)",
                               str(REPO), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LocalCloudBusy, match=f"pid {holder.pid}"):
            hold_root(tmp_path)
    finally:
        holder.kill()  # kill -9: no cleanup runs
        holder.wait()
    hold_root(tmp_path).close()
    assert (tmp_path / LOCK_FILE).exists()
