"""The command line with bad input: one clear line on stderr, a non-zero exit, never a traceback.

Where the answer comes from a server, the server is real: the local Pub/Sub broker behind its
gRPC Publisher (as `mlrelay up` serves it, found through a local cloud's state file), and the
serving container's ASGI app checking instances with its own row format (the babyweight
signature's inputs, without TensorFlow), so the message shown is the server's own.
"""
from __future__ import annotations

import http.server
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from local_cloud.cloud import STATE_FILE
from local_cloud.loopback_server import LoopbackServer, free_port
from local_cloud.pubsub.broker import Broker
from local_cloud.pubsub.grpc_front import serve_publisher
from mlrelay.cli import main
from model_server.app import ModelServerApp
from model_server.row_format import InputSpec, instances_to_columns

PROJECT = "local-project"
RUN = "run-20261127-050000-0123456789"
ENDPOINT_PATH = "/v1/projects/local-project/locations/us-central1/endpoints/babyweight"
BABYWEIGHT_INPUTS = (InputSpec("gestation_weeks", "float32", (None,)), InputSpec("is_male", "string", (None,)),
                     InputSpec("mother_age", "float32", (None,)), InputSpec("plurality", "string", (None,)))
BABY = {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.5}


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory):
    """A local cloud's state directory whose Pub/Sub front is the real broker (topic mlrelay-start)."""
    root = tmp_path_factory.mktemp("local-cloud")
    broker = Broker(PROJECT, workers=1)
    broker.create_topic("mlrelay-start")
    broker.start()
    server, port = serve_publisher(broker)
    (root / STATE_FILE).write_text(json.dumps({"pid": os.getpid(), "project": PROJECT,
                                               "pubsub_emulator_host": f"127.0.0.1:{port}"}))
    (root / "buckets" / "mlrelay").mkdir(parents=True)
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:
        yield root
    finally:
        server.stop(0)
        broker.stop(timeout=2)
        if saved is None:  # `mlrelay publish` points the client at the local cloud's emulator
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved


def predict_like_the_model(instances: list) -> list:
    columns = instances_to_columns(instances, BABYWEIGHT_INPUTS)
    return (3.0 + 0.1 * np.asarray(columns["gestation_weeks"], dtype=np.float64)).tolist()


@pytest.fixture(scope="module")
def endpoint():
    """A serving container's app at a local endpoint's URL, checking instances as the container does."""
    executor = ThreadPoolExecutor(max_workers=1)
    app = ModelServerApp(f"{ENDPOINT_PATH}/health", f"{ENDPOINT_PATH}:predict", executor)
    app.serve(predict_like_the_model)
    server = LoopbackServer(app, "the test endpoint")
    try:
        yield f"{server.url}{ENDPOINT_PATH}"
    finally:
        server.close()
        executor.shutdown(wait=False)


