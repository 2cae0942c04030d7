"""What the tests of the local Vertex AI share: two babyweight SavedModels, a REST client, a service.

The SavedModels are made here with plain TensorFlow and carry the trainer's serving
signature (is_male/plurality strings, mother_age/gestation_weeks float32, output "weight").
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from local_cloud.vertex.http import ModelServiceServer
from local_cloud.vertex.registry import ModelService

PROJECT, LOCATION = "local-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
# mlrelay's serving image: without a containerSpec.command the local endpoint runs its entry point.
IMAGE = "mlrelay-server:local"
BABY = {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.5}
TWIN_GIRL = {"is_male": "False", "mother_age": 31, "plurality": "Twins(2)", "gestation_weeks": 35.0}


# Two "versions" of the babyweight model, told apart by their formulas.
def weight_v1(row: dict) -> float:
    single = 1.0 if row["plurality"] == "Single(1)" else 0.0
    male = 1.0 if row["is_male"] == "True" else 0.0
    return 1.0 + 0.5 * male + 0.02 * row["mother_age"] + 0.15 * row["gestation_weeks"] + single


def weight_v2(row: dict) -> float:
    return 3.0 + 0.1 * row["gestation_weeks"]


@pytest.fixture(scope="package")
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
            "deployedModel": {"model": model, "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-2"},
                                                                     "minReplicaCount": 1}},
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
    started: list[tuple[ModelService, ModelServiceServer]] = []

    def start(state_dir: Path = tmp_path / "state", **options) -> tuple[ModelService, Rest]:
        service = ModelService(state_dir, PROJECT, LOCATION, **options)
        server = ModelServiceServer(service)
        started.append((service, server))
        return service, Rest(server.port)

    yield start
    for service, server in started:
        service.close()
        server.close()


def deployed_version(rest: Rest, endpoint: str, model: str, traffic_split: dict) -> str:
    done = rest.wait(rest.deploy(endpoint, model, traffic_split))
    assert done["done"] and "error" not in done, done
    return done["response"]["deployedModel"]["id"]

