"""The release policy end to end through the local cloud, every event delivered twice: the first
model goes to 100 %, a worse candidate is stopped by the gate, a good one canaries and is
promoted, a canary whose container dies during its bake is rolled back, data outside its bounds
launches no training, and a requested rollback serves the earlier version again. After all of
it the endpoint holds one deployed model.

The tests of this module run in order, each on the endpoint the one before left.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from functions.config import Config
from local_cloud.cloud import LocalCloud, LocalCloudSettings
from mlrelay.demo import SAMPLE_INSTANCES, ensure_sample, predict
from mlrelay.demo import send_predictions as send_predictions_to
from tests.conftest import REPO
from tests.e2e.test_local_chain import (
    SMALL_TRAINING,
    assert_one_model_serves,
    publish_start,
    run_for_message,
    runs_of,
    wait_for,
    wait_terminal,
)

pytestmark = pytest.mark.slow

SOURCE = "data/natality.parquet"
GOOD = {**SMALL_TRAINING, "source": SOURCE}
BAKE_SECONDS = 6


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("release-cloud")
    config = Config(debounce_seconds=0)  # these tests start runs of one request, one after another
    settings = LocalCloudSettings(root=root, config=config, duplicate_deliveries=2, min_backoff_s=0.2,
                                  max_backoff_s=2.0, bake_seconds=BAKE_SECONDS)
    ensure_sample(root / "buckets" / config.bucket, rows=4000, seed=3)
    local = LocalCloud(settings).start()
    yield local
    local.stop()


def start_run(cloud, body: dict) -> str:
    return run_for_message(cloud, publish_start(cloud, body))


def endpoint(cloud) -> dict:
    return cloud.models.get_endpoint(cloud.config.endpoint_id)


def version_of(cloud, run_id: str) -> dict:
    (version,) = [v for v in cloud.models.list_model_versions("babyweight")["models"]
                  if v.get("labels", {}).get("run_id") == run_id]
    return version


def ledger_states(cloud, run_id: str) -> list[str]:
    return [e.state.value for e in sorted(runs_of(cloud).ledger(run_id)[run_id], key=lambda e: e.time)]


def record_of(cloud, run_id: str, state: str):
    return next(e for e in runs_of(cloud).ledger(run_id)[run_id] if e.state.value == state)


def send_predictions(cloud, count: int) -> list[int]:
    """`count` predictions, one instance each; the HTTP status of each."""
    return send_predictions_to(cloud.endpoint_url, count)


def test_the_first_model_goes_straight_to_all_traffic(cloud):
    run_id = start_run(cloud, GOOD)
    status = wait_terminal(cloud, run_id)
    assert status.state.value == "deployed", status.reason
    assert "baking" not in ledger_states(cloud, run_id)
    served = assert_one_model_serves(cloud)
    assert served["displayName"] == run_id
    assert set(version_of(cloud, run_id)["versionAliases"]) == {"champion", "default"}
    gate = record_of(cloud, run_id, "deploying").details["gate"]
    assert gate["blessed"] and "no champion" in gate["reason"]
    (release,) = runs_of(cloud).releases()
    assert release["action"] == "first" and release["run_id"] == run_id


def test_a_clearly_worse_candidate_is_registered_but_never_deployed(cloud):
    champion = assert_one_model_serves(cloud)
    run_id = start_run(cloud, {**GOOD, "numTrainExamples": 64, "batchSize": 32})
    status = wait_terminal(cloud, run_id)
    assert status.state.value == "rejected" and status.reason.startswith("gate:"), status.reason
    gate = record_of(cloud, run_id, "rejected").details["gate"]
    assert not gate["blessed"] and any(not check["passed"] for check in gate["checks"])
    assert version_of(cloud, run_id)["labels"]["gate"] == "rejected"
    assert assert_one_model_serves(cloud)["id"] == champion["id"]
    # the trainer scored the champion on this run's own eval rows
    comparison = json.loads(runs_of(cloud).storage.read(f"runs/{run_id}/train/comparison.json"))
    assert comparison["champion"]["rmse"] < comparison["candidate"]["rmse"]


def test_a_good_candidate_canaries_then_is_promoted_and_the_old_champion_retired(cloud):
    champion = assert_one_model_serves(cloud)
    run_id = start_run(cloud, GOOD)
    wait_for(lambda: "baking" in ledger_states(cloud, run_id), 300, "the canary to bake")
    during = endpoint(cloud)
    assert len(during["deployedModels"]) == 2
    candidate = next(d["id"] for d in during["deployedModels"] if d["displayName"] == run_id)
    assert during["trafficSplit"] == {candidate: 10, champion["id"]: 90}
    assert set(send_predictions(cloud, 100)) == {200}
    status = wait_terminal(cloud, run_id, 120)
    assert status.state.value == "deployed", status.reason
    assert "release" in status.stages
    served = assert_one_model_serves(cloud)
    assert served["id"] == candidate
    assert set(version_of(cloud, run_id)["versionAliases"]) == {"champion", "default"}
    promoted = record_of(cloud, run_id, "deployed").details
    assert promoted["bake"]["promote"] and promoted["figures"][candidate]["requests"] > 0
    assert [r["action"] for r in runs_of(cloud).releases()][-2:] == ["canary", "promoted"]


def test_a_canary_whose_container_dies_during_its_bake_is_rolled_back(cloud):
    champion = assert_one_model_serves(cloud)
    run_id = start_run(cloud, GOOD)
    wait_for(lambda: "baking" in ledger_states(cloud, run_id), 300, "the canary to bake")
    candidate = next(d["id"] for d in endpoint(cloud)["deployedModels"] if d["displayName"] == run_id)
    cloud.models.crash_serving(candidate)
    statuses = send_predictions(cloud, 150)
    assert 503 in statuses and 200 in statuses  # the canary's share fails, the champion's is served
    status = wait_terminal(cloud, run_id, 120)
    assert status.state.value == "rolled-back" and "the canary failed" in status.reason, status.reason
    assert assert_one_model_serves(cloud)["id"] == champion["id"]
    assert set(predict(cloud.endpoint_url, SAMPLE_INSTANCES[:1])) >= {"predictions"}


def test_data_outside_its_bounds_is_rejected_before_any_training(cloud):
    # the same rows, but for half of them a gestation of 0 weeks, which the pipeline's filters drop
    table = pq.read_table(cloud.bucket_dir / SOURCE)
    weeks = table.column("gestation_weeks").to_pylist()
    broken = [0 if index % 2 else value for index, value in enumerate(weeks)]
    column = table.schema.get_field_index("gestation_weeks")
    table = table.set_column(column, table.schema.field(column), pa.array(broken, table.schema.field(column).type))
    pq.write_table(table, cloud.bucket_dir / "data" / "half-broken.parquet")
    run_id = start_run(cloud, {**SMALL_TRAINING, "source": "data/half-broken.parquet"})
    status = wait_terminal(cloud, run_id)
    assert status.state.value == "rejected" and status.reason.startswith("data check:"), status.reason
    assert cloud.jobs.list_custom_jobs({"run_id": run_id}) == []


def test_mlrelay_rollback_serves_the_earlier_version_again_and_retires_the_current_one(cloud):
    current = assert_one_model_serves(cloud)
    releases = runs_of(cloud).releases()
    first = next(r for r in releases if r["action"] == "first")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cloud.root)}
    done = subprocess.run([sys.executable, "-m", "mlrelay.cli", "rollback", "--root", str(cloud.root)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: any(r["action"] == "rollback" for r in runs_of(cloud).releases()), 120, "the rollback")
    served = assert_one_model_serves(cloud)
    assert served["id"] != current["id"]
    assert f"{served['model']}@{served['modelVersionId']}" == first["model_version"]
    rollback = next(r for r in runs_of(cloud).releases() if r["action"] == "rollback")
    assert rollback["gate"] == "skipped" and current["id"] in rollback["retired"]
    listed = subprocess.run([sys.executable, "-m", "mlrelay.cli", "releases", "--root", str(cloud.root)],
                            capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert listed.returncode == 0 and "rollback" in listed.stdout and "gate skipped" in listed.stdout
