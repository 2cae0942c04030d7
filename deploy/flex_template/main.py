"""The Flex Template's entry point: one launch request becomes one preprocessing job on Dataflow.

Dataflow's launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with two kinds of arguments:
the template's parameters (``--source``, ``--out``, ``--run_id``, ``--limit``, declared in
metadata.json) and its own pipeline options (``--project``, ``--region``, ``--temp_location``,
``--staging_location``, ``--job_name``, ``--service_account_email``, ``--labels`` and
``--template_location``, where the launcher expects the job the pipeline submits). beam_pipeline's
command line takes only the first kind, so this module splits them: the parameters and the
launcher's settings make a ``PreprocessConfig`` (checked by beam_pipeline.options as for any run),
and the launcher's own options are passed on to Beam under the pipeline's settings.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions

from beam_pipeline import options, records
from beam_pipeline.run import run_pipeline


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess-template",
        description="mlrelay preprocessing as a Dataflow Flex Template (run by the template launcher).",
    )
    parser.add_argument("--source", required=True, help="'bigquery' or a gs:// Parquet/CSV path or glob")
    parser.add_argument("--out", required=True, help="gs:// directory for the shards and _MANIFEST.json")
    parser.add_argument("--run_id", "--run-id", dest="run_id", help="the run this output belongs to")
    parser.add_argument("--limit", type=int, help="keep this many valid records")
    return parser


def parse_launch(argv: list[str]) -> tuple[options.PreprocessConfig, list[str]]:
    """The run's configuration and the launcher's own pipeline options (as flags).

    Raises SystemExit (argparse) for missing parameters and ``options.ConfigError`` for settings
    that cannot make a Dataflow run.
    """
    params, launcher_flags = _parser().parse_known_args(argv)
    launcher = PipelineOptions(launcher_flags)
    cloud = launcher.view_as(GoogleCloudOptions)
    config = options.PreprocessConfig(
        source=params.source,
        out=params.out,
        limit=params.limit,
        run_id=params.run_id,
        runner=options.DATAFLOW,
        project=cloud.project,
        region=cloud.region,
        temp_location=cloud.temp_location,
        staging_location=cloud.staging_location,
        # The launch request's job name (the run id) names the job, so the job-failed log filter
        # and the function that launched it find it by that name.
        job_name=cloud.job_name,
        max_num_workers=launcher.view_as(WorkerOptions).max_num_workers,
        service_account_email=cloud.service_account_email,
        wait=False,
    )
    options.validate(config)
    return config, launcher_flags


def _label_pairs(labels: list[str] | None) -> dict[str, str]:
    """Beam's --labels values (``key=value`` or a dict literal) as one mapping."""
    pairs: dict[str, str] = {}
    for label in labels or []:
        text = label.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                value = ast.literal_eval(text)
            pairs.update({str(k): str(v) for k, v in dict(value).items()})
        elif text:
            key, _, value = text.partition("=")
            pairs[key] = value
    return pairs


def merge_labels(launcher_labels: list[str] | None, own_labels: list[str]) -> list[str]:
    """The launcher's labels plus the pipeline's own (which win on the same key), as key=value."""
    merged = {**_label_pairs(launcher_labels), **_label_pairs(own_labels)}
    return [f"{key}={value}" for key, value in merged.items()]


def pipeline_options(config: options.PreprocessConfig, launcher_flags: list[str]) -> dict[str, Any]:
    """The Beam options of the job: the pipeline's own, over whatever else the launcher passed."""
    own = options.beam_options(config)
    launcher = PipelineOptions(launcher_flags).get_all_options(drop_default=True)
    own["labels"] = merge_labels(launcher.get("labels"), own.get("labels", []))
    return own


def launch(config: options.PreprocessConfig, launcher_flags: list[str]) -> None:
    """Check the source, build the pipeline and submit it (the launcher waits for nothing more)."""
    run_pipeline(config, extra_flags=launcher_flags, beam_options=pipeline_options(config, launcher_flags))


def main(argv: list[str] | None = None) -> int:
    try:
        config, launcher_flags = parse_launch(sys.argv[1:] if argv is None else argv)
        launch(config, launcher_flags)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except (options.ConfigError, records.InputError) as error:
        print(f"preprocess-template: error: {error}", file=sys.stderr)
        return 2
    print(f"preprocess-template: submitted job {config.job_name} for run {config.run_id}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
