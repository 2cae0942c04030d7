"""The sink filters against realistic entries, their agreement with classify, and their CLI."""
import subprocess
import sys

import pytest

from events.log_entries import DATAFLOW_LAUNCHER_FAILED_LINE, JobKind, JobOutcome, classify
from events.sink_filters import FILTERS, filter_for, main
from local_cloud.logging.query import compile_filter, matches
from tests.fakes.log_corpus import FOREIGN, ORDINARY, RUN, TERMINAL, launch_failed, vertex_line
from tests.conftest import REPO

# LogSeverity names (https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry#logseverity).
SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")

KIND_FILTERS = {
    "vertex_custom_job": "vertex-job-terminal",
    "dataflow_job": "dataflow-job-failed",
    "vertex_deploy_model": "deploy-model-done",
}


def test_every_filter_compiles_with_the_local_evaluator():
    # The local sink applies these texts with local_cloud.logging.query: each must parse there.
    for name, text in FILTERS.items():
        assert compile_filter(text).text == text, name


@pytest.mark.parametrize("name, entry, expected", TERMINAL)
def test_terminal_entries_pass_their_own_filter_and_job_events_only(name, entry, expected):
    kind = expected[0].value
    for filter_name in KIND_FILTERS.values():
        assert matches(FILTERS[filter_name], entry) is (filter_name == KIND_FILTERS[kind]), (name, filter_name)
    assert matches(filter_for("job-events"), entry), name


@pytest.mark.parametrize("name, entry", ORDINARY + FOREIGN)
def test_ordinary_lines_and_foreign_jobs_are_not_forwarded(name, entry):
    assert not matches(filter_for("job-events"), entry), name


def test_what_the_sink_forwards_is_always_a_job_end():
    for name, entry, *_ in TERMINAL + ORDINARY + FOREIGN:
        if matches(FILTERS["job-events"], entry):
            assert classify(entry) is not None, name


def test_the_sink_passes_a_failed_template_launch_and_classify_fails_the_dataflow_job():
    # The line Dataflow's troubleshooting pages document for a Flex Template launch that failed.
    entry = launch_failed()
    assert entry["textPayload"] == DATAFLOW_LAUNCHER_FAILED_LINE
    assert matches(filter_for("dataflow-job-failed"), entry)
    assert matches(filter_for("job-events"), entry)
    ended = classify(entry)
    assert (ended.kind, ended.outcome, ended.job_name) == (JobKind.DATAFLOW_JOB, JobOutcome.FAILED, RUN)


def test_job_failed_at_info_passes_the_sink():
    entry = vertex_line("Job failed.", severity="INFO")
    assert matches(filter_for("vertex-job-terminal"), entry) and matches(filter_for("job-events"), entry)


@pytest.mark.parametrize("name, entry", [(n, e) for n, e, *_ in TERMINAL + ORDINARY + FOREIGN])
def test_the_severity_decides_nothing(name, entry):
    seen = {(matches(FILTERS["job-events"], {**entry, "severity": severity}), classify({**entry, "severity": severity}))
            for severity in SEVERITIES}
    assert len(seen) == 1, name
    assert seen == {(matches(FILTERS["job-events"], entry), classify(entry))}, name


def test_unknown_filter_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: vertex-job-terminal"):
        filter_for("nope")


def test_cli_prints_one_filter(capsys):
    assert main(["deploy-model-done"]) == 0
    assert capsys.readouterr().out == FILTERS["deploy-model-done"] + "\n"
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(FILTERS)
    with pytest.raises(SystemExit) as caught:
        main(["nope"])
    assert caught.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_cli_runs_as_a_module_for_deploy_sh():
    result = subprocess.run(
        [sys.executable, "-m", "events.sink_filters", "job-events"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == FILTERS["job-events"] + "\n"