@pytest.fixture(scope="module")
def failing_endpoint():
    """An endpoint whose front answers 500 with an HTML page, as a proxy in the way would."""
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            page = b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{ENDPOINT_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def bad(id, argv, words, *, needs=()):
    return pytest.param(argv, words, needs, id=id)


CASES = [
    bad("publish-an-empty-body", ["publish", "mlrelay-start", "", "--root", "<root>"], "the message body is empty",
        needs=("local_cloud",)),
    bad("publish-to-an-unknown-topic", ["publish", "no-such-topic", "{}", "--root", "<root>"],
        f"there is no topic projects/{PROJECT}/topics/no-such-topic", needs=("local_cloud",)),
    bad("publish-to-a-malformed-topic-name", ["publish", "bad topic!", "{}", "--root", "<root>"],
        "publishing to projects/local-project/topics/bad topic! failed", needs=("local_cloud",)),
    bad("publish-a-file-that-does-not-exist", ["publish", "mlrelay-start", "--file", "/no/such/body.json",
                                               "--root", "<root>"], "No such file", needs=("local_cloud",)),
    bad("publish-with-no-local-cloud", ["publish", "mlrelay-start", "{}", "--root", "<tmp>"],
        "no local cloud is running"),
    bad("predict-instances-not-json", ["predict", "{mother_age: 26}", "--endpoint", "<endpoint>"],
        "instances are not JSON", needs=("endpoint",)),
    bad("predict-instances-an-empty-list", ["predict", "[]", "--endpoint", "<endpoint>"], "non-empty list",
        needs=("endpoint",)),
    bad("predict-instances-with-nan", ["predict", '{"mother_age": NaN}', "--endpoint", "<endpoint>"],
        "NaN is not JSON", needs=("endpoint",)),
    bad("predict-a-string-where-a-number-goes",
        ["predict", json.dumps({**BABY, "mother_age": "old"}), "--endpoint", "<endpoint>"],
        "the endpoint answered 400 INVALID_ARGUMENT: instances[0].mother_age must be a number", needs=("endpoint",)),
    bad("predict-an-instance-missing-a-feature",
        ["predict", json.dumps({k: v for k, v in BABY.items() if k != "plurality"}), "--endpoint", "<endpoint>"],
        "the endpoint answered 400 INVALID_ARGUMENT: instances[0] must have the keys", needs=("endpoint",)),
    bad("predict-instances-not-objects", ["predict", "[1, 2]", "--endpoint", "<endpoint>"],
        "the endpoint answered 400 INVALID_ARGUMENT: instances[0] must be an object", needs=("endpoint",)),
    bad("predict-an-endpoint-answering-an-html-page", ["predict", json.dumps(BABY), "--endpoint", "<failing>"],
        "the endpoint answered 502 <html> <body> <h1>502 Bad Gateway</h1>", needs=("failing_endpoint",)),
    bad("predict-an-endpoint-that-does-not-answer",
        ["predict", json.dumps(BABY), "--endpoint", "http://127.0.0.1:<free_port>" + ENDPOINT_PATH],
        "did not answer"),
    bad("predict-a-malformed-vertex-endpoint", ["predict", json.dumps(BABY), "--endpoint", "projects/p/endpoints/e"],
        "--endpoint must be projects/P/locations/R/endpoints/E"),
    bad("predict-a-vertex-endpoint-without-credentials",
        ["predict", json.dumps(BABY), "--endpoint", "projects/p/locations/us-central1/endpoints/e"],
        "no usable Google credentials"),
    bad("status-of-an-unknown-run", ["status", RUN, "--root", "<root>"], f"no run {RUN}", needs=("local_cloud",)),
    bad("status-of-a-run-id-that-is-a-path", ["status", "../../etc", "--root", "<root>"], "not a run id",
        needs=("local_cloud",)),
    bad("rollback-to-without-a-version", ["rollback", "--to", "babyweight-3", "--root", "<root>"],
        "--to must be MODEL@VERSION", needs=("local_cloud",)),
    bad("rollback-to-a-short-name", ["rollback", "--to", "babyweight@3", "--root", "<root>"],
        "--to must be MODEL@VERSION (projects/P/locations/R/models/M@VERSION", needs=("local_cloud",)),
    bad("rollback-to-no-model", ["rollback", "--to", "@3", "--root", "<root>"], "--to must be MODEL@VERSION",
        needs=("local_cloud",)),
    bad("rollback-with-no-local-cloud", ["rollback", "--root", "<tmp>"], "no local cloud is running"),
    bad("trigger-a-file-that-does-not-exist", ["trigger", "/no/such/file.json", "--root", "<root>"],
        "No such file", needs=("local_cloud",)),
]


@pytest.mark.parametrize("argv, words, needs", CASES)
def test_bad_input_exits_non_zero_with_one_clear_line(request, tmp_path, monkeypatch, capsys, argv, words, needs):
    # No credentials to find: a Vertex AI endpoint must say so, not print a traceback.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    values = {"tmp": str(tmp_path), "free_port": str(free_port())}
    if "local_cloud" in needs:
        values["root"] = str(request.getfixturevalue("local_cloud"))
    if "endpoint" in needs:
        values["endpoint"] = request.getfixturevalue("endpoint")
    if "failing_endpoint" in needs:
        values["failing"] = request.getfixturevalue("failing_endpoint")
    for key, value in values.items():
        argv = [arg.replace(f"<{key}>", value) for arg in argv]

    code = main(argv)

    out, err = capsys.readouterr()
    assert code != 0, out
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlrelay {argv[0]}: "), err
    assert words in lines[0], err


def test_a_good_request_to_the_same_endpoint_is_answered(endpoint, capsys):
    assert main(["predict", json.dumps(BABY), "--endpoint", endpoint]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == pytest.approx([3.0 + 3.95])
