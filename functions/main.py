"""The chain's four Cloud Functions (2nd gen, CloudEvent signature).

Each entry point decodes its event into a typed trigger (functions.triggers), hands it to its
stage (functions.stages) and logs one structured line. An event that is not what the trigger
should deliver is logged and acknowledged (a retry would not make it better); a `TransientError`
propagates so that the platform delivers the event again.
"""
from __future__ import annotations

import json
import logging

import functions_framework

from events.log_entries import JobKind
from functions import bootstrap, triggers
from functions.stages import deploy, preprocess, release, start, training
from functions.stages.result import Action, StageResult

log = logging.getLogger("mlrelay.functions")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@functions_framework.cloud_event
def start_pipeline(cloud_event) -> None:
    """messagePublished on the start topic: a trigger file's notification, a cron tick, a message."""
    trigger = triggers.decode_start(cloud_event)
    _report("start_pipeline", cloud_event,
            trigger if isinstance(trigger, triggers.NotForUs) else start.start_run(*bootstrap.context(), trigger))


@functions_framework.cloud_event
def on_preprocess_output(cloud_event) -> None:
    """Cloud Storage object finalized in the pipeline bucket: start training on a run's manifest."""
    written = triggers.decode_object_finalized(cloud_event)
    _report("on_preprocess_output", cloud_event,
            written if isinstance(written, triggers.NotForUs) else training.start_training(*bootstrap.context(), written))


@functions_framework.cloud_event
def on_training_complete(cloud_event) -> None:
    """messagePublished on the job-events topic: a job's terminal LogEntry a log sink forwarded."""
    ended = triggers.decode_job_event(cloud_event)
    _report("on_training_complete", cloud_event,
            ended if isinstance(ended, triggers.NotForUs) else _job_ended(ended))


@functions_framework.cloud_event
def on_release_event(cloud_event) -> None:
    """messagePublished on the release topic: a canary's bake ended (a Cloud Tasks task), or a rollback."""
    asked = triggers.decode_release(cloud_event)
    if isinstance(asked, triggers.NotForUs):
        result: StageResult | triggers.NotForUs = asked
    elif isinstance(asked, triggers.RollbackAsked):
        result = release.roll_back(*bootstrap.context(), asked)
    else:
        result = release.end_bake(*bootstrap.context(), asked)
    _report("on_release_event", cloud_event, result)


def _job_ended(ended: triggers.JobEnded) -> StageResult:
    config, platform = bootstrap.context()
    terminal = ended.terminal
    if terminal.kind == JobKind.VERTEX_CUSTOM_JOB:
        return training.finish_training(config, platform, ended)
    if terminal.kind == JobKind.VERTEX_DEPLOY_MODEL:
        return deploy.finish_deploy(config, platform, terminal.job_id, ended.event_id)
    # Dataflow: only failures are routed here; a success shows as the manifest.
    return preprocess.fail_preprocess(config, platform, terminal.job_name or terminal.job_id, ended.event_id,
                                      reason=f"Dataflow job {terminal.job_id} failed: {terminal.message}")


def _report(function: str, cloud_event, result: StageResult | triggers.NotForUs) -> None:
    """The one log line of an invocation (none for the storage trigger's everyday objects)."""
    if isinstance(result, triggers.NotForUs):
        if result.quiet:
            return
        result = StageResult(Action.IGNORED, detail=result.reason)
    log.info(json.dumps({"function": function, "event": cloud_event["id"], "action": result.action.value,
                         "run_id": result.run_id, "job": result.job, "detail": result.detail}))
