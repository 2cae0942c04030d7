"""`mlrelay console`: read-only routes over the bucket; unknown runs are 404, other methods 405; loopback only."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from mlrelay.cli import main
from mlrelay.console import Console, check_host, create_app, is_loopback
from tests.mlrelay.test_report import FAILED, FAILURE, PREVIOUS, REJECTED, RUN, bucket  # noqa: F401 (fixture)


@pytest.fixture
def client(bucket):  # noqa: F811
    return create_app(bucket).test_client()


def test_the_runs_page_lists_every_run_newest_first_with_the_endpoints_traffic(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    order = [text.index(f'data-run="{run_id}"') for run_id in (REJECTED, FAILED, RUN, PREVIOUS)]
    assert order == sorted(order)
    assert f'href="/runs/{RUN}"' in text
    assert FAILURE in text and "1.221" in text  # decision and RMSE columns
    assert 'id="traffic"' in text and "2:100%" in text  # the last traffic change's split
    assert text.count("<tr>") >= 4  # the serving history: first, canary, promoted
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_runs_page_is_its_report_with_a_way_back(client):
    response = client.get(f"/runs/{RUN}")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert text.count("<svg") == 4  # no training_report.json: three plots say not recorded
    assert 'href="/"' in text
    assert client.head(f"/runs/{RUN}").status_code == 200


@pytest.mark.parametrize("path", ["/runs/run-20261201-235959-ffffffffff", "/runs/not-a-run", "/runs/..%2f..",
                                  "/nowhere", "/runs/"])
def test_what_is_not_there_is_404_never_500(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "Not found" in response.get_data(as_text=True)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_answered(client, method):
    for path in ("/", f"/runs/{RUN}", "/nowhere"):
        response = client.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == "GET, HEAD"


def test_a_request_for_another_host_name_is_refused(client):
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:8642"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8642"}).status_code == 200


def test_an_empty_bucket_has_a_page_too(tmp_path):
    from functions.local_adapters import LocalStorage
    from functions.run_store import RunStore

    response = create_app(RunStore(LocalStorage(tmp_path / "none"), "b")).test_client().get("/")
    assert response.status_code == 200 and "No runs yet" in response.get_data(as_text=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    check_host(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.4", "::", "example.com"])
def test_a_host_that_is_not_loopback_is_refused_unless_allowed(host, tmp_path, capsys):
    with pytest.raises(ValueError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    check_host(host, allow_remote=True)
    assert main(["console", "--host", host, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlrelay console: ") and "--allow-remote" in err and err.count("\n") == 1


def test_the_console_serves_over_http_on_loopback(bucket):  # noqa: F811
    console = Console(bucket, "127.0.0.1", 0, quiet=True).start()
    try:
        with urllib.request.urlopen(console.url, timeout=10) as response:
            assert response.status == 200 and RUN in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(console.url, data=b"x", method="POST"), timeout=10)
        assert refused.value.code == 405
    finally:
        console.stop()


def test_the_local_clouds_dead_letters_are_listed_without_taking_them(bucket, tmp_path):  # noqa: F811
    from local_cloud.pubsub.broker import Broker
    from mlrelay.console.app import local_dead_letters
    from mlrelay.dead_letters import DEAD_LETTER_SUBSCRIPTION

    state = tmp_path / "state"
    broker = Broker("local-project", store=state / "pubsub.sqlite")
    broker.create_topic("mlrelay-dead-letter")
    broker.subscribe_pull(DEAD_LETTER_SUBSCRIPTION, "mlrelay-dead-letter")
    broker.publish("mlrelay-dead-letter", b'{"limit": 5}', {
        "CloudPubSubDeadLetterSourceSubscription": "eventarc-start-pipeline",
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceDeliveryErrorMessage": "HTTP 500 from the function"})
    try:
        text = create_app(bucket, dead_letters=local_dead_letters(state)).test_client().get("/").get_data(as_text=True)
        assert 'id="dead-letters"' in text and "start_pipeline" in text and "HTTP 500 from the function" in text
        assert "&#34;limit&#34;: 5" in text or "&quot;limit&quot;: 5" in text
        assert len(broker.pull(DEAD_LETTER_SUBSCRIPTION, 10)) == 1  # still there, never leased by the page
    finally:
        broker.stop()
    empty = create_app(bucket, dead_letters=local_dead_letters(tmp_path / "none")).test_client().get("/")
    assert "None: every event was delivered." in empty.get_data(as_text=True)
