"""The command line against a Cloud Storage bucket (a local GCS emulator) and its error messages."""
from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import pytest

from events.ledger import LedgerEvent
from functions.run_store import RunStore
from mlrelay.cli import main
from tests.fakes.fake_gcs import gcs_emulator

BUCKET = "chain-bucket"
RUN = "run-20261127-050000-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    with pytest.MonkeyPatch.context() as patch, gcs_emulator(_free_port(), BUCKET) as url:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        yield url


def test_trigger_uploads_under_triggers_and_status_folds_the_cloud_ledger(emulator, tmp_path, capsys):
    request = tmp_path / "nightly.json"
    request.write_text('{"limit": 1000}')
    assert main(["trigger", str(request), "--bucket", f"gs://{BUCKET}"]) == 0
    assert f"gs://{BUCKET}/triggers/nightly.json" in capsys.readouterr().out

    from functions.gcp_adapters import GcsStorage

    storage = GcsStorage(BUCKET)
    assert storage.read("triggers/nightly.json") == b'{"limit": 1000}'
    runs = RunStore(storage, BUCKET)
    for state, stage, minute in (("requested", "request", 0), ("preprocessing", "preprocess", 1),
                                 ("failed", "preprocess", 3)):
        event = LedgerEvent(RUN, stage, state, datetime(2026, 11, 27, 5, minute, tzinfo=timezone.utc),
                            details={"reason": "Dataflow job 7 failed"} if state == "failed" else {})
        runs.append(event)

    assert main(["status", "--bucket", f"gs://{BUCKET}", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["run_id"] == RUN and run["state"] == "failed" and run["reason"] == "Dataflow job 7 failed"
    assert run["stages"]["preprocess"]["seconds"] == 120.0
    assert main(["status", "--bucket", f"gs://{BUCKET}"]) == 0
    assert "failed" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["status", "--bucket", "mybucket"], "--bucket must be gs://BUCKET"),
    (["predict", "{}", "--endpoint", "projects/p"], "projects/P/locations/R/endpoints/E"),
    (["predict", "not json", "--endpoint", "http://127.0.0.1:9"], "not JSON"),
    (["predict", "[]", "--endpoint", "http://127.0.0.1:9"], "non-empty list"),
    (["trigger", "/no/such/file.json", "--bucket", "gs://b"], "No such file"),
    (["rollback", "--to", "babyweight-3"], "--to must be MODEL@VERSION"),
    (["publish", "mlrelay-start"], "give the message body, or --file"),
    (["publish", "mlrelay-start", "{}", "--file", "x.json"], "not both"),
    (["publish", "mlrelay-start", ""], "the message body is empty"),
    (["publish", "mlrelay-start", "--file", "/no/such/body.json"], "No such file"),
])
def test_bad_arguments_get_a_clear_message_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_local_commands_say_when_no_local_cloud_runs(tmp_path, capsys):
    request = tmp_path / "r.json"
    request.write_text("{}")
    assert main(["trigger", str(request), "--root", str(tmp_path)]) == 2
    assert "mlrelay up" in capsys.readouterr().err


def test_preprocess_and_train_hand_their_options_to_the_pipeline_and_the_trainer(tmp_path, capsys):
    missing = tmp_path / "none.parquet"
    assert main(["preprocess", "--source", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert "none.parquet" in capsys.readouterr().err
    assert not (tmp_path / "out" / "_MANIFEST.json").exists()
    assert main(["train", "--data-dir", str(tmp_path), "--job-dir", str(tmp_path / "job")]) != 0
    assert "shard" in capsys.readouterr().err.lower()


def test_predict_says_why_the_endpoint_refused_a_request(capsys):
    """The endpoint's own reason (Google's error JSON), not just "HTTP Error 400"."""
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                         "message": "instances[0].mother_age must be a number"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/projects/p/locations/l/endpoints/e"
        assert main(["predict", '{"mother_age": "old"}', "--endpoint", endpoint]) == 2
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert "400 INVALID_ARGUMENT: instances[0].mother_age must be a number" in err


def test_releases_of_an_endpoint_that_never_changed_say_so(tmp_path, capsys):
    (tmp_path / "buckets" / "mlrelay").mkdir(parents=True)
    assert main(["releases", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no releases yet"
