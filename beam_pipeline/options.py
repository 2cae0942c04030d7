"""The pipeline's one configuration object, its command line, and the Beam options it implies.

:func:`beam_options` is pure: it turns a :class:`PreprocessConfig` into the options given to
Beam (and recorded in the manifest), so the Dataflow settings are tested without a cloud.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIRECT = "DirectRunner"
DATAFLOW = "DataflowRunner"
RUNNERS = (DIRECT, DATAFLOW)
# DirectRunner runs on Beam's FnApiRunner: the engine the DirectRunner picks for batch
# pipelines, named directly so that it never tries to download the Prism runner first.
LOCAL_ENGINE = "FnApiRunner"
IN_MEMORY = "in_memory"
MULTI_THREADING = "multi_threading"
MULTI_PROCESSING = "multi_processing"
AUTO = "auto"
DIRECT_RUNNING_MODES = (AUTO, IN_MEMORY, MULTI_THREADING, MULTI_PROCESSING)
DEFAULT_DIRECT_RUNNING_MODE = AUTO
# From this many input rows on, ``auto`` runs one worker process per core. Measured on 2
# cores (Parquet input, seconds wall, in_memory vs multi_processing with 2 workers):
# 1M 2.8 vs 4.3-5.5, 2M 4.4-5.5 vs 6.3-7.5, 4M 9.3-9.9 vs 9.4-11.2, 8M 20-22 vs 14-17.
# Each worker process spends about 2.5 s of CPU starting (importing Beam), and
# multi_threading is no faster than in_memory (the per-row Python work holds the GIL).
PARALLEL_FROM_ROWS = 4_000_000
# Records per Arrow batch between stages: large enough that per-element overhead vanishes,
# small enough that two workers share the work of one big Parquet row group.
DEFAULT_BATCH_ROWS = 50_000
SETUP_FILE = str(Path(__file__).resolve().with_name("setup.py"))

_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_MAX = 63


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything one preprocessing run needs to know.

    ``source``: ``bigquery`` or a Parquet/CSV path or glob (local or gs://). ``out``: the
    output directory. ``limit``: keep at most this many valid records. ``num_shards``: shards
    per split, 0 to let the runner decide. ``batch_rows``: records per Arrow batch between
    stages. ``direct_running_mode`` / ``direct_num_workers``: how DirectRunner runs (``auto``
    and None: see :func:`direct_execution`). ``wait``: block until the job ends (None: wait
    for local runners only; a Dataflow job is submitted and left running).
    """

    source: str
    out: str
    limit: int | None = None
    run_id: str | None = None
    runner: str = DIRECT
    num_shards: int = 0
    batch_rows: int = DEFAULT_BATCH_ROWS
    direct_running_mode: str = DEFAULT_DIRECT_RUNNING_MODE
    direct_num_workers: int | None = None
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    job_name: str | None = None
    max_num_workers: int | None = None
    service_account_email: str | None = None
    wait: bool | None = None

    @property
    def waits(self) -> bool:
        return self.runner != DATAFLOW if self.wait is None else self.wait


class ConfigError(ValueError):
    """Settings that cannot make a run; the message names the setting."""


def label_value(text: str) -> str:
    """``text`` as a Google Cloud label value: lowercase letters, digits, ``_`` and ``-``."""
    value = re.sub(r"[^a-z0-9_-]", "-", text.lower())[:_LABEL_VALUE_MAX]
    return value or "none"


def default_job_name(run_id: str | None) -> str | None:
    """A Dataflow job name derived from the run id (deterministic, so retries find it)."""
    if not run_id:
        return None
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    name = f"mlrelay-preprocess-{slug}" if slug else "mlrelay-preprocess"
    return name[:100].rstrip("-")


def validate(config: PreprocessConfig) -> None:
    """Raise :class:`ConfigError` for settings that cannot work together."""
    if not config.out:
        raise ConfigError("--out is required: the directory for the shards and manifest")
    if config.limit is not None and config.limit <= 0:
        raise ConfigError(f"--limit must be a positive number of records, got {config.limit}")
    if config.num_shards < 0:
        raise ConfigError(
            f"--num-shards must be 0 (the runner decides) or more, got {config.num_shards}"
        )
    if config.batch_rows < 1:
        raise ConfigError(f"--batch-rows must be at least 1, got {config.batch_rows}")
    if config.runner not in RUNNERS:
        raise ConfigError(f"--runner must be one of {', '.join(RUNNERS)}, got {config.runner!r}")
    if config.source == "bigquery" and not config.project:
        raise ConfigError("--source bigquery needs --project (the project billed for the query)")
    if config.runner == DIRECT:
        if config.direct_running_mode not in DIRECT_RUNNING_MODES:
            raise ConfigError(
                f"--direct-running-mode must be one of {', '.join(DIRECT_RUNNING_MODES)}"
            )
        if config.direct_num_workers is not None and config.direct_num_workers < 1:
            raise ConfigError("--direct-num-workers must be at least 1")
        return
    for flag, value in (
        ("--project", config.project),
        ("--region", config.region),
        ("--temp-location", config.temp_location),
    ):
        if not value:
            raise ConfigError(f"{flag} is required with --runner {DATAFLOW}")
    for flag, value in (
        ("--temp-location", config.temp_location),
        ("--staging-location", config.staging_location),
        ("--out", config.out),
    ):
        if value and not value.startswith("gs://"):
            raise ConfigError(
                f"{flag} must be a gs:// path with --runner {DATAFLOW}, got {value!r}"
            )
    job_name = config.job_name or default_job_name(config.run_id)
    if job_name and not _JOB_NAME.match(job_name):
        raise ConfigError(
            f"--job-name {job_name!r} is not a Dataflow job name "
            "(lowercase letters, digits and '-', starting with a letter)"
        )
    if config.max_num_workers is not None and config.max_num_workers < 1:
        raise ConfigError("--max-workers must be at least 1")


