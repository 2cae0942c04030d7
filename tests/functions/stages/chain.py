"""Driving runs through the stages against the fakes, as the events would, for the stage tests.

Each step is a stage call; the fakes stand in for the cloud (a deploy ends when `complete` is
called, as Vertex's does later). The trainer is stood in for by `write_comparison`, which names
the champion the trainer was given (`--champion-model-dir`), as the real one does.
"""
from __future__ import annotations

import json

from functions.run_store import RunStore
from functions.stages.deploy import finish_deploy
from functions.stages.start import start_run
from functions.stages.training import finish_training, start_training
from functions.triggers import BakeEnded
from tests.fakes.runs import message, training_ended, write_comparison, write_manifest

MODEL = "projects/p/locations/r/models/babyweight"


def version(n: int) -> str:
    return f"{MODEL}@{n}"


def twice(stage, *args) -> list[str]:
    """Deliver the same event twice (at least once means maybe twice); the two actions."""
    return [stage(*args).action.value for _ in range(2)]


def champion_arg(platform, run_id: str) -> str | None:
    """The --champion-model-dir the run's training job was launched with, if any."""
    (args,) = [call[3] for call in platform.jobs.training_calls if call[0] == run_id]
    return args[args.index("--champion-model-dir") + 1] if "--champion-model-dir" in args else None


def start_and_launch_training(config, platform, tag: str, request: dict | None = None, **manifest):
    """A run started by message `tag` whose manifest was written: its id and the stage's result."""
    run = start_run(config, platform, message(json.dumps(request or {}).encode(), message_id=tag)).run_id
    return run, start_training(config, platform, write_manifest(platform.storage, run, **manifest))


def trained(config, platform, tag: str, candidate: float = 1.0, champion: float | None = 1.0,
            request: dict | None = None, **manifest) -> tuple[str, str]:
    """A run whose training job succeeded, with comparison.json scoring the candidate at `candidate`
    and the champion it was given (if it was given one) at `champion`: (run id, job id)."""
    run, launched = start_and_launch_training(config, platform, tag, request, **manifest)
    assert launched.action == "launched", launched
    platform.jobs.finish(launched.job, "JOB_STATE_SUCCEEDED")
    uri = champion_arg(platform, run)
    write_comparison(platform.storage, run, candidate, champion if uri else None, uri)
    return run, launched.job


def end_training(config, platform, job_id: str):
    return finish_training(config, platform, training_ended(job_id))


def last_operation(platform) -> str:
    return f"projects/p/locations/r/endpoints/{platform.models.deploys[-1][1]}/operations/{len(platform.models.deploys)}"


def deploy_ends(config, platform, op_name: str | None = None, error: str = ""):
    """The deploy operation ends (Vertex), then its end is delivered to finish_deploy twice."""
    op_name = op_name or last_operation(platform)
    platform.models.complete(op_name, error)
    return twice(finish_deploy, config, platform, op_name, "e-deployed")


def serving_champion(config, platform, tag: str = "m-first", **manifest) -> str:
    """A first run deployed at 100 % (deployed model dm1, version 1): its run id."""
    run, job_id = trained(config, platform, tag, **manifest)
    end_training(config, platform, job_id)
    assert deploy_ends(config, platform) == ["recorded", "duplicate"]
    return run


def baking_canary(config, platform, tag: str = "m-canary", candidate: float = 0.9) -> tuple[str, BakeEnded]:
    """A candidate baking beside the champion: its run id and the bake-end the scheduled task publishes."""
    run, job_id = trained(config, platform, tag, candidate=candidate, champion=1.0)
    assert end_training(config, platform, job_id).action == "launched"
    assert deploy_ends(config, platform) == ["recorded", "duplicate"]
    return run, bake_end_of(platform, run)


def bake_end_of(platform, run_id: str, event_id: str = "e-bake") -> BakeEnded:
    """The message the run's bake task publishes, decoded as on_release_event decodes it."""
    from events.timestamps import parse_rfc3339

    _, body, _ = platform.tasks.scheduled[f"bake-end-{run_id}"]
    return BakeEnded(event_id, body["run_id"], body["candidate"], body["champion"], parse_rfc3339(body["bake_started"]))


def status(config, platform, run_id: str):
    (folded,) = RunStore(platform.storage, config.bucket).statuses(run_id)
    return folded


def record_of(config, platform, run_id: str, state: str):
    """The run's first ledger record of `state`."""
    ledger = RunStore(platform.storage, config.bucket).ledger(run_id)[run_id]
    return next(e for e in sorted(ledger, key=lambda e: e.time) if e.state.value == state)


def releases(config, platform) -> list[dict]:
    return RunStore(platform.storage, config.bucket).releases()


def endpoint_now(platform) -> tuple[list[str], dict[str, int]]:
    """What the endpoint serves: deployed model ids, and the split."""
    return [d.id for d in platform.models.deployed], dict(platform.models.split)


def aliases(platform) -> dict[str, set[str]]:
    return {name: held for name, held in platform.models.aliases.items() if held}


def good_figures(platform, candidate: str = "dm2", champion: str = "dm1") -> None:
    """Serving figures over the bake that promote the canary: no errors, a latency like the champion's."""
    platform.metrics.figures_by_model.update({
        candidate: {"requests": 100, "errors": 0, "latency_p99_ms": 40.0},
        champion: {"requests": 900, "errors": 1, "latency_p99_ms": 35.0}})
