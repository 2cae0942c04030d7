"""``python -m model_server`` as Vertex AI runs the serving container: the AIP_* variables, health
200 once the model is loaded, Vertex's predict JSON, the local endpoint's predictions for the same
instances, Google's error JSON for bad bodies, and a clean end on SIGTERM."""

from __future__ import annotations

import json

import pytest

from model_server.bodies import MAX_PREDICT_PAYLOAD_BYTES
from tests.conftest import wait_until
from tests.local_cloud.vertex.conftest import BABY, PARENT, TWIN_GIRL, deployed_version, weight_v1
from tests.model_server.conftest import HEALTH_ROUTE, PREDICT_ROUTE

INSTANCES = [BABY, TWIN_GIRL, {**BABY, "mother_age": 41, "gestation_weeks": 28.25}]


def test_it_serves_the_local_endpoints_predictions_and_ends_on_sigterm(start_model_server, saved_models,
                                                                        service_factory):
    server = start_model_server(saved_models["v1"])
    status, answer = server.predict(INSTANCES)
    assert status == 200, answer
    assert list(answer) == ["predictions"]
    assert answer["predictions"] == pytest.approx([weight_v1(row) for row in INSTANCES], rel=1e-6)

    service, rest = service_factory()
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight", {"0": 100})
    status, local = rest.predict("babyweight", INSTANCES)
    assert status == 200, local
    assert answer["predictions"] == local["predictions"]  # the same row format, to the digit

    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def test_bad_bodies_get_400_with_the_reason_in_googles_error_json(start_model_server, saved_models):
    server = start_model_server(saved_models["v1"])
    bad_requests = {
        "not json": (b"{instances: [", "not valid JSON"),
        "empty body": (b"", '"instances"'),
        "no instances": (json.dumps({"inputs": [BABY]}).encode(), '"instances"'),
        "instances not a list": (json.dumps({"instances": BABY}).encode(), "non-empty list"),
        "empty instances": (json.dumps({"instances": []}).encode(), "non-empty list"),
        "missing feature": (json.dumps({"instances": [{k: v for k, v in BABY.items() if k != "plurality"}]}).encode(),
                            "missing ['plurality']"),
        "string for a float": (json.dumps({"instances": [BABY, {**BABY, "mother_age": "26"}]}).encode(),
                               "instances[1].mother_age must be a number"),
        "too many instances": (json.dumps({"instances": [BABY] * 10_001}).encode(), "at most 10000 instances"),
        "too large": (b" " * (MAX_PREDICT_PAYLOAD_BYTES + 1), "exceeds the limit"),
    }
    for case, (raw, phrase) in bad_requests.items():
        status, answer, response = server.call("POST", PREDICT_ROUTE, raw)
        assert status == 400, (case, answer)
        assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT", case
        assert phrase in answer["error"]["message"], (case, answer)
    assert response.getheader("connection") == "close"  # the oversized body's connection is not reused

    status, answer, _ = server.call("GET", "/elsewhere")
    assert status == 404 and answer["error"]["status"] == "NOT_FOUND"
    status, answer, _ = server.call("GET", PREDICT_ROUTE)
    assert status == 404
    # a bad request changes nothing: the next one is served
    status, answer = server.predict([BABY])
    assert status == 200 and answer["predictions"] == pytest.approx([weight_v1(BABY)], rel=1e-6)


def test_a_model_that_cannot_load_keeps_health_failing_with_the_reason(start_model_server, tmp_path):
    server = start_model_server(str(tmp_path / "no-such-model"), ready=False)
    wait_until(lambda: "could not be loaded" in server.log(), 120, "the load failure in the server's log")
    status, answer, _ = server.call("GET", HEALTH_ROUTE)
    assert status == 500 and "no SavedModel directory" in answer["error"]["message"]
    status, answer = server.predict([BABY])
    assert status == 500 and answer["error"]["status"] == "INTERNAL"
    assert server.stop() == 0


def test_the_routes_and_port_every_model_upload_names_are_the_servers_own_defaults():
    """The upload body (functions/) and the server (its own image) each keep the contract's values."""
    from functions import request_bodies
    from model_server import __main__ as server

    assert (request_bodies.SERVING_HEALTH_ROUTE, request_bodies.SERVING_PREDICT_ROUTE, request_bodies.SERVING_PORT) == (
        server.DEFAULT_HEALTH_ROUTE, server.DEFAULT_PREDICT_ROUTE, server.DEFAULT_PORT)
    assert server.settings({}) == {"port": 8080, "health_route": "/health", "predict_route": "/predict",
                                   "storage_uri": ""}
    with pytest.raises(ValueError, match="AIP_HTTP_PORT"):
        server.settings({"AIP_HTTP_PORT": "http"})
