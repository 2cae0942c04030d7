"""The HTTP front: Google's error JSON for bad requests, request bodies and answers held against
Vertex AI's discovery document, body limits, concurrent clients, loopback only, and the batcher
that runs the predictions arriving together as one model call.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from local_cloud import discovery
from local_cloud.vertex.http import ModelServiceServer
from local_cloud.vertex.registry import ModelService
from local_cloud.vertex.rest_rules import ApiError
from model_server.batcher import PredictionBatcher
from tests.local_cloud.vertex.conftest import BABY, IMAGE, PARENT, TWIN_GIRL, Rest, deployed_version, weight_v1


# --- bad input -------------------------------------------------------------------------------


def test_bad_predict_requests_get_400_with_google_error_json(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    service.create_endpoint("empty", "empty")
    rest.upload(saved_models["v1"], modelId="babyweight",
                model={"containerSpec": {"imageUri": IMAGE, "args": ["--max-instances", "5"]}})
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
        # strict JSON, as Google's front ends parse it: a model must not predict from these
        "NaN": (b'{"instances": [{"is_male": "True", "mother_age": NaN, "plurality": "Single(1)", '
                b'"gestation_weeks": 39}]}', "NaN is not JSON"),
        "Infinity": (b'{"instances": [{"is_male": "True", "mother_age": -Infinity, "plurality": "Single(1)", '
                     b'"gestation_weeks": 39}]}', "-Infinity is not JSON"),
        "a double past its range": (b'{"instances": [{"is_male": "True", "mother_age": 1e400, '
                                    b'"plurality": "Single(1)", "gestation_weeks": 39}]}', "too large for a double"),
        "an integer past a double's range": (json.dumps({"instances": [{**BABY, "mother_age": 10**400}]}).encode(),
                                             "instances[0].mother_age is too large for float32"),
        "nesting too deep": (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
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


def test_bodies_outside_the_discovery_schemas_are_refused_and_change_nothing(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed = deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    model = {"displayName": "babyweight", "artifactUri": saved_models["v2"], "containerSpec": {"imageUri": "i"}}
    resources = {"machineSpec": {"machineType": "n1-standard-2"}, "minReplicaCount": 1}
    refused = [
        ("models:upload", {"parentModel": f"{PARENT}/models/babyweight", "model": {**model, "artifactUrl": "x"}},
         "model.artifactUrl: unknown field"),
        ("models:upload", {"modelId": "other", "model": {**model, "labels": {"run_id": 7}}},
         'model.labels["run_id"]: expected a JSON string, got 7'),
        ("models:upload", {"modelId": "other", "model": {"artifactUri": saved_models["v2"]}},
         "model.displayName: required field missing"),
        ("models:upload", {"modelId": "other"}, "model: required field missing"),
        ("endpoints/babyweight:deployModel",
         {"deployedModel": {"model": f"{PARENT}/models/babyweight", "dedicatedResources": {**resources,
                                                                                          "minReplicaCount": "1"}}},
         "deployedModel.dedicatedResources.minReplicaCount: expected a JSON number without a fraction"),
        ("endpoints/babyweight:deployModel",
         {"deployedModel": {"model": f"{PARENT}/models/babyweight", "dedicatedResources": resources},
          "trafficSplit": {"0": "100"}}, 'trafficSplit["0"]: expected a JSON number'),
        ("endpoints/babyweight:deployModel",
         {"deployedModel": {"modelName": f"{PARENT}/models/babyweight"}}, "deployedModel.modelName: unknown field"),
        ("endpoints/babyweight:undeployModel", {"deployedModelId": int(deployed)},
         f"deployedModelId: expected a JSON string, got {int(deployed)}"),
        ("endpoints/babyweight:undeployModel", {}, "deployedModelId: required field missing"),
    ]
    for path, body, message in refused:
        status, answer = rest.call("POST", path, body)
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
        assert message in answer["error"]["message"], answer
    assert [v["versionId"] for v in rest.ok("GET", "models/babyweight:listVersions")["models"]] == ["1"]
    assert rest.call("GET", "models/other")[0] == 404
    assert [d["id"] for d in rest.ok("GET", "endpoints/babyweight")["deployedModels"]] == [deployed]


def test_the_front_answers_in_the_documented_response_schemas(service_factory, saved_models):
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    vertex = "aiplatform.projects.locations"
    first = rest.upload(saved_models["v1"], modelId="babyweight", model={"labels": {"run_id": "r1"}})
    second = rest.upload(saved_models["v2"], parentModel=f"{PARENT}/models/babyweight")
    deploying = rest.deploy("babyweight", f"{PARENT}/models/babyweight@1", {"0": 100})
    deployed = rest.wait(deploying)
    canary = rest.wait(rest.deploy("babyweight", f"{PARENT}/models/babyweight@2", {"0": 10,
                       deployed["response"]["deployedModel"]["id"]: 90}))
    undeployed = rest.ok("POST", "endpoints/babyweight:undeployModel", {
        "deployedModelId": canary["response"]["deployedModel"]["id"],
        "trafficSplit": {deployed["response"]["deployedModel"]["id"]: 100}})
    answers = [
        (f"{vertex}.models.upload", first), (f"{vertex}.models.upload", second),
        (f"{vertex}.endpoints.deployModel", deploying),
        (f"{vertex}.operations.wait", deployed), (f"{vertex}.operations.wait", canary),
        (f"{vertex}.endpoints.undeployModel", undeployed),
        (f"{vertex}.operations.get", rest.ok("GET", f"operations/{deploying['name'].rsplit('/', 1)[1]}")),
        (f"{vertex}.models.get", rest.ok("GET", "models/babyweight@1")),
        (f"{vertex}.models.listVersions", rest.ok("GET", "models/babyweight:listVersions")),
        (f"{vertex}.endpoints.get", rest.ok("GET", "endpoints/babyweight")),
        (f"{vertex}.endpoints.predict", rest.predict("babyweight", [BABY])[1]),
    ]
    for method_id, answer in answers:
        assert discovery.response_errors(method_id, answer) == [], (method_id, answer)


def test_predict_bodies_are_not_held_against_the_schema(service_factory, saved_models, monkeypatch):
    """Predict is the hot path, and its instances are free-form: the schema check is not on it."""
    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    checked: list[str] = []
    original = discovery.check_request
    monkeypatch.setattr(discovery, "check_request", lambda method_id, body, version=None: (
        checked.append(method_id), original(method_id, body, version))[1])
    assert rest.predict("babyweight", [BABY])[0] == 200
    assert checked == []
    assert rest.call("POST", "endpoints/babyweight:undeployModel", {})[0] == 400
    assert checked == ["aiplatform.projects.locations.endpoints.undeployModel"]


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


def test_a_client_still_sending_a_refused_body_reads_the_answer_not_a_reset(service_factory):
    """The 400 for an oversized body is sent only once the body has arrived, so a slow sender
    (a large `mlrelay predict` over a slow link) gets the reason, not a broken pipe."""
    service, rest = service_factory()
    size = 1_572_864 + 4096
    with socket.create_connection(("127.0.0.1", rest.connection.port), timeout=30) as client:
        client.sendall(f"POST /v1/{PARENT}/endpoints/babyweight:predict HTTP/1.1\r\nHost: x\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        time.sleep(0.3)  # the server has the headers and could answer now
        for _ in range(size // 4096):
            client.sendall(b" " * 4096)
        answer = b""
        while b"exceeds the limit" not in answer:
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"exceeds the limit" in answer


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


def test_serve_binds_loopback_only(tmp_path):
    service = ModelService(tmp_path / "state")
    with pytest.raises(ValueError, match="loopback"):
        ModelServiceServer(service, host="0.0.0.0")
    service.close()


# --- the batcher -----------------------------------------------------------------------------


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


def test_an_awaited_predict_batches_alike_and_a_refused_batch_is_answered_request_by_request():
    calls: list[list] = []

    async def container(instances):
        calls.append(list(instances))
        await asyncio.sleep(0.01)
        if "bad" in instances:
            raise ApiError("INVALID_ARGUMENT", f"instances[{instances.index('bad')}] is bad")
        return [f"p{x}" for x in instances]

    async def scenario() -> list:
        batcher = PredictionBatcher(container, None)
        first = batcher.run([0])
        rest = [batcher.run([1, 2]), batcher.run(["bad"]), batcher.run([3])]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    first, both, refused, last = asyncio.run(scenario())
    assert first == ["p0"] and both == ["p1", "p2"] and last == ["p3"]
    assert isinstance(refused, ApiError) and refused.message == "instances[0] is bad"  # its own index
    # one call for all that arrived together, refused; then each request alone, awaited together
    assert calls[0] == [0, 1, 2, "bad", 3] and sorted(map(str, calls[1:])) == ["['bad']", "[0]", "[1, 2]", "[3]"]
