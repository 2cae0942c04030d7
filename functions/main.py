"""The chain's Cloud Functions (2nd gen, CloudEvent signature): four for the events of a run, and
the reconcile sweep on a schedule.

Each entry point decodes its event into a typed trigger (functions.triggers), hands it to its
stage (functions.stages) and logs one structured line. An event that is not what the trigger
should deliver is logged and acknowledged (a retry would not make it better); a `TransientError`
propagates so that the platform delivers the event again.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import flask
import functions_framework
from cloudevents import exceptions as cloudevent_errors

from events.log_entries import JobKind
from functions import bootstrap, triggers
from functions.stages import deploy, preprocess, reconcile, release, start, training
from functions.stages.result import Action, StageResult

log = logging.getLogger("mlrelay.functions")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@functions_framework.cloud_event
def start_pipeline(cloud_event) -> None:
    """messagePublished on the start topic: a trigger file's notification, a cron tick, a message."""
    trigger = triggers.decode_start(cloud_event, topic=bootstrap.context()[0].start_topic)
    _report("start_pipeline", cloud_event,
            trigger if isinstance(trigger, triggers.NotForUs) else start.start_run(*bootstrap.context(), trigger))


@functions_framework.cloud_event
def on_preprocess_output(cloud_event) -> None:
    """Cloud Storage object finalized in the pipeline bucket: start training on a run's manifest."""
    written = triggers.decode_object_finalized(cloud_event)
    _report("on_preprocess_output", cloud_event, _admitting(
        cloud_event,
        written if isinstance(written, triggers.NotForUs) else training.start_training(*bootstrap.context(), written)))


@functions_framework.cloud_event
def on_training_complete(cloud_event) -> None:
    """messagePublished on the job-events topic: a job's terminal LogEntry a log sink forwarded."""
    ended = triggers.decode_job_event(cloud_event, topic=bootstrap.context()[0].job_events_topic)
    _report("on_training_complete", cloud_event,
            _admitting(cloud_event, ended if isinstance(ended, triggers.NotForUs) else _job_ended(ended)))


@functions_framework.cloud_event
def on_release_event(cloud_event) -> None:
    """messagePublished on the release topic: a canary's bake ended (a Cloud Tasks task), or a rollback."""
    asked = triggers.decode_release(cloud_event, topic=bootstrap.context()[0].release_topic)
    if isinstance(asked, triggers.NotForUs):
        result: StageResult | triggers.NotForUs = asked
    elif isinstance(asked, triggers.RollbackAsked):
        result = release.roll_back(*bootstrap.context(), asked)
    else:
        result = release.end_bake(*bootstrap.context(), asked)
    _report("on_release_event", cloud_event, _admitting(cloud_event, result))


@functions_framework.cloud_event
def reconcile_runs(cloud_event) -> None:
    """messagePublished on the reconcile topic (Cloud Scheduler): drive on the runs whose event was lost."""
    asked = triggers.decode_sweep(cloud_event, topic=bootstrap.context()[0].reconcile_topic)
    _report("reconcile_runs", cloud_event,
            asked if isinstance(asked, triggers.NotForUs) else reconcile.sweep(*bootstrap.context(), asked.event_id))


def _job_ended(ended: triggers.JobEnded) -> StageResult:
    config, platform = bootstrap.context()
    terminal = ended.terminal
    if terminal.kind == JobKind.VERTEX_CUSTOM_JOB:
        return training.finish_training(config, platform, ended)
    if terminal.kind == JobKind.VERTEX_DEPLOY_MODEL:
        return deploy.finish_deploy(config, platform, terminal.job_id, ended.event_id)
    # Dataflow: only failures are routed here; a success shows as the manifest.
    return preprocess.confirm_failure(config, platform, terminal.job_id, ended.event_id, terminal.message)


@functions_framework.errorhandler(400)
def _not_a_cloud_event(error):
    """functions-framework refuses a request that is no CloudEvent (a required attribute missing)
    with a 400 before any entry point runs. Pub/Sub retries a 400 until it dead-letters, and no
    retry makes it a CloudEvent: it is acknowledged, with the reason in the function's log line."""
    described = str(getattr(error, "description", error))
    reason = described.rpartition("Got CloudEvent exception: ")[2].split("\n")[0] or described
    return _refused(f"not a CloudEvent: {reason[:300]}")


@functions_framework.errorhandler(cloudevent_errors.DataUnmarshallerError)
def _unreadable_cloud_event(error):
    """The CloudEvents SDK could not read the body (nested beyond what JSON parsing allows): as above."""
    why = "it is nested too deeply to parse" if "RecursionError" in str(error) else str(error)[:300]
    return _refused(f"the event's data cannot be read: {why}")


def _refused(detail: str):
    log.info(json.dumps({"function": flask.current_app.name, "event": flask.request.headers.get("ce-id"),
                         "action": Action.IGNORED.value, "run_id": None, "job": None, "detail": detail}))
    return "", 204


def _admitting(cloud_event, result: StageResult | triggers.NotForUs) -> StageResult | triggers.NotForUs:
    """After a stage that may have ended a run, start the queued runs its slot lets in (listed in
    the line as "admitted"). admit_queued never raises: this event's own work is done, and a fault
    starting a queued run is left to the next run's end or the reconcile sweep, not retried here."""
    if isinstance(result, triggers.NotForUs) or result.action == Action.IGNORED:
        return result
    admitted = [r.run_id for r in start.admit_queued(*bootstrap.context(), cloud_event["id"])
                if r.action == Action.LAUNCHED]
    return replace(result, extra={**result.extra, "admitted": admitted}) if admitted else result


def _report(function: str, cloud_event, result: StageResult | triggers.NotForUs) -> None:
    """The one log line of an invocation (none for the storage trigger's everyday objects)."""
    if isinstance(result, triggers.NotForUs):
        if result.quiet:
            return
        result = StageResult(Action.IGNORED, detail=result.reason)
    line = {"function": function, "event": cloud_event["id"], "action": result.action.value,
            "run_id": result.run_id, "job": result.job, "detail": result.detail}
    if "runs" in result.extra:  # the sweep: what it did to each run
        line["runs"] = result.extra["runs"]
    if result.extra.get("admitted"):  # queued runs this event started
        line["admitted"] = result.extra["admitted"]
    log.info(json.dumps(line))
