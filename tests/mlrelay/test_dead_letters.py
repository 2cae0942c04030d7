"""`mlrelay dead-letters list|replay` against a local broker behind its gRPC front, found the way the
command finds a running local cloud (its state file).

The dead letters are made the way the chain makes them: a push subscription whose function keeps
failing forwards the event to the dead-letter topic after its last attempt.
"""
from __future__ import annotations

import base64
import json
import os

import pytest

from local_cloud.cloud import STATE_FILE
from local_cloud.pubsub.broker import Broker
from local_cloud.pubsub.eventarc import PushEnvelope, StorageObjectFinalized
from local_cloud.pubsub.grpc_front import serve_publisher
from mlrelay.cli import main
from mlrelay.dead_letters import DEAD_LETTER_SUBSCRIPTION
from tests.fakes.push_endpoint import Endpoint

PROJECT = "mlrelay-local"
BUCKET = "pipeline-bucket"
STORAGE_TOPIC = f"eventarc-storage-{BUCKET}"
RETRY = {"retry": True, "min_backoff_s": 0.01, "max_backoff_s": 0.02, "max_delivery_attempts": 5,
         "dead_letter_topic": "mlrelay-dead-letter"}
MANIFEST = {"kind": "storage#object", "bucket": BUCKET, "name": "runs/r-1/preprocess/_MANIFEST.json",
            "generation": "1700000000000001", "updated": "2026-01-02T03:04:05.678Z"}


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """A broker with two failing triggers and a dead-letter subscription; the CLI pointed at it."""
    endpoint = Endpoint()
    endpoint.statuses["/start"] = endpoint.statuses["/preprocess"] = [500]
    broker = Broker(PROJECT, store=tmp_path / "pubsub.sqlite")
    for topic in ("mlrelay-start", "mlrelay-dead-letter", STORAGE_TOPIC):
        broker.create_topic(topic)
    broker.subscribe_pull(DEAD_LETTER_SUBSCRIPTION, "mlrelay-dead-letter")
    broker.subscribe_push("eventarc-start-pipeline", "mlrelay-start", endpoint.url("/start"),
                          event_format=PushEnvelope(), **RETRY)
    broker.subscribe_push("eventarc-on-preprocess-output", STORAGE_TOPIC, endpoint.url("/preprocess"),
                          event_format=StorageObjectFinalized(BUCKET), **RETRY)
    broker.start()
    server, port = serve_publisher(broker)
    root = tmp_path / "root"
    root.mkdir()
    (root / STATE_FILE).write_text(json.dumps({"pid": os.getpid(), "project": PROJECT,
                                               "pubsub_emulator_host": f"127.0.0.1:{port}"}))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "unset")  # the command sets it; undone after the test
    start = broker.publish("mlrelay-start", b'{"limit": 1000}', {"origin": "cli"})
    storage = broker.publish(STORAGE_TOPIC, json.dumps(MANIFEST).encode(),
                             {"ce-subject": f"objects/{MANIFEST['name']}"})
    assert broker.wait_idle(10)
    yield broker, endpoint, root, {"start": start, "storage": storage}
    server.stop(0)
    broker.stop(timeout=2)
    endpoint.close()


