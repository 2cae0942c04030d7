"""`mlrelay`, the one front door: sample data, run each stage by hand, run the chain locally.

Each subcommand imports what it needs when it runs, so `mlrelay --help` and the light commands
start fast and never pay for TensorFlow or Beam.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_sample(args: argparse.Namespace) -> int:
    from natality_sample import write_sample

    info = write_sample(args.out, rows=args.rows, seed=args.seed, csv=args.csv)
    print(json.dumps(info, indent=2))
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from beam_pipeline.run import main as preprocess_main

    return preprocess_main(args.rest)


def _cmd_train(args: argparse.Namespace) -> int:
    from trainer.task import main as train_main

    return train_main(args.rest)


DEFAULT_ROOT = Path("mlrelay-local")


def _local_state(root: Path) -> dict:
    from local_cloud.cloud import read_state

    state = read_state(root)
    if state is None:
        raise ValueError(f"no local cloud is running with state in {root.resolve()}; start one with `mlrelay up`")
    return state


def _bucket_dir(root: Path) -> Path:
    from functions.config import Config

    return root.resolve() / "buckets" / Config().bucket


def _cmd_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from local_cloud.cloud import LocalCloud, LocalCloudBusy, LocalCloudSettings
    from local_cloud.scheduler import ScheduleEntry
    from mlrelay.demo import ensure_sample

    if args.duplicate_deliveries < 1:
        raise ValueError(f"--duplicate-deliveries must be 1 or more, not {args.duplicate_deliveries}")
    settings = LocalCloudSettings(root=args.root, duplicate_deliveries=args.duplicate_deliveries)
    if args.schedule:
        body = json.dumps({"source": "data/natality.parquet"}).encode()
        settings.schedules.append(ScheduleEntry("retrain", args.schedule, settings.config.start_topic, body))
    sample = ensure_sample(_bucket_dir(args.root), args.rows)
    cloud = LocalCloud(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        cloud.start()
    except LocalCloudBusy as exc:
        raise ValueError(str(exc)) from None
    except BaseException:
        cloud.stop()
        raise
    try:
        cfg = cloud.config
        print(f"local cloud up in {cloud.ready_s:.2f} s; state in {cloud.root}")
        print(f"  bucket gs://{cfg.bucket} = {cloud.bucket_dir} (sample: {sample['rows']:,} rows in data/)")
        print(f"  topics {cfg.start_topic}, {cfg.job_events_topic}, {cfg.dead_letter_topic}; "
              f"PUBSUB_EMULATOR_HOST=127.0.0.1:{cloud.ports['pubsub']}")
        print(f"  endpoint {cloud.endpoint_url}")
        if args.schedule:
            print(f"  schedule '{args.schedule}' publishes a run request to {cfg.start_topic}")
        print("start a run: mlrelay trigger FILE  |  mlrelay publish mlrelay-start '{}'; Ctrl-C stops")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        cloud.stop()
        print("local cloud stopped")
    return 0


def _storage(args: argparse.Namespace):
    """The pipeline bucket: a Cloud Storage bucket with --bucket gs://B, else the local cloud's."""
    if args.bucket:
        if not args.bucket.startswith("gs://") or not args.bucket[5:].strip("/"):
            raise ValueError(f"--bucket must be gs://BUCKET, not {args.bucket!r}")
        from functions.gcp_adapters import GcsStorage

        name = args.bucket[5:].strip("/")
        return GcsStorage(name), name
    from functions.config import Config
    from functions.local_adapters import LocalStorage

    return LocalStorage(_bucket_dir(args.root)), Config().bucket


def _cmd_trigger(args: argparse.Namespace) -> int:
    from functions.run_store import TRIGGER_PREFIX

    data = Path(args.file).read_bytes()
    name = f"{TRIGGER_PREFIX}{args.name or Path(args.file).name}"
    if not args.bucket:
        _local_state(args.root)  # a trigger with no local cloud running would wait for nobody
    storage, bucket = _storage(args)
    storage.write(name, data)
    print(f"uploaded gs://{bucket}/{name}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.file is None):
        raise ValueError("give the message body, or --file FILE (- for standard input), not both")
    if args.file is not None:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    else:
        data = args.data.encode()
    if not data:
        raise ValueError("the message body is empty (Pub/Sub refuses a message with no data and no attributes)")
    _publish(args.root, None, args.topic, data)
    return 0


def _publish(root: Path, project: str | None, topic_id: str, data: bytes) -> str:
    """Publish to a topic of the deployed chain (`project`) or, without one, of the local cloud."""
    if project is None:
        state = _local_state(root)
        os.environ["PUBSUB_EMULATOR_HOST"] = state["pubsub_emulator_host"]
        project = state["project"]
    from google.cloud import pubsub_v1

    from google.api_core import exceptions

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, topic_id)
    try:
        message_id = publisher.publish(topic, data).result(timeout=30)
    except exceptions.NotFound:
        raise ValueError(f"there is no topic {topic}") from None
    except exceptions.GoogleAPICallError as exc:
        raise ValueError(f"publishing to {topic} failed: {exc.message}") from None
    print(f"published message {message_id} to {topic}")
    return message_id


