"""The local Vertex AI Model Registry and Endpoint: registry, asynchronous deploys, traffic
split, predictions in Vertex's JSON, Google's error JSON, and restarts from the state dir.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections import Counter

import pytest

from tests.local_cloud.vertex.conftest import BABY, PARENT, TWIN_GIRL, deployed_version, weight_v1, weight_v2


# --- registry --------------------------------------------------------------------------------


def test_upload_creates_version_1_and_parent_model_adds_version_2(service_factory, saved_models):
    service, rest = service_factory()
    first = rest.upload(saved_models["v1"], modelId="babyweight", model={"labels": {"run_id": "r1"}})
    assert first["done"] is True
    assert first["name"].startswith(f"{PARENT}/models/babyweight/operations/")
    assert first["response"] == {
        "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
        "model": f"{PARENT}/models/babyweight",
        "modelVersionId": "1",
    }
    second = rest.upload(
        saved_models["v2"], parentModel=f"{PARENT}/models/babyweight", model={"labels": {"run_id": "r2"}}
    )
    assert second["response"]["model"] == f"{PARENT}/models/babyweight"
    assert second["response"]["modelVersionId"] == "2"

    versions = rest.ok("GET", "models/babyweight:listVersions")["models"]
    # the first version is the default one until an alias merge moves it (the champion's, in mlrelay)
    assert [(v["versionId"], v["versionAliases"]) for v in versions] == [("1", ["default"]), ("2", [])]
    assert rest.ok("GET", "models/babyweight")["artifactUri"] == saved_models["v1"]
    moved = rest.ok("POST", "models/babyweight@2:mergeVersionAliases", {"versionAliases": ["default", "champion"]})
    assert moved["versionId"] == "2" and sorted(moved["versionAliases"]) == ["champion", "default"]
    assert rest.ok("GET", "models/babyweight")["artifactUri"] == saved_models["v2"]
    assert rest.ok("GET", "models/babyweight@champion")["versionId"] == "2"
    assert rest.ok("GET", "models/babyweight@1")["artifactUri"] == saved_models["v1"]
    status, error = rest.call("POST", "models/babyweight@1:mergeVersionAliases", {"versionAliases": ["-default"]})
    assert status == 400 and "cannot be removed" in error["error"]["message"]
    status, error = rest.call("POST", "models/babyweight:mergeVersionAliases", {"versionAliases": ["x1"]})
    assert status == 400 and "explicitly" in error["error"]["message"]
    only_r1 = rest.ok("GET", 'models/babyweight:listVersions?filter=labels.run_id%3D%22r1%22')["models"]
    assert [v["versionId"] for v in only_r1] == ["1"]

    status, error = rest.call("POST", "models:upload", {"modelId": "babyweight", "model": versions[0]})
    assert status == 409 and error["error"]["status"] == "ALREADY_EXISTS"
    status, error = rest.call("POST", "models:upload", {"parentModel": f"{PARENT}/models/nope", "model": versions[0]})
    assert status == 404 and error["error"]["status"] == "NOT_FOUND"
    status, error = rest.call("POST", "models:upload", {"model": {"displayName": "x", "artifactUri": "/m"}})
    assert status == 400 and "containerSpec.imageUri" in error["error"]["message"]


# --- deploy and predict ----------------------------------------------------------------------


def test_deploy_is_asynchronous_reports_its_end_and_serves_vertex_json(service_factory, saved_models):
    reported: list[dict] = []
    service, rest = service_factory(on_operation_done=reported.append)
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")

    started = rest.deploy("babyweight", f"{PARENT}/models/babyweight@1", {"0": 100})
    assert started["done"] is False
    assert started["name"].startswith(f"{PARENT}/endpoints/babyweight/operations/")
    assert started["metadata"]["@type"] == "type.googleapis.com/google.cloud.aiplatform.v1.DeployModelOperationMetadata"

    done = rest.wait(started)
    assert done["done"] is True and "error" not in done
    deployed = done["response"]["deployedModel"]
    assert deployed["model"] == f"{PARENT}/models/babyweight" and deployed["modelVersionId"] == "1"
    assert reported == [done]
    assert rest.ok("GET", f"operations/{done['name'].rsplit('/', 1)[1]}") == done

    endpoint = rest.ok("GET", "endpoints/babyweight")
    assert endpoint["trafficSplit"] == {deployed["id"]: 100}
    assert [d["id"] for d in endpoint["deployedModels"]] == [deployed["id"]]
    assert rest.ok("GET", "models/babyweight")["deployedModels"] == [
        {"endpoint": f"{PARENT}/endpoints/babyweight", "deployedModelId": deployed["id"]}
    ]

    status, answer = rest.predict("babyweight", [BABY, TWIN_GIRL])
    assert status == 200, answer
    assert set(answer) == {"predictions", "deployedModelId", "model", "modelVersionId", "modelDisplayName"}
    assert answer["predictions"] == pytest.approx([weight_v1(BABY), weight_v1(TWIN_GIRL)], rel=1e-6)
    assert answer["deployedModelId"] == deployed["id"]
    assert answer["model"] == f"{PARENT}/models/babyweight"
    assert answer["modelVersionId"] == "1" and answer["modelDisplayName"] == "babyweight"


def test_traffic_split_routes_both_ways_at_50_50_and_one_way_at_100_0(service_factory, saved_models):
    service, rest = service_factory(rng=random.Random(7))
    for endpoint in ("split", "canary"):
        service.create_endpoint(endpoint, endpoint)
    rest.upload(saved_models["v1"], modelId="babyweight")
    rest.upload(saved_models["v2"], parentModel=f"{PARENT}/models/babyweight")
    v1 = f"{PARENT}/models/babyweight@1"
    v2 = f"{PARENT}/models/babyweight@2"

    old = deployed_version(rest, "split", v1, {"0": 100})
    new = deployed_version(rest, "split", v2, {"0": 50, old: 50})
    assert rest.ok("GET", "endpoints/split")["trafficSplit"] == {old: 50, new: 50}
    expected = {old: weight_v1(BABY), new: weight_v2(BABY)}
    served = Counter()
    for _ in range(200):
        status, answer = rest.predict("split", [BABY])
        assert status == 200, answer
        served[answer["deployedModelId"]] += 1
        assert answer["predictions"] == pytest.approx([expected[answer["deployedModelId"]]], rel=1e-6)
    assert served[old] > 50 and served[new] > 50

    stable = deployed_version(rest, "canary", v1, {"0": 100})
    deployed_version(rest, "canary", v2, {"0": 0, stable: 100})
    assert {rest.predict("canary", [BABY])[1]["deployedModelId"] for _ in range(50)} == {stable}

    # Undeploying a model that still has traffic needs a split that moves its share.
    status, error = rest.call("POST", "endpoints/split:undeployModel", {"deployedModelId": old})
    assert status == 400 and error["error"]["status"] == "FAILED_PRECONDITION"
    rest.ok("POST", "endpoints/split:undeployModel", {"deployedModelId": old, "trafficSplit": {new: 100}})
    assert {rest.predict("split", [BABY])[1]["deployedModelId"] for _ in range(20)} == {new}


def test_failed_deploy_ends_with_an_error_and_the_old_version_keeps_serving(service_factory, saved_models, tmp_path):
    reported: list[dict] = []
    service, rest = service_factory(on_operation_done=reported.append)
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    serving = deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight@1", {"0": 100})
    missing = str(tmp_path / "no-such-model")
    rest.upload(missing, parentModel=f"{PARENT}/models/babyweight")

    started = rest.deploy("babyweight", f"{PARENT}/models/babyweight@2", {"0": 100, serving: 0})
    assert started["done"] is False
    failed = rest.wait(started)
    assert failed["done"] is True and "response" not in failed
    assert failed["error"]["code"] == 3 and missing in failed["error"]["message"]
    assert reported[-1] == failed

    endpoint = rest.ok("GET", "endpoints/babyweight")
    assert [d["id"] for d in endpoint["deployedModels"]] == [serving]
    assert endpoint["trafficSplit"] == {serving: 100}
    status, answer = rest.predict("babyweight", [BABY])
    assert status == 200 and answer["deployedModelId"] == serving
    assert answer["predictions"] == pytest.approx([weight_v1(BABY)], rel=1e-6)


def test_deploy_requests_the_api_refuses_at_once(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    cases = [
        ("babyweight", {"deployedModel": {"model": f"{PARENT}/models/babyweight"}, "trafficSplit": {"0": 60}}, 400),
        ("babyweight", {"deployedModel": {"model": f"{PARENT}/models/babyweight"}, "trafficSplit": {"7": 100}}, 400),
        ("babyweight", {"deployedModel": {"model": f"{PARENT}/models/babyweight@9"}}, 404),
        ("babyweight", {"deployedModel": {"model": "babyweight"}}, 400),
        ("nowhere", {"deployedModel": {"model": f"{PARENT}/models/babyweight"}}, 404),
    ]
    for endpoint, body, expected_status in cases:
        status, error = rest.call("POST", f"endpoints/{endpoint}:deployModel", body)
        assert status == expected_status, (body, error)
        assert set(error["error"]) == {"code", "message", "status"} and error["error"]["code"] == expected_status
    assert rest.ok("GET", "endpoints/babyweight")["deployedModels"] == []


# --- closing ---------------------------------------------------------------------------------


def test_closing_the_service_ends_a_wait_for_an_operation(service_factory, saved_models, tmp_path):
    gate = threading.Event()
    # a deploy that takes its time
    service, rest = service_factory(resolve_artifact_path=lambda uri: (gate.wait(30), uri)[1])
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    started = rest.deploy("babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    waited: list[dict] = []
    waiter = threading.Thread(target=lambda: waited.append(rest.wait(started)))
    waiter.start()
    time.sleep(0.3)
    began = time.monotonic()
    closer = threading.Thread(target=service.close)
    closer.start()
    waiter.join(10)
    gate.set()
    closer.join(30)
    assert waited and waited[0]["done"] is False
    assert time.monotonic() - began < 10


# --- restart ---------------------------------------------------------------------------------


def test_restart_keeps_versions_and_serves_the_deployed_model(service_factory, saved_models, tmp_path):
    state_dir = tmp_path / "kept"
    service, rest = service_factory(state_dir)
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    rest.upload(saved_models["v2"], parentModel=f"{PARENT}/models/babyweight")
    deployed = deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight@2", {"0": 100})
    endpoint_before = rest.ok("GET", "endpoints/babyweight")
    service.close()

    again, rest = service_factory(state_dir)
    assert again.create_endpoint("babyweight", "babyweight") == endpoint_before  # idempotent
    assert rest.ok("GET", "endpoints/babyweight") == endpoint_before
    assert [v["versionId"] for v in rest.ok("GET", "models/babyweight:listVersions")["models"]] == ["1", "2"]
    status, answer = rest.predict("babyweight", [BABY])
    assert status == 200 and answer["deployedModelId"] == deployed and answer["modelVersionId"] == "2"
    assert answer["predictions"] == pytest.approx([weight_v2(BABY)], rel=1e-6)
    third = rest.upload(saved_models["v1"], parentModel=f"{PARENT}/models/babyweight")
    assert third["response"]["modelVersionId"] == "3"


def test_a_deploy_in_progress_at_a_crash_finishes_after_restart(service_factory, saved_models, tmp_path):
    gate = threading.Event()

    def slow_path(uri: str) -> str:
        gate.wait(30)
        return uri

    crashed_dir, restarted_dir = tmp_path / "crashed", tmp_path / "restarted"
    service, rest = service_factory(crashed_dir, resolve_artifact_path=slow_path)
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    started = rest.deploy("babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    shutil.copytree(crashed_dir, restarted_dir)  # the state as a crash mid-deploy leaves it

    reported: list[dict] = []
    _, rest_after = service_factory(restarted_dir, on_operation_done=reported.append)
    done = rest_after.wait(started)
    gate.set()
    assert done["name"] == started["name"] and "error" not in done
    assert reported == [done]
    assert rest_after.predict("babyweight", [BABY])[0] == 200
