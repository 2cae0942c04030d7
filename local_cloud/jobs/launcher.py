"""The local Dataflow job's process: a Flex Template's launch and the pipeline it starts, in one.

On Dataflow a Flex Template runs in two places. Its program runs first in the launcher container,
where it reads the launch parameters, checks the source and builds the pipeline
(deploy/flex_template/main.py); only the job it submits runs on workers. A program that fails in
the launcher never starts the pipeline, so the job never logs "Workflow failed.": it logs
"Error occurred in the launcher container: ..." instead (events.log_entries).

Locally the two are one process on DirectRunner, so this entry point makes the same checks
first, then prints LAUNCHED_LINE and runs the pipeline (``python -m beam_pipeline.run`` with the
same arguments). The job runner (local_cloud.jobs.runner) reads that line as the end of the launch:
a process that fails before printing it failed to launch.

    python -m local_cloud.jobs.launcher --source PATH --out DIR [beam_pipeline.run options]
"""
from __future__ import annotations

import sys

# Printed once, between the launch's checks and the pipeline's run. It is the local runner's
# signal, not a line the cloud writes.
LAUNCHED_LINE = "local-dataflow: launched; the pipeline is running"


def main(argv: list[str] | None = None) -> int:
    """Check as the template's launcher does, then run the pipeline; the process exit code."""
    # Imported here: the job runner imports LAUNCHED_LINE without loading Beam.
    from beam_pipeline import options, records
    from beam_pipeline.run import main as run_main
    from beam_pipeline.run import plan_source

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = options.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed what is wrong
        return int(exit_.code or 0)
    try:
        options.validate(config)
        plan_source(config.source)
    except (options.ConfigError, records.InputError) as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    print(LAUNCHED_LINE, flush=True)
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
