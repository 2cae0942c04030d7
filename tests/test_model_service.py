"""The local Vertex AI Model Registry and Endpoint: registry, asynchronous deploys, traffic
split, predictions in Vertex's JSON, Google's error JSON, and restarts from the state dir.

The SavedModels are made here with plain TensorFlow and carry the trainer's serving
signature (is_male/plurality strings, mother_age/gestation_weeks float32, output "weight").
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from local_cloud.model_service import (
    ApiError,
    InputSpec,
    ModelService,
    assign_version_aliases,
    choose_deployed_model,
    instances_to_columns,
    parse_label_filter,
    parse_model_reference,
    predictions_from_outputs,
    resolve_traffic_split,
    split_after_undeploy,
    tf_serving_float_values,
)
from local_cloud.model_service_http import PredictionBatcher

PROJECT, LOCATION = "local-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
SIGNATURE = [
    InputSpec("gestation_weeks", "float32", (None,)),
    InputSpec("is_male", "string", (None,)),
    InputSpec("mother_age", "float32", (None,)),
    InputSpec("plurality", "string", (None,)),
]
BABY = {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.5}
TWIN_GIRL = {"is_male": "False", "mother_age": 31, "plurality": "Twins(2)", "gestation_weeks": 35.0}


# Two "versions" of the babyweight model, told apart by their formulas.
def weight_v1(row: dict) -> float:
    single = 1.0 if row["plurality"] == "Single(1)" else 0.0
    male = 1.0 if row["is_male"] == "True" else 0.0
    return 1.0 + 0.5 * male + 0.02 * row["mother_age"] + 0.15 * row["gestation_weeks"] + single


def weight_v2(row: dict) -> float:
    return 3.0 + 0.1 * row["gestation_weeks"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, str]:
    import tensorflow as tf

    specs = [
        tf.TensorSpec([None], tf.string, name="is_male"),
        tf.TensorSpec([None], tf.float32, name="mother_age"),
        tf.TensorSpec([None], tf.string, name="plurality"),
        tf.TensorSpec([None], tf.float32, name="gestation_weeks"),
    ]

    class BabyweightV1(tf.Module):
        @tf.function(input_signature=specs)
        def serve(self, is_male, mother_age, plurality, gestation_weeks):
            male = tf.cast(tf.equal(is_male, "True"), tf.float32)
            single = tf.cast(tf.equal(plurality, "Single(1)"), tf.float32)
            return {"weight": 1.0 + 0.5 * male + 0.02 * mother_age + 0.15 * gestation_weeks + single}

    class BabyweightV2(tf.Module):
        @tf.function(input_signature=specs)
        def serve(self, is_male, mother_age, plurality, gestation_weeks):
            return {"weight": 3.0 + 0.1 * gestation_weeks + 0.0 * mother_age}

    root = tmp_path_factory.mktemp("saved_models")
    paths = {}
    for name, module in (("v1", BabyweightV1()), ("v2", BabyweightV2())):
        paths[name] = str(root / name)
        tf.saved_model.save(module, paths[name], signatures={"serving_default": module.serve})
    return paths


class Rest:
    """A tiny client of the service's REST API, keeping one connection as real clients do."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        self.connection.request(method, f"/v1/{PARENT}/{path}", payload, headers)
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())

    def ok(self, method: str, path: str, body=None) -> dict:
        status, answer = self.call(method, path, body)
        assert status == 200, answer
        return answer

    def upload(self, artifact_uri: str, **request) -> dict:
        model = {"displayName": "babyweight", "artifactUri": artifact_uri, "containerSpec": {"imageUri": IMAGE}}
        model.update(request.pop("model", {}))
        return self.ok("POST", "models:upload", {"model": model, **request})

    def deploy(self, endpoint: str, model: str, traffic_split: dict) -> dict:
        body = {
            "deployedModel": {"model": model, "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-2"}}},
            "trafficSplit": traffic_split,
        }
        return self.ok("POST", f"endpoints/{endpoint}:deployModel", body)

    def wait(self, operation: dict) -> dict:
        operation_id = operation["name"].rsplit("/", 1)[1]
        return self.ok("POST", f"operations/{operation_id}:wait?timeout=60s")

    def predict(self, endpoint: str, instances: list) -> tuple[int, dict]:
        return self.call("POST", f"endpoints/{endpoint}:predict", {"instances": instances})


