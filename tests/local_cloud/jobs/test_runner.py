"""The local Dataflow job's end lines: a failed launch logs the launcher's line, a failed pipeline
"Workflow failed.", and the job-events sink forwards exactly the one that ends the job."""
from __future__ import annotations

from events.log_entries import DATAFLOW_LAUNCHER_FAILED_LINE, JobKind, JobOutcome, classify
from events.sink_filters import filter_for
from local_cloud.jobs.runner import JobRunner
from local_cloud.logging.query import matches
from tests.conftest import wait_until

RUN = "run-20261127-050000-0123456789"
HEADER = "year,month,weight_pounds,is_male,mother_age,plurality,gestation_weeks\n"


def run_to_its_end(tmp_path, **parameters) -> tuple[object, list[dict]]:
    entries: list[dict] = []
    runner = JobRunner(tmp_path / "state", tmp_path / "buckets", entries.append)
    launch = {"jobName": RUN, "parameters": {"out": f"gs://b/runs/{RUN}/preprocess/", **parameters}}
    job = runner.launch_flex_template(launch)
    try:
        wait_until(lambda: any(classify(entry) or entry.get("textPayload") == "Worker pool stopped."
                               for entry in list(entries)), 120, "the job's end")
    finally:
        runner.stop()
    return job, entries


def forwarded(entries: list[dict]) -> list[dict]:
    return [entry for entry in entries if matches(filter_for("job-events"), entry)]


def texts(entries: list[dict]) -> list[str]:
    return [entry.get("textPayload", "") for entry in entries]


def assert_a_failed_launch(job, entries) -> None:
    assert job.state == "JOB_STATE_FAILED" and not job.launched
    assert not any(text.startswith("Workflow failed.") for text in texts(entries))
    assert texts(entries)[-2:] == ["Error: Template launch failed: exit status 2", DATAFLOW_LAUNCHER_FAILED_LINE]
    (end,) = forwarded(entries)
    assert end is entries[-1] and end["severity"] == "ERROR"
    ended = classify(end)
    assert (ended.kind, ended.outcome, ended.job_id, ended.job_name) == (
        JobKind.DATAFLOW_JOB, JobOutcome.FAILED, job.job_id, RUN)


def test_a_source_that_cannot_be_read_fails_the_launch(tmp_path):
    job, entries = run_to_its_end(tmp_path, source="gs://b/data/missing.parquet")
    assert_a_failed_launch(job, entries)
    # The cause comes first, as an ordinary line, as the launcher logs it before its failure line.
    assert any("no files match" in text for text in texts(entries)[:-2])


def test_a_launch_parameter_the_program_refuses_fails_the_launch(tmp_path):
    (tmp_path / "buckets" / "b" / "data").mkdir(parents=True)
    (tmp_path / "buckets" / "b" / "data" / "n.csv").write_text(HEADER + "2001,1,7.5,true,25,1,39\n")
    job, entries = run_to_its_end(tmp_path, source="gs://b/data/n.csv", limit="many")
    assert_a_failed_launch(job, entries)
    assert any("invalid int value: 'many'" in text for text in texts(entries))


def test_a_pipeline_that_fails_once_running_fails_the_workflow(tmp_path):
    # The header passes the launch's checks; the bad value is found by the running pipeline.
    (tmp_path / "buckets" / "b" / "data").mkdir(parents=True)
    (tmp_path / "buckets" / "b" / "data" / "n.csv").write_text(HEADER + "2001,1,7.5,maybe,25,1,39\n")
    job, entries = run_to_its_end(tmp_path, source="gs://b/data/n.csv")
    assert job.state == "JOB_STATE_FAILED" and job.launched
    assert not any(DATAFLOW_LAUNCHER_FAILED_LINE in text for text in texts(entries))
    (end,) = forwarded(entries)
    assert end is entries[-1] and end["textPayload"].startswith("Workflow failed. Causes: exit code 2: ")
    assert classify(end).job_name == RUN
