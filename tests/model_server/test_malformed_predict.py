"""Bad predict requests get a 400 naming the problem, never a 500, at both fronts that take them.

The same table goes to the serving container (``python -m model_server``, started as Vertex AI
starts it, on the babyweight SavedModel) and to the local Vertex AI endpoint's HTTP front
(``local_cloud.vertex.http``, which reads the body and relays it to that container). Each answer
must be Google's error JSON with status INVALID_ARGUMENT and a message naming what is wrong; after
the whole table, both still serve a good request.
"""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

import pytest

from local_cloud.vertex.http import ModelServiceServer
from local_cloud.vertex.registry import ModelService
from model_server.bodies import MAX_PREDICT_PAYLOAD_BYTES
from tests.conftest import wait_until
from tests.local_cloud.vertex.conftest import BABY, LOCATION, PARENT, PROJECT, Rest, deployed_version
from tests.model_server.conftest import PREDICT_ROUTE, START_TIMEOUT_S, ModelServer

ENDPOINT_PREDICT = f"/v1/{PARENT}/endpoints/babyweight:predict"


@dataclass(frozen=True)
class Bad:
    id: str
    body: bytes
    words: str
    content_type: str = "application/json"


def body(instances) -> bytes:
    return json.dumps({"instances": instances}).encode()


def with_value(text: str) -> bytes:
    """A request whose one instance's mother_age is `text`, written as is (not valid JSON, maybe)."""
    return (b'{"instances": [{"is_male": "True", "mother_age": ' + text.encode() +
            b', "plurality": "Single(1)", "gestation_weeks": 39.5}]}')


def without(key: str) -> dict:
    return {k: v for k, v in BABY.items() if k != key}


# Nested just under what Python's parser takes: it parses, so the row format must refuse it.
ALMOST_TOO_DEEP = 900

CASES = [
    Bad("nan", with_value("NaN"), "NaN is not JSON"),
    Bad("infinity", with_value("Infinity"), "Infinity is not JSON"),
    Bad("minus-infinity", with_value("-Infinity"), "-Infinity is not JSON"),
    Bad("1e400", with_value("1e400"), "too large for a double"),
    Bad("an-integer-of-5000-digits", with_value("9" * 5000), "not valid JSON"),
    Bad("an-integer-past-a-doubles-range", body([{**BABY, "mother_age": 10**400}]),
        "instances[0].mother_age is too large for float32"),
    Bad("nesting-10000-deep", b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested too deeply"),
    Bad("a-feature-nested-900-deep", with_value("[" * ALMOST_TOO_DEEP + "26" + "]" * ALMOST_TOO_DEEP),
        "instances[0].mother_age must be a number"),
    Bad("body-not-json", b"{instances: [", "not valid JSON"),
    Bad("body-not-utf8", b'{"instances": [{"is_male": "\xff"}]}', "not UTF-8"),
    Bad("body-utf16", json.dumps({"instances": [BABY]}).encode("utf-16"), "not UTF-8"),
    Bad("body-empty", b"", '"instances"'),
    Bad("body-a-json-array", json.dumps([BABY]).encode(), '"instances"'),
    Bad("no-instances", json.dumps({"inputs": [BABY]}).encode(), '"instances"'),
    Bad("instances-not-a-list", json.dumps({"instances": BABY}).encode(), "non-empty list"),
    Bad("instances-null", json.dumps({"instances": None}).encode(), "non-empty list"),
    Bad("instances-empty", body([]), "non-empty list"),
    Bad("an-instance-not-an-object", body([[True, 26, "Single(1)", 39]]), "instances[0] must be an object"),
    Bad("an-instance-missing-a-feature", body([without("plurality")]), "missing ['plurality']"),
    Bad("an-instance-with-an-unknown-feature", body([{**BABY, "weight_pounds": 7.5}]), "unknown ['weight_pounds']"),
    Bad("a-string-where-a-number-goes", body([BABY, {**BABY, "mother_age": "26"}]),
        "instances[1].mother_age must be a number"),
    Bad("a-boolean-where-a-number-goes", body([{**BABY, "gestation_weeks": True}]),
        "instances[0].gestation_weeks must be a number"),
    Bad("null-where-a-number-goes", body([{**BABY, "gestation_weeks": None}]),
        "instances[0].gestation_weeks must be a number"),
    Bad("a-number-where-a-string-goes", body([{**BABY, "is_male": 1}]), "instances[0].is_male must be a string"),
    Bad("bad-base64-where-a-string-goes", body([{**BABY, "plurality": {"b64": "not base64!"}}]),
        "instances[0].plurality must be a string"),
    Bad("too-many-instances", body([BABY] * 10_001), "at most 10000 instances"),
    Bad("body-over-the-size-limit", b" " * (MAX_PREDICT_PAYLOAD_BYTES + 1), "exceeds the limit"),
]


@pytest.fixture(scope="module")
def model_server(saved_models, tmp_path_factory):
    """The serving container on the babyweight SavedModel: the port and path of its predict route."""
    server = ModelServer(saved_models["v1"], tmp_path_factory.mktemp("model_server") / "server.log")
    try:
        wait_until(lambda: server.health() == 200, START_TIMEOUT_S, "the model server's health route to answer 200")
        yield server.port, PREDICT_ROUTE
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def vertex_endpoint(saved_models, tmp_path_factory):
    """The local Vertex AI with the babyweight model deployed: the port and path of its predict method."""
    service = ModelService(tmp_path_factory.mktemp("vertex") / "state", PROJECT, LOCATION)
    server = ModelServiceServer(service)
    try:
        rest = Rest(server.port)
        service.create_endpoint("babyweight", "babyweight")
        rest.upload(saved_models["v1"], modelId="babyweight")
        deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
        yield server.port, ENDPOINT_PREDICT
    finally:
        service.close()
        server.close()


def post(port: int, path: str, raw: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, raw, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(params=["model-server", "vertex-endpoint"])
def front(request):
    return request.getfixturevalue(request.param.replace("-", "_"))


def test_the_table_holds_distinct_inputs():
    assert len({case.id for case in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_a_bad_predict_request_is_a_400_that_names_the_problem(front, case):
    status, answer = post(*front, case.body, case.content_type)

    assert status == 400, answer
    assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT", answer
    assert case.words in answer["error"]["message"], answer


def test_after_every_bad_request_a_good_one_is_served(front):
    status, answer = post(*front, body([BABY]))
    assert status == 200 and len(answer["predictions"]) == 1, answer