@pytest.fixture()
def service_factory(tmp_path):
    started: list[ModelService] = []

    def start(state_dir: Path = tmp_path / "state", **options) -> tuple[ModelService, Rest]:
        service = ModelService(state_dir, PROJECT, LOCATION, **options)
        started.append(service)
        _, port = service.serve()
        return service, Rest(port)

    yield start
    for service in started:
        service.close()


def deployed_version(rest: Rest, endpoint: str, model: str, traffic_split: dict) -> str:
    done = rest.wait(rest.deploy(endpoint, model, traffic_split))
    assert done["done"] and "error" not in done, done
    return done["response"]["deployedModel"]["id"]


# --- registry ------------------------------------------------------------------------------


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
    assert [(v["versionId"], v["versionAliases"]) for v in versions] == [("1", []), ("2", ["default"])]
    assert rest.ok("GET", "models/babyweight")["artifactUri"] == saved_models["v2"]
    assert rest.ok("GET", "models/babyweight@1")["artifactUri"] == saved_models["v1"]
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


# --- bad input ---------------------------------------------------------------------------------


def test_bad_predict_requests_get_400_with_google_error_json(service_factory, saved_models):
    service, rest = service_factory(max_instances_per_request=5)
    service.create_endpoint("babyweight", "babyweight")
    service.create_endpoint("empty", "empty")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    path = "endpoints/babyweight:predict"
    bad_requests = {
        "not json": (b"{instances: [", "not valid JSON"),
        "no instances": (json.dumps({"inputs": [BABY]}).encode(), '"instances"'),
        "instances not a list": (json.dumps({"instances": BABY}).encode(), "non-empty list"),
        "empty instances": (json.dumps({"instances": []}).encode(), "non-empty list"),
        "missing feature": (json.dumps({"instances": [{k: v for k, v in BABY.items() if k != "plurality"}]}).encode(),
                            "missing ['plurality']"),
        "unknown feature": (json.dumps({"instances": [{**BABY, "weight_pounds": 7.5}]}).encode(),
                            "unknown ['weight_pounds']"),
        "string for a float": (json.dumps({"instances": [BABY, {**BABY, "mother_age": "26"}]}).encode(),
                               "instances[1].mother_age must be a number"),
        "boolean for a float": (json.dumps({"instances": [{**BABY, "gestation_weeks": True}]}).encode(),
                                "instances[0].gestation_weeks must be a number"),
        "number for a string": (json.dumps({"instances": [{**BABY, "is_male": 1}]}).encode(),
                                "instances[0].is_male must be a string"),
        "instance not an object": (json.dumps({"instances": [[True, 26, "Single(1)", 39]]}).encode(), "instances[0]"),
        "too many instances": (json.dumps({"instances": [BABY] * 6}).encode(), "at most 5 instances"),
    }
    for case, (raw, phrase) in bad_requests.items():
        status, answer = rest.call("POST", path, raw=raw)
        assert status == 400, (case, answer)
        assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT", case
        assert phrase in answer["error"]["message"], (case, answer)

    status, answer = rest.predict("empty", [BABY])
    assert status == 400 and answer["error"]["status"] == "FAILED_PRECONDITION"
    assert "no deployed model" in answer["error"]["message"]
    status, answer = rest.predict("nowhere", [BABY])
    assert status == 404 and answer["error"]["status"] == "NOT_FOUND"
    status, answer = rest.call("GET", "no/such/thing")
    assert status == 404 and answer["error"]["status"] == "NOT_FOUND"
    # The connection still works after every refusal.
    assert rest.predict("babyweight", [BABY])[0] == 200