def _cmd_releases(args: argparse.Namespace) -> int:
    from functions.run_store import RunStore
    from mlrelay.release_table import format_release_table

    releases = RunStore(*_storage(args)).releases()
    print(json.dumps(releases, indent=2) if args.json else format_release_table(releases))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Write one run's report, a self-contained HTML file (mlrelay.report)."""
    import time

    from functions.run_store import RunStore
    from mlrelay.report import render_report

    started = time.perf_counter()
    page = render_report(RunStore(*_storage(args)), args.run_id)  # NoSuchRun, a ValueError: exit 2
    out = Path(args.out) if args.out else Path(f"mlrelay-report-{args.run_id}.html")
    out.write_text(page, encoding="utf-8")
    size = out.stat().st_size
    print(f"wrote {out.resolve()} ({size / 1024:.0f} KiB, {size:,} bytes) in {time.perf_counter() - started:.2f} s")
    return 0


def _cmd_console(args: argparse.Namespace) -> int:
    """Serve the read-only console (mlrelay.console) until Ctrl-C."""
    from mlrelay.console import check_host, serve

    check_host(args.host, args.allow_remote)  # before touching the bucket: exit 2, one line
    from functions.run_store import RunStore

    storage, bucket = _storage(args)
    label = f"gs://{bucket}" if args.bucket else f"gs://{bucket} = {_bucket_dir(args.root)}"
    from mlrelay.console.app import local_dead_letters

    return serve(RunStore(storage, bucket), args.host, args.port, allow_remote=args.allow_remote,
                 bucket_label=label, dead_letters=None if args.bucket else local_dead_letters(args.root))


def _cmd_rollback(args: argparse.Namespace) -> int:
    import getpass

    from functions.config import Config
    from functions.triggers import VERSIONED_MODEL_FORM, is_versioned_model_name

    # The release function refuses any other form (functions.triggers): said here, before publishing.
    if args.to is not None and not is_versioned_model_name(args.to):
        raise ValueError(f"--to must be MODEL@VERSION ({VERSIONED_MODEL_FORM}, e.g. "
                         f"projects/P/locations/R/models/babyweight@3), not {args.to!r}")
    body = {"action": "rollback", "to": args.to, "requested_by": getpass.getuser()}
    _publish(args.root, args.project, Config().release_topic, json.dumps(body).encode())
    print("the release function deploys the version, then retires the current one: see `mlrelay releases`")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from functions.run_store import RunStore

    runs = RunStore(*_storage(args))
    if args.follow:
        return _follow_status(runs, args)
    if args.run_id:
        from mlrelay.run_view import run_view
        from mlrelay.status_view import format_run_view

        view = run_view(runs, args.run_id)  # NoSuchRun, a ValueError: one line, exit 2
        print(json.dumps(view, indent=2) if args.json else format_run_view(view))
        return 0
    from mlrelay.status_table import format_status_table, run_summaries

    rows = run_summaries(runs)
    if args.json:
        print(json.dumps([{**row.status.to_dict(), "eval_rmse": row.eval_rmse, "decision": row.decision}
                          for row in rows], indent=2))
    else:
        print(format_status_table(rows))
    return 0


def _follow_status(runs, args: argparse.Namespace) -> int:
    """Redraw a run's progress until it ends; exit 0 when it went into service, 1 otherwise."""
    from mlrelay.progress import display_for, follow
    from mlrelay.run_view import NoSuchRun, run_records

    if args.run_id and not runs.has_run(args.run_id) and not run_records(runs, args.run_id):
        raise NoSuchRun(f"no run {args.run_id}")
    last = follow(runs, args.run_id, display_for(sys.stdout, args.json))
    return 0 if last and last.get("state") == "deployed" else 1


