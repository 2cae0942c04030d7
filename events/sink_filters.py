"""The log-sink filters, each defined once, in the Cloud Logging query language.

deploy.sh creates the cloud sink with `python -m events.sink_filters job-events` and the local sink
applies the same text (local_cloud.logging.query), so what reaches the job-events topic is decided
by one definition. Each filter is written from the constants `events.log_entries.classify` uses,
and keeps to the language subset the local evaluator reads (its tests compile every filter here).

- vertex-job-terminal: a Vertex AI custom job's service line that ends it (not its workers' lines).
  Custom-job log entries carry no job labels, so every custom job in the project passes; the
  function confirms with the API that the job is one of ours.
- dataflow-job-failed: a Dataflow job named like a run id that failed: "Workflow failed." in its
  job messages, or, when its Flex Template launch failed before the pipeline ran, "Error occurred
  in the launcher container: ..." in its job messages or its launcher log. The job name is read
  from the resource labels or the entry labels (dataflow.googleapis.com/job_name), which carry it
  alike.
- deploy-model-done: the last audit entry of a DeployModel operation (success or error).
- job-events: any of the three (the filter of the sink that feeds the job-events topic).
"""
from __future__ import annotations

import argparse
import sys

from events.log_entries import (
    AIPLATFORM_SERVICE,
    AUDIT_ACTIVITY_LOG,
    DATAFLOW_FAILED_REGEX,
    DATAFLOW_JOB_MESSAGE_LOG,
    DATAFLOW_JOB_NAME_LABEL,
    DATAFLOW_LAUNCHER_FAILED_REGEX,
    DATAFLOW_LAUNCHER_LOG,
    DATAFLOW_RESOURCE_TYPE,
    DEPLOY_MODEL_METHOD,
    VERTEX_JOB_STATE_LABEL,
    VERTEX_RESOURCE_TYPE,
    VERTEX_TERMINAL_JOB_STATES,
    VERTEX_TERMINAL_REGEX,
    VERTEX_WORKER_TASK_REGEX,
)
from events.run_id import RUN_ID_REGEX

__all__ = ["FILTERS", "filter_for", "main"]


def _message_matches(regex: str) -> str:
    """Plain-text and structured (jsonPayload.message) forms of the same line."""
    return f'(textPayload=~"{regex}" OR jsonPayload.message=~"{regex}")'


_STATES = " OR ".join(f'"{state}"' for state in VERTEX_TERMINAL_JOB_STATES)

VERTEX_JOB_TERMINAL = (
    f'resource.type="{VERTEX_RESOURCE_TYPE}"'
    f' AND NOT resource.labels.task_name=~"{VERTEX_WORKER_TASK_REGEX}"'
    f' AND (labels."{VERTEX_JOB_STATE_LABEL}"=({_STATES}) OR {_message_matches(VERTEX_TERMINAL_REGEX)})'
)

# Every OR is parenthesised: in the Logging query language OR binds tighter than AND.
DATAFLOW_JOB_FAILED = (
    f'resource.type="{DATAFLOW_RESOURCE_TYPE}"'
    f' AND (resource.labels.job_name=~"{RUN_ID_REGEX}" OR labels."{DATAFLOW_JOB_NAME_LABEL}"=~"{RUN_ID_REGEX}")'
    f' AND ((logName:"{DATAFLOW_JOB_MESSAGE_LOG}" AND {_message_matches(DATAFLOW_FAILED_REGEX)})'
    f' OR (logName:("{DATAFLOW_JOB_MESSAGE_LOG}" OR "{DATAFLOW_LAUNCHER_LOG}")'
    f" AND {_message_matches(DATAFLOW_LAUNCHER_FAILED_REGEX)}))"
)

DEPLOY_MODEL_DONE = (
    f'logName:"{AUDIT_ACTIVITY_LOG}"'
    f' AND protoPayload.serviceName="{AIPLATFORM_SERVICE}"'
    f' AND protoPayload.methodName="{DEPLOY_MODEL_METHOD}"'
    " AND operation.last=true"
)

FILTERS: dict[str, str] = {
    "vertex-job-terminal": VERTEX_JOB_TERMINAL,
    "dataflow-job-failed": DATAFLOW_JOB_FAILED,
    "deploy-model-done": DEPLOY_MODEL_DONE,
}
FILTERS["job-events"] = " OR ".join(f"({text})" for text in list(FILTERS.values()))


def filter_for(name: str) -> str:
    """The filter text of a named sink filter; KeyError lists the names."""
    try:
        return FILTERS[name]
    except KeyError:
        raise KeyError(f"no sink filter {name!r}; known: {', '.join(FILTERS)}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events.sink_filters",
        description="Print a log-sink filter (Cloud Logging query language) by name.",
    )
    parser.add_argument("name", nargs="?", choices=list(FILTERS), help="the filter to print")
    parser.add_argument("--list", action="store_true", help="list the filter names")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(FILTERS))
        return 0
    if args.name is None:
        parser.error("give a filter name or --list")
    print(FILTERS[args.name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
