"""The local side of the platform: the bucket directory as objects, and the local cloud's REST
errors sorted into the platform's kinds, as the Google Cloud side sorts Google's."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions.local_adapters import LocalApi, LocalStorage, is_staging_name
from functions.platform import AlreadyExists, NotFound, TransientError


def test_reads_are_bounded_and_a_missing_object_is_not_found(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write("a/b.json", b"12345")
    assert storage.read("a/b.json", max_bytes=5) == b"12345"
    with pytest.raises(ValueError, match="larger than 4 bytes"):
        storage.read("a/b.json", max_bytes=4)
    with pytest.raises(NotFound):
        storage.read("a/none.json")
    with pytest.raises(NotFound):
        storage.read("a")  # a folder is not an object


def test_of_many_racing_creates_exactly_one_wins_and_its_bytes_stay(tmp_path):
    storage = LocalStorage(tmp_path)
    won: list[int] = []
    barrier = threading.Barrier(8)

    def create(index: int) -> None:
        barrier.wait()
        if storage.create("runs/x/_LAUNCHED", str(index).encode()):
            won.append(index)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert storage.read("runs/x/_LAUNCHED") == str(won[0]).encode()


def test_staged_writes_are_never_listed_and_folders_list_one_level(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write("runs/r1/request.json", b"{}")
    storage.write("runs/r2/events/x.json", b"{}")
    (tmp_path / "runs" / "r1" / f".request.json.abc{'.mlrelay-part'}").write_bytes(b"half")
    assert storage.list("runs/") == ["runs/r1/request.json", "runs/r2/events/x.json"]
    assert storage.list_folders("runs/") == ["runs/r1/", "runs/r2/"]
    assert storage.list_folders("runs") == [] and storage.list_folders("none/") == []
    assert is_staging_name("runs/r1/.request.json.abc.mlrelay-part")
    storage.delete("runs/r1/request.json")
    storage.delete("runs/r1/request.json")  # deleting what is gone is fine
    assert not storage.exists("runs/r1/request.json")


class _Answers(BaseHTTPRequestHandler):
    """Answers each path with the status it names: /status/409 -> 409 with a Google error body."""

    def do_GET(self):
        code = int(self.path.rsplit("/", 1)[-1])
        body = json.dumps({"error": {"code": code, "message": f"said {code}"}} if code >= 400 else {"ok": True})
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LocalApi(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5)
    server.shutdown()


@pytest.mark.parametrize("code, kind", [
    (409, AlreadyExists), (404, NotFound), (429, TransientError), (503, TransientError), (400, RuntimeError),
])
def test_api_errors_are_sorted_into_the_platforms_kinds_with_the_apis_message(api, code, kind):
    with pytest.raises(kind, match=f"said {code}") as raised:
        api.call("GET", f"/status/{code}")
    if kind is RuntimeError:  # a bug or a misconfiguration: not to be retried, not taken for done
        assert not isinstance(raised.value, (TransientError, AlreadyExists, NotFound))


def test_an_answer_is_json_and_an_unreachable_cloud_is_transient(api):
    assert api.call("GET", "/status/200") == {"ok": True}
    with pytest.raises(TransientError):
        LocalApi("http://127.0.0.1:1", timeout_s=2).call("GET", "/anything")