def _cmd_predict(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or _local_state(args.root)["endpoint"]
    try:
        body = json.loads(args.instances)
    except ValueError as exc:
        raise ValueError(f"instances are not JSON: {exc}") from None
    instances = body.get("instances") if isinstance(body, dict) and "instances" in body else body
    if isinstance(instances, dict):
        instances = [instances]
    if not isinstance(instances, list) or not instances:
        raise ValueError("give one instance (a JSON object) or a non-empty list of them")
    if endpoint.startswith("projects/"):
        print(json.dumps(_predict_vertex(endpoint, instances), indent=2))
        return 0
    from mlrelay.demo import predict

    print(json.dumps(predict(endpoint, instances), indent=2))
    return 0


def _predict_vertex(endpoint: str, instances: list) -> dict:
    """Vertex AI online prediction with the caller's credentials (gcloud auth application-default)."""
    parts = endpoint.split("/")
    if len(parts) != 6 or parts[2] != "locations" or parts[4] != "endpoints":
        raise ValueError(f"--endpoint must be projects/P/locations/R/endpoints/E, not {endpoint!r}")
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format, struct_pb2

    client = aiplatform_v1.PredictionServiceClient(
        client_options={"api_endpoint": f"{parts[3]}-aiplatform.googleapis.com"})
    values = [json_format.ParseDict(instance, struct_pb2.Value()) for instance in instances]
    response = client.predict(endpoint=endpoint, instances=values)
    return json.loads(type(response).to_json(response))


def _cmd_demo(args: argparse.Namespace) -> int:
    import signal

    from mlrelay.demo import run_demo

    # A SIGTERM ends the demo through its cleanup, which stops every process the local cloud started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from local_cloud.cloud import LocalCloudBusy

    try:
        return run_demo(args.root, rows=args.rows, as_json=args.json)
    except LocalCloudBusy as exc:
        raise ValueError(str(exc)) from None


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    """List or replay the dead-letter subscription's events, of the deployed chain or the local cloud."""
    from local_cloud.cloud import FUNCTIONS
    from mlrelay.dead_letters import run

    project = args.project
    if project is None:
        state = _local_state(args.root)
        os.environ["PUBSUB_EMULATOR_HOST"] = state["pubsub_emulator_host"]
        project = state["project"]
    return run(args.action, project, subscription=args.subscription, as_json=getattr(args, "json", False),
               message_id=getattr(args, "id", None), replay_all=getattr(args, "all", False), functions=FUNCTIONS)


def _cmd_bench(args: argparse.Namespace) -> int:
    # The benchmarks are a program of their own (`python -m bench`), a layer above this package
    # (pyproject.toml's import contracts): this command becomes that program, with its arguments,
    # so its options, signals and exit status are the benchmarks' own.
    command = [sys.executable, "-m", "bench", *args.rest]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # returns only by raising OSError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlrelay",
        description="An event-driven, serverless MLOps chain for the babyweight model.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser(
        "sample", help="write a synthetic copy of the natality table (Parquet, optional CSV)"
    )
    sample.add_argument("--rows", type=int, default=200_000, help="rows to generate (default 200000)")
    sample.add_argument("--out", type=Path, required=True, help="output directory")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--csv", action="store_true", help="also write natality.csv (BigQuery export form)")
    sample.set_defaults(func=_cmd_sample)

    preprocess = commands.add_parser(
        "preprocess",
        help="run the Beam preprocessing pipeline (options as python -m beam_pipeline.run)",
        add_help=False,
    )
    preprocess.set_defaults(func=_cmd_preprocess)

    train = commands.add_parser(
        "train",
        help="train and export the wide & deep model (options as python -m trainer.task)",
        add_help=False,
    )
    train.set_defaults(func=_cmd_train)

    def with_root(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                         help="the local cloud's state directory (default ./mlrelay-local)")
        return sub

    up = with_root(commands.add_parser("up", help="run the local cloud until Ctrl-C"))
    up.add_argument("--schedule", help="a cron expression that publishes a run request (Cloud Scheduler)")
    up.add_argument("--rows", type=int, default=50_000, help="sample rows to make when absent")
    up.add_argument("--duplicate-deliveries", type=int, default=1, metavar="N",
                    help="push every event N times (a drill: at-least-once delivery, made visible)")
    up.set_defaults(func=_cmd_up)

    trigger = with_root(commands.add_parser("trigger", help="upload a trigger file (a JSON run request)"))
    trigger.add_argument("file")
    trigger.add_argument("--bucket", help="gs://BUCKET: the deployed chain's bucket (default: the local cloud's)")
    trigger.add_argument("--name", help="object name under triggers/ (default: the file's name)")
    trigger.set_defaults(func=_cmd_trigger)

    publish = with_root(commands.add_parser("publish", help="publish a message to a topic"))
    publish.add_argument("topic")
    publish.add_argument("data", nargs="?", help="the message body, e.g. a JSON run request")
    publish.add_argument("--file", help="read the message body from FILE (- for standard input)")
    publish.set_defaults(func=_cmd_publish)

    releases = with_root(commands.add_parser("releases", help="every traffic change of the endpoint: who, when, why"))
    releases.add_argument("--bucket", help="gs://BUCKET: the deployed chain's bucket (default: the local cloud's)")
    releases.add_argument("--json", action="store_true")
    releases.set_defaults(func=_cmd_releases)

    report = with_root(commands.add_parser(
        "report", help="one run as a self-contained HTML page with plots (opens from disk, no network)"))
    report.add_argument("run_id", metavar="RUN")
    report.add_argument("--out", help="the HTML file to write (default ./mlrelay-report-RUN.html)")
    report.add_argument("--bucket", help="gs://BUCKET: the deployed chain's bucket (default: the local cloud's)")
    report.set_defaults(func=_cmd_report)

    console = with_root(commands.add_parser(
        "console", help="a read-only web console: runs, their reports, the endpoint's serving history"))
    console.add_argument("--bucket", help="gs://BUCKET: the deployed chain's bucket, read with your Google "
                                          "credentials (default: the local cloud's)")
    console.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    console.add_argument("--port", type=int, default=8642, help="port to listen on (default 8642)")
    console.add_argument("--allow-remote", action="store_true",
                         help="allow a --host that is not loopback (the console has no authentication)")
    console.set_defaults(func=_cmd_console)

    rollback = with_root(commands.add_parser(
        "rollback", help="serve an earlier registered version again (through the release function)"))
    rollback.add_argument("--to", help="MODEL@VERSION to serve (default: the version that served before)")
    rollback.add_argument("--project", help="the deployed chain's project (default: the local cloud)")
    rollback.set_defaults(func=_cmd_rollback)

    status = with_root(commands.add_parser(
        "status", help="runs from the run ledger; with RUN, everything about it; --follow: live progress"))
    status.add_argument("run_id", nargs="?", metavar="RUN",
                        help="one run: its request, stages, rows, RMSEs, gate, release and model")
    status.add_argument("--bucket", help="gs://BUCKET: the deployed chain's bucket (default: the local cloud's)")
    status.add_argument("--json", action="store_true",
                        help="JSON (with --follow: one JSON object per change)")
    status.add_argument("--follow", action="store_true",
                        help="show the run's progress until it ends (without RUN: the newest run still "
                             "going, else the next to start)")
    status.set_defaults(func=_cmd_status)

    predict = with_root(commands.add_parser("predict", help="ask the endpoint for predictions"))
    predict.add_argument("instances", help='JSON: an instance, a list of them, or {"instances": [...]}')
    predict.add_argument("--endpoint", help="a Vertex AI endpoint (projects/P/locations/R/endpoints/E) or a "
                                            "local endpoint URL (default: the local cloud's)")
    predict.set_defaults(func=_cmd_predict)

    demo = with_root(commands.add_parser("demo", help="run the whole chain locally, then shut down"))
    demo.add_argument("--rows", type=int, default=50_000, help="sample rows (default 50000)")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.set_defaults(func=_cmd_demo)

    dead_letters = commands.add_parser("dead-letters", help="events that failed every delivery: list, replay")
    actions = dead_letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = with_root(actions.add_parser("list", help="show each dead letter (nothing is acknowledged)"))
    listing.add_argument("--json", action="store_true")
    replay = with_root(actions.add_parser("replay", help="publish dead letters to their topics again"))
    replay.add_argument("id", nargs="?", help="the dead letter's id, as `dead-letters list` shows it")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    for action in (listing, replay):
        action.add_argument("--project", help="the deployed chain's project (default: the local cloud)")
        action.add_argument("--subscription", help="the dead-letter subscription (default mlrelay-dead-letters)")
    dead_letters.set_defaults(func=_cmd_dead_letters)

    bench = commands.add_parser(
        "bench",
        help="measure each stage against its baseline (tables, or --json; options as python -m bench)",
        add_help=False,
    )
    bench.set_defaults(func=_cmd_bench)
    return parser


PASS_THROUGH = ("preprocess", "train", "bench")  # their options belong to those programs' own parsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in PASS_THROUGH:
        # Everything after the subcommand goes to that parser untouched (argparse would take
        # options such as --source or --help for its own).
        args = parser.parse_args(argv[:1])
        args.rest = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not isinstance(exc, (ValueError, OSError)) and not _is_service_error(exc):
            raise  # a bug: its traceback is what a report needs
        # One line, whatever the message holds (a server's answer may span several).
        print(f"mlrelay {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2


def _is_service_error(exc: Exception) -> bool:
    """A refusal by a service the command called (Google's APIs and their credentials, the chain's
    platform), which the user can act on from its message."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    from functions.platform import AlreadyExists, NotFound, TransientError

    return isinstance(exc, (GoogleAPIError, GoogleAuthError, NotFound, AlreadyExists, TransientError))


def _one_line(exc: Exception) -> str:
    from google.auth.exceptions import GoogleAuthError

    text = " ".join(str(exc).split())
    if isinstance(exc, GoogleAuthError):  # its own text ("File ... was not found.") does not say what for
        return f"no usable Google credentials ({text}); run `gcloud auth application-default login`"
    return text


if __name__ == "__main__":
    sys.exit(main())