def test_bodies_over_the_limit_are_refused_and_chunked_bodies_are_read(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    path = f"/v1/{PARENT}/endpoints/babyweight:predict"

    # Vertex AI refuses online prediction payloads over 1.5 MB; the connection is closed after the answer.
    status, answer = rest.call("POST", "endpoints/babyweight:predict", raw=b" " * (1_572_864 + 1))
    assert status == 400 and "exceeds the limit" in answer["error"]["message"]

    chunked = http.client.HTTPConnection("127.0.0.1", rest.connection.port, timeout=30)
    body = json.dumps({"instances": [BABY, TWIN_GIRL]}).encode()
    chunked.request("POST", path, body=iter([body[:10], body[10:]]), headers={"Content-Type": "application/json"},
                    encode_chunked=True)
    response = chunked.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    assert answer["predictions"] == pytest.approx([weight_v1(BABY), weight_v1(TWIN_GIRL)], rel=1e-6)

    too_big = iter([b"[" + b" " * 1_000_000, b" " * 1_000_000 + b"]"])
    chunked.request("POST", path, body=too_big, headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = chunked.getresponse()
    assert response.status == 400 and "exceeds the limit" in json.loads(response.read())["error"]["message"]
    assert response.getheader("connection") == "close"
    chunked.close()


def test_requests_arriving_together_get_their_own_predictions(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    port = rest.connection.port
    rows = [{**BABY, "mother_age": float(age)} for age in range(18, 48)]
    answers: dict[int, object] = {}

    def client(index: int) -> None:
        own = Rest(port)
        mine = rows[index: index + 1 + index % 3]
        for _ in range(5):
            status, answer = own.predict("babyweight", mine)
            assert status == 200, answer
            answers.setdefault(index, answer["predictions"])
            assert answer["predictions"] == answers[index]
        answers[index] = (mine, answers[index])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 12
    for mine, predictions in answers.values():
        assert predictions == pytest.approx([weight_v1(row) for row in mine], rel=1e-6)


def test_closing_the_service_ends_a_wait_for_an_operation(service_factory, saved_models, tmp_path):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    gate = threading.Event()
    original = service._load
    service._load = lambda uri: (gate.wait(30), original(uri))[1]  # a deploy that takes its time
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


def test_serve_binds_loopback_only(tmp_path):
    service = ModelService(tmp_path / "state")
    with pytest.raises(ValueError, match="loopback"):
        service.serve(host="0.0.0.0")
    service.close()


# --- restart -------------------------------------------------------------------------------------


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


# --- pure decisions ------------------------------------------------------------------------------


def test_traffic_split_validation_and_the_new_model_placeholder():
    assert resolve_traffic_split({"0": 80, "11": 20}, deployed_ids=["11"], new_id="12") == {"12": 80, "11": 20}
    for bad, phrase in [
        ({"0": 80}, "add up to 100"),
        ({"0": 50, "99": 50}, "not a model deployed"),
        ({"0": True, "11": 99}, "whole percentage"),
        ({"0": 100.0}, "whole percentage"),
        ([100], "must be an object"),
    ]:
        with pytest.raises(ApiError, match=phrase):
            resolve_traffic_split(bad, deployed_ids=["11"], new_id="12")
    with pytest.raises(ApiError, match='"0"'):
        resolve_traffic_split({"0": 100}, deployed_ids=["11"])


def test_split_after_undeploy():
    assert split_after_undeploy({"1": 100}, "1", {}, []) == {}
    assert split_after_undeploy({"1": 0, "2": 100}, "1", {}, ["2"]) == {"2": 100}
    assert split_after_undeploy({"1": 30, "2": 70}, "1", {"2": 100}, ["2"]) == {"2": 100}
    with pytest.raises(ApiError) as refused:
        split_after_undeploy({"1": 30, "2": 70}, "1", {}, ["2"])
    assert refused.value.status == "FAILED_PRECONDITION"


def test_choose_deployed_model_follows_the_percentages():
    split = {"2": 25, "1": 75, "3": 0}
    assert choose_deployed_model(split, 0.0) == "1"
    assert choose_deployed_model(split, 0.7499) == "1"
    assert choose_deployed_model(split, 0.75) == "2"
    assert choose_deployed_model(split, 0.9999) == "2"
    draws = np.linspace(0, 1, 1000, endpoint=False)
    assert Counter(choose_deployed_model(split, d) for d in draws) == {"1": 750, "2": 250}
    with pytest.raises(ValueError):
        choose_deployed_model({"1": 0}, 0.5)


def test_model_references_and_version_aliases():
    assert parse_model_reference(f"{PARENT}/models/babyweight@2", PROJECT, LOCATION) == ("babyweight", "2")
    assert parse_model_reference(f"{PARENT}/models/babyweight", PROJECT, LOCATION) == ("babyweight", None)
    with pytest.raises(ApiError, match="must be named"):
        parse_model_reference("projects/other/locations/us-central1/models/m", PROJECT, LOCATION)
    versions = [{"versionId": "1", "versionAliases": ["gold"]}, {"versionId": "2", "versionAliases": ["default"]}]
    assert assign_version_aliases(versions, ["gold"]) == (["default", "gold"], {"1": [], "2": []})


def test_label_filters():
    assert parse_label_filter('labels.run_id="r-1" AND labels.stage=train') == {"run_id": "r-1", "stage": "train"}
    assert parse_label_filter("") == {}
    with pytest.raises(ApiError, match="unsupported filter"):
        parse_label_filter("display_name=babyweight")


def test_floats_are_written_as_tensorflow_serving_writes_them():
    just_above = np.nextafter(np.float32(7.185), np.float32(8))  # six digits would not read back
    values = np.array([0.2, 7.185, just_above, 1e-7, 3.0], dtype=np.float32)
    assert tf_serving_float_values(values) == [0.2, 7.185, 7.18500042, 1e-07, 3.0]
    assert json.dumps(tf_serving_float_values(np.array([[0.2], [float("nan")]], dtype=np.float32))) == "[[0.2], [NaN]]"


def test_instances_become_typed_columns():
    columns = instances_to_columns([BABY, TWIN_GIRL], SIGNATURE)
    assert columns["mother_age"].dtype == np.float32 and columns["mother_age"].tolist() == [26.0, 31.0]
    assert columns["is_male"].tolist() == ["True", "False"]
    with pytest.raises(ApiError, match="does not fit in float32"):
        instances_to_columns([{**BABY, "mother_age": 1e300}], SIGNATURE)
    b64 = instances_to_columns([{**BABY, "is_male": {"b64": "VHJ1ZQ=="}}], SIGNATURE)
    assert b64["is_male"].tolist() == [b"True"]


def test_predictions_take_the_row_format():
    one_output = {"weight": np.array([7.5, 6.25], dtype=np.float32)}
    assert predictions_from_outputs(one_output) == [7.5, 6.25]
    two_outputs = {
        "weight": np.array([7.5, 6.25], dtype=np.float32),
        "label": np.array([b"big", b"small"], dtype=object),
    }
    assert predictions_from_outputs(two_outputs) == [
        {"label": "big", "weight": 7.5},
        {"label": "small", "weight": 6.25},
    ]
    with pytest.raises(ApiError, match="batch size"):
        predictions_from_outputs({"a": np.zeros(2), "b": np.zeros(3)})


def test_concurrent_requests_run_as_one_batch_and_a_refused_batch_is_retried_alone():
    calls: list[int] = []
    first_call_may_finish = threading.Event()

    def double(instances):
        calls.append(len(instances))
        if len(calls) == 1:
            first_call_may_finish.wait(10)
        if any(x < 0 for x in instances):
            raise ApiError("INVALID_ARGUMENT", "negative x")
        return [2 * x for x in instances]

    async def scenario() -> dict:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher = PredictionBatcher(double, executor, max_batch_instances=100)

        async def request(value: int):
            try:
                return await batcher.run([value, value])
            except ApiError as exc:
                return exc.message

        first = asyncio.ensure_future(request(1))
        while not calls:
            await asyncio.sleep(0.001)
        others = [asyncio.ensure_future(request(v)) for v in (2, 3, -4)]
        while batcher.waiting() < 3:
            await asyncio.sleep(0.001)
        first_call_may_finish.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *others), 10)
        executor.shutdown()
        return dict(zip((1, 2, 3, -4), answers))

    assert asyncio.run(scenario()) == {1: [2, 2], 2: [4, 4], 3: [6, 6], -4: "negative x"}
    # One call for the first request, one for the three that queued up together, then the
    # refused batch retried request by request.
    assert calls == [2, 6, 2, 2, 2]


def test_a_batch_takes_at_most_max_batch_instances_and_answers_each_request_its_own_rows():
    calls: list[int] = []
    gate = threading.Event()

    def identity(instances):
        calls.append(len(instances))
        gate.wait(10)
        return list(instances)

    async def scenario() -> list:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher = PredictionBatcher(identity, executor, max_batch_instances=5)
        first = asyncio.ensure_future(batcher.run([0]))
        while not calls:
            await asyncio.sleep(0.001)
        sizes = (3, 2, 4, 1)
        rest = [asyncio.ensure_future(batcher.run([10 * n + i for i in range(n)])) for n in sizes]
        while batcher.waiting() < len(sizes):
            await asyncio.sleep(0.001)
        gate.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        executor.shutdown()
        return answers

    assert asyncio.run(scenario()) == [[0], [30, 31, 32], [20, 21], [40, 41, 42, 43], [10]]
    assert calls == [1, 5, 5]


def test_a_model_that_answers_the_wrong_number_of_rows_fails_only_its_own_requests():
    def short(instances):
        if 99 in instances:
            return instances[:-1]
        return [x + 1 for x in instances]

    async def scenario() -> list:
        executor = ThreadPoolExecutor(max_workers=1)
        batcher = PredictionBatcher(short, executor)
        futures = [batcher.run([1, 2]), batcher.run([99]), batcher.run([3])]
        answers = await asyncio.gather(*futures, return_exceptions=True)
        executor.shutdown()
        return answers

    first, refused, last = asyncio.run(scenario())
    assert first == [2, 3] and last == [4]
    assert isinstance(refused, ApiError) and refused.status == "FAILED_PRECONDITION"
    assert refused.message == "the model answered 0 predictions for 1 instances"


def test_the_public_session_callable_serves_the_same_predictions(saved_models):
    import tensorflow as tf

    from local_cloud.model_service import _session_callable, load_saved_model

    model = load_saved_model(saved_models["v1"], lambda uri: uri)
    columns = instances_to_columns([BABY, TWIN_GIRL], model.input_specs)

    class PublicSessionOnly:  # a TensorFlow without Session._make_callable_from_options
        def __init__(self, session):
            self.make_callable = session.make_callable

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_models["v1"])
        signature = meta_graph.signature_def["serving_default"]
        names = [spec.name for spec in model.input_specs]
        run = _session_callable(PublicSessionOnly(session), feeds=[signature.inputs[n].name for n in names],
                                fetches=[signature.outputs["weight"].name])
        (weights,) = run(*(columns[n] for n in names))
    assert weights.tolist() == pytest.approx([weight_v1(BABY), weight_v1(TWIN_GIRL)], rel=1e-6)
    assert model.predict(columns)["weight"].tolist() == pytest.approx(weights.tolist(), rel=1e-7)