def _list(root, capsys) -> list[dict]:
    assert main(["dead-letters", "list", "--json", "--root", str(root)]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_shows_each_dead_letter_and_leaves_it_there(chain, capsys):
    broker, _, root, sources = chain
    letters = {letter["function"]: letter for letter in _list(root, capsys)}
    assert set(letters) == {"start_pipeline", "on_preprocess_output"}
    start, storage = letters["start_pipeline"], letters["on_preprocess_output"]
    assert start["attempts"] == storage["attempts"] == 5
    assert start["source_subscription"] == "eventarc-start-pipeline"
    assert "HTTP 500" in start["last_error"]
    assert start["event"] == {"type": "pubsub", "json": {"limit": 1000}}
    assert start["attributes"] == {"origin": "cli"}
    assert start["publish_time"].startswith(broker.message(sources["start"]).publish_time.strftime("%Y-%m-%dT%H:%M:%S"))
    assert storage["event"] == {"type": "storage", "bucket": BUCKET, "object": MANIFEST["name"],
                                "generation": MANIFEST["generation"]}

    assert main(["dead-letters", "list", "--root", str(root)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"2 dead letters in projects/{PROJECT}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}")
    assert f"{start['id']}  start_pipeline  5 attempts" in text
    assert f"gs://{BUCKET}/{MANIFEST['name']} (generation {MANIFEST['generation']})" in text
    assert '"limit": 1000' in text
    # Listing acknowledged nothing and released its leases: the letters can be pulled at once.
    assert sorted(p.message.message_id for p in broker.pull(DEAD_LETTER_SUBSCRIPTION, 10)) == sorted(
        [start["id"], storage["id"]])


def test_replay_publishes_the_original_event_to_its_topic_and_acknowledges_the_dead_letter(chain, capsys):
    broker, endpoint, root, sources = chain
    letters = {letter["function"]: letter for letter in _list(root, capsys)}
    endpoint.statuses["/start"] = [204]  # the fault is fixed
    failed_before = len(endpoint.at("/start"))

    assert main(["dead-letters", "replay", letters["start_pipeline"]["id"], "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"replayed dead letter {letters['start_pipeline']['id']} (start_pipeline)" in out
    assert f"projects/{PROJECT}/topics/mlrelay-start" in out
    assert broker.wait_idle(5)
    [replayed] = endpoint.at("/start")[failed_before:]
    message = json.loads(replayed["body"])["message"]
    assert base64.b64decode(message["data"]) == b'{"limit": 1000}'
    assert message["attributes"] == {"origin": "cli"}  # no CloudPubSubDeadLetter* attributes
    assert message["messageId"] != sources["start"]
    assert [letter["function"] for letter in _list(root, capsys)] == ["on_preprocess_output"]


def test_replay_of_an_unknown_id_says_so_in_one_line(chain, capsys):
    _, _, root, _ = chain
    assert main(["dead-letters", "replay", "123456", "--root", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"mlrelay dead-letters: no dead letter 123456 in projects/{PROJECT}/subscriptions/{DEAD_LETTER_SUBSCRIPTION} "
        "(see `mlrelay dead-letters list`)"]
    assert "Traceback" not in captured.err and captured.out == ""
    assert len(_list(root, capsys)) == 2
    assert main(["dead-letters", "replay", "--root", str(root)]) == 2  # neither an id nor --all
    assert "--all" in capsys.readouterr().err


def test_replay_all_empties_the_dead_letter_subscription(chain, capsys, monkeypatch):
    broker, endpoint, root, _ = chain
    monkeypatch.setattr("mlrelay.dead_letters.PULL_BATCH", 1)  # a pull returns fewer messages than wait
    endpoint.statuses["/start"] = endpoint.statuses["/preprocess"] = [204]
    before = {path: len(endpoint.at(path)) for path in ("/start", "/preprocess")}

    assert main(["dead-letters", "replay", "--all", "--root", str(root)]) == 0
    assert capsys.readouterr().out.count("replayed dead letter") == 2
    assert broker.wait_idle(5)
    assert {path: len(endpoint.at(path)) - n for path, n in before.items()} == {"/start": 1, "/preprocess": 1}
    [storage] = endpoint.at("/preprocess")[before["/preprocess"]:]
    assert json.loads(storage["body"])["name"] == MANIFEST["name"]
    assert storage["headers"]["ce-subject"] == f"objects/{MANIFEST['name']}"
    assert _list(root, capsys) == []
    assert main(["dead-letters", "list", "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith("no dead letters in")


def test_a_dead_letter_subscription_that_does_not_exist_is_named(chain, capsys):
    _, _, root, _ = chain
    assert main(["dead-letters", "list", "--subscription", "nowhere", "--root", str(root)]) == 2
    assert f"there is no subscription projects/{PROJECT}/subscriptions/nowhere" in capsys.readouterr().err