def direct_execution(
    mode: str, workers: int | None, estimated_rows: int | None, cpu_count: int
) -> tuple[str, int]:
    """How DirectRunner runs: (running mode, number of workers).

    ``auto`` picks ``multi_processing`` with one worker per core for inputs of at least
    ``PARALLEL_FROM_ROWS`` rows (or of unknown size, like a BigQuery query) and a single
    ``in_memory`` worker for smaller ones. Without a worker count, in_memory gets one and
    the other modes one per core (at least two).
    """
    if mode == AUTO:
        large = estimated_rows is None or estimated_rows >= PARALLEL_FROM_ROWS
        mode = MULTI_PROCESSING if large and cpu_count >= 2 else IN_MEMORY
    if workers is None:
        workers = 1 if mode == IN_MEMORY else max(2, cpu_count)
    return mode, workers


def beam_options(
    config: PreprocessConfig, estimated_rows: int | None = None, cpu_count: int = 2
) -> dict[str, Any]:
    """The Beam pipeline options for ``config`` (JSON-ready; also recorded in the manifest).

    ``estimated_rows`` (the input's size, None if unknown) and ``cpu_count`` matter only for
    a DirectRunner run in ``auto`` mode.
    """
    validate(config)
    if config.runner == DIRECT:
        mode, workers = direct_execution(
            config.direct_running_mode, config.direct_num_workers, estimated_rows, cpu_count
        )
        options: dict[str, Any] = {
            "runner": LOCAL_ENGINE,
            "direct_running_mode": mode,
            "direct_num_workers": workers,
        }
        if config.project:
            options["project"] = config.project
        if config.temp_location:
            options["temp_location"] = config.temp_location
        return options
    temp_location = config.temp_location.rstrip("/")
    options = {
        "runner": DATAFLOW,
        "project": config.project,
        "region": config.region,
        "temp_location": temp_location,
        "staging_location": (config.staging_location or f"{temp_location}/staging").rstrip("/"),
        "setup_file": SETUP_FILE,
        "labels": ["app=mlrelay", f"run_id={label_value(config.run_id or 'none')}"],
    }
    job_name = config.job_name or default_job_name(config.run_id)
    if job_name:
        options["job_name"] = job_name
    if config.max_num_workers is not None:
        options["max_num_workers"] = config.max_num_workers
    if config.service_account_email:
        options["service_account_email"] = config.service_account_email
    return options


def absolute_local_path(path: str) -> str:
    """``path`` made absolute when it is local (worker processes may run elsewhere)."""
    return path if "://" in path else os.path.abspath(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.run",
        description=(
            "Preprocess natality rows into train/eval CSV shards and a _MANIFEST.json "
            "(written last)."
        ),
    )
    add = parser.add_argument
    add("--source", required=True,
        help="'bigquery' or a Parquet/CSV path or glob (local or gs://); "
             "the format comes from the extension")
    add("--out", required=True, help="output directory (local or gs://)")
    add("--limit", type=int, help="keep this many valid records (the same ones on every run)")
    add("--run-id", help="the run this output belongs to (recorded in the manifest)")
    add("--runner", default=DIRECT, choices=RUNNERS)
    add("--num-shards", type=int, default=0, help="shards per split (0: the runner decides)")
    add("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="records per Arrow batch")
    add("--direct-running-mode", default=DEFAULT_DIRECT_RUNNING_MODE, choices=DIRECT_RUNNING_MODES,
        help="how DirectRunner runs (auto: in_memory below 4M input rows, else "
             "multi_processing)")
    add("--direct-num-workers", type=int,
        help="DirectRunner workers (default: 1 for in_memory, else one per core)")
    add("--project", help="Google Cloud project (Dataflow, BigQuery)")
    add("--region", help="Dataflow region")
    add("--temp-location", help="gs:// directory for Dataflow temp files, e.g. gs://BUCKET/tmp")
    add("--staging-location", help="gs:// directory for staged code (default: TEMP/staging)")
    add("--job-name", help="Dataflow job name (default: derived from --run-id)")
    add("--max-workers", type=int, help="Dataflow max_num_workers")
    add("--service-account", help="service account email for Dataflow workers")
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=None,
                      help="wait for the job to finish (default for DirectRunner)")
    wait.add_argument("--no-wait", dest="wait", action="store_false",
                      help="submit the job and return (default for DataflowRunner)")
    return parser


def parse_args(argv: list[str] | None) -> PreprocessConfig:
    """The configuration named by command-line arguments (argparse exits on bad syntax)."""
    args = build_parser().parse_args(argv)
    return PreprocessConfig(
        source=args.source,
        out=args.out,
        limit=args.limit,
        run_id=args.run_id,
        runner=args.runner,
        num_shards=args.num_shards,
        batch_rows=args.batch_rows,
        direct_num_workers=args.direct_num_workers,
        direct_running_mode=args.direct_running_mode,
        project=args.project,
        region=args.region,
        temp_location=args.temp_location,
        staging_location=args.staging_location,
        job_name=args.job_name,
        max_num_workers=args.max_workers,
        service_account_email=args.service_account,
        wait=args.wait,
    )
