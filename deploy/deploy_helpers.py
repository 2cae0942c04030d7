"""The decisions deploy.sh takes out of bash: settings checks, the functions' environment, staging.

deploy.sh runs ``python deploy/deploy_helpers.py COMMAND ...``; each command is a thin wrapper
around a pure function here, so the tests call the same functions directly. Everything that has
one definition in the project's code (the functions' configuration, the run-request schema, the
images' pinned packages) is taken from there rather than repeated in shell.

Commands (settings are passed as KEY=VALUE arguments, never read from the environment):
  check-settings KEY=VALUE...   print every problem with the settings; exit 1 if there is one
  config-defaults               what deploy.sh takes from the functions' code (KEY=VALUE lines)
  function-env KEY=VALUE...     the functions' --set-env-vars value (MLRELAY_*)
  stage-functions DEST          the functions' source directory: main.py, functions/, events/, requirements.txt
  stage-flex DEST               the Flex Template's build context; prints its content hash
  stage-training DEST           the training image's build context; prints its content hash
  stage-serving DEST            the serving image's build context; prints its content hash
  notifications TOPIC PREFIX BUCKET
                                read `gcloud storage buckets notifications list --format=json` on
                                stdin; print the name of each config that sends PREFIX to TOPIC
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import zoneinfo
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEPLOY_DIR = Path(__file__).resolve().parent
FLEX_DIR = DEPLOY_DIR / "flex_template"
TRAINING_DIR = DEPLOY_DIR / "training_image"
# What the trainer imports (natality_sample's pyarrow and pandas: the Bayes floor of synthetic data).
TRAINING_PINNED = ("tensorflow-cpu", "keras", "numpy", "pyarrow", "pandas")
SERVING_DIR = DEPLOY_DIR / "serving_image"
# What model_server imports: TensorFlow and numpy (the SavedModel in a Session), uvicorn with the C
# parser and event loop it uses when they are installed (as the local endpoint runs), and
# google-cloud-storage (the gs:// copy of the artifacts Vertex AI passes in AIP_STORAGE_URI).
SERVING_PINNED = ("tensorflow-cpu", "numpy", "uvicorn", "httptools", "uvloop", "google-cloud-storage")
FUNCTIONS_ENTRY = DEPLOY_DIR / "functions_main.py"
# The packages the deployed functions import; functions/requirements.txt lists their dependencies.
FUNCTION_PACKAGES = ("functions", "events")
# What the Flex Template's launcher image installs: the pipeline's imports, pinned as the repository
# pins them (requirements.txt), so the image and the local runs use the same versions.
FLEX_PINNED = ("apache-beam", "pyfarmhash", "pyarrow", "numpy")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache")


class DeployError(ValueError):
    """A setting or a file deploy.sh needs is wrong or missing; the message says which."""


# --- settings -----------------------------------------------------------------------------------

_PATTERNS: dict[str, tuple[str, str]] = {
    # name: (regex, what it must be)
    "PROJECT_ID": (r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
                   "6-30 lowercase letters, digits or '-', starting with a letter"),
    "REGION": (r"^[a-z]+-[a-z]+[0-9]+$", "a Google Cloud region such as us-central1"),
    "BUCKET": (r"^(?!goog)(?!.*\.\.)[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$",
               "3-63 lowercase letters, digits, '-', '_' or '.', not starting with 'goog'"),
    "ARTIFACT_REPO": (r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", "lowercase letters, digits and '-'"),
    "SINK_NAME": (r"^[A-Za-z0-9_.-]{1,100}$", "up to 100 letters, digits, '_', '-' or '.'"),
    "SCHEDULER_JOB": (r"^[A-Za-z0-9_-]{1,500}$", "letters, digits, '_' or '-'"),
    "SWEEP_JOB": (r"^[A-Za-z0-9_-]{1,500}$", "letters, digits, '_' or '-'"),
    "ENDPOINT_ID": (r"^([a-z]([a-z0-9-]{0,61}[a-z0-9])?|[1-9][0-9]{0,8})$",
                    "a Vertex AI endpoint id: lowercase letters, digits and '-' starting with a "
                    "letter, or a number of up to 9 digits"),
    "BQ_TEMP_ROLE": (r"^[A-Za-z0-9_.]{3,64}$", "3-64 letters, digits, '_' or '.' (a custom role id)"),
    "TASKS_QUEUE": (r"^[A-Za-z0-9-]{1,100}$", "a Cloud Tasks queue id: 1-100 letters, digits or '-'"),
}
_TOPICS = ("START_TOPIC", "JOB_EVENTS_TOPIC", "DEAD_LETTER_TOPIC", "RELEASE_TOPIC", "RECONCILE_TOPIC",
           "DEAD_LETTER_SUBSCRIPTION")
_TOPIC_PATTERN = r"^(?!goog)[A-Za-z][A-Za-z0-9._~%+-]{2,254}$"
_ACCOUNTS = ("FUNCTIONS_SA_NAME", "DATAFLOW_SA_NAME", "TRAINING_SA_NAME", "TRIGGER_SA_NAME", "BUILD_SA_NAME",
             "TASKS_SA_NAME")
_ACCOUNT_PATTERN = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
_FUNCTIONS = ("START_FUNCTION", "PREPROCESS_FUNCTION", "TRAINING_FUNCTION", "RELEASE_FUNCTION", "RECONCILE_FUNCTION")
_FUNCTION_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
# name: (lowest, highest)
_INTEGERS: dict[str, tuple[int, int]] = {
    "MAX_DELIVERY_ATTEMPTS": (5, 100),  # the bounds Pub/Sub accepts
    "FUNCTION_MAX_INSTANCES": (1, 1000),
    "MAX_WORKERS": (1, 1000),
}
_NO_SEPARATORS = ("TRAINING_IMAGE", "SERVING_IMAGE", "SERVING_MACHINE_TYPE")
# The release policy's settings: setting -> (functions.config.Config field, type). Their ranges
# are the policy's own (functions.release.policy), checked by building one.
_RELEASE: dict[str, tuple[str, type]] = {
    "CANARY_PERCENT": ("canary_percent", int),
    "BAKE_SECONDS": ("bake_seconds", int),
    "GATE_MIN_IMPROVEMENT": ("gate_min_improvement", float),
    "GATE_TOLERANCE": ("gate_tolerance", float),
    "GATE_SLICE_TOLERANCE": ("gate_slice_tolerance", float),
}
# The functions' whole-number guards: setting -> functions.config.Config field. Their least values
# are Config's own (Config.from_env refuses what the functions would refuse), checked by reading one.
_GUARDS: dict[str, str] = {
    "RECONCILE_AFTER_SECONDS": "reconcile_after_seconds",
    "DEBOUNCE_SECONDS": "debounce_seconds",
    "MAX_ACTIVE_RUNS": "max_active_runs",
    "MAX_QUEUED_RUNS": "max_queued_runs",
    "DAILY_RUN_BUDGET": "daily_run_budget",
}


def settings_errors(settings: Mapping[str, str]) -> list[str]:
    """Every problem with deploy.sh's settings, one line each (empty when they are all usable)."""
    errors: list[str] = []
    if not settings.get("PROJECT_ID"):
        return ["PROJECT_ID is not set: export PROJECT_ID=<your Google Cloud project id> and run again"]

    def check(name: str, pattern: str, rule: str) -> None:
        if name in settings and not re.match(pattern, settings[name]):
            errors.append(f"{name}={settings[name]!r} is not valid: it must be {rule}")

    for name, (pattern, rule) in _PATTERNS.items():
        check(name, pattern, rule)
    for name in _TOPICS:
        check(name, _TOPIC_PATTERN, "a Pub/Sub name: 3-255 letters, digits or ._~%+- starting with a letter")
    for name in _ACCOUNTS:
        check(name, _ACCOUNT_PATTERN, "a service account id: 6-30 lowercase letters, digits or '-'")
    for name in _FUNCTIONS:
        check(name, _FUNCTION_PATTERN, "a function name: lowercase letters, digits and '-'")
    for name, (low, high) in _INTEGERS.items():
        if name in settings:
            value = settings[name]
            if not re.fullmatch(r"[0-9]+", value) or not low <= int(value) <= high:
                errors.append(f"{name}={value!r} is not valid: it must be a whole number from {low} to {high}")
    for name in _NO_SEPARATORS:
        if name in ("TRAINING_IMAGE", "SERVING_IMAGE") and not settings.get(name):
            continue  # unset: deploy.sh builds the project's own
        if name in settings and (not settings[name] or re.search(r"[\s,]", settings[name])):
            errors.append(f"{name}={settings[name]!r} is not valid: it must be non-empty, without spaces or commas")
    if "MODEL_NAME" in settings:
        from events.run_request import MODEL_NAME_PATTERN

        check("MODEL_NAME", MODEL_NAME_PATTERN, "1-63 lowercase letters, digits and '-', starting with a letter")
    errors.extend(_release_errors(settings))
    errors.extend(_guard_errors(settings))
    errors.extend(_schedule_errors(settings))
    return errors


def _release_errors(settings: Mapping[str, str]) -> list[str]:
    """Each release setting checked alone against the policy's range (the others at their defaults),
    so that every bad one is named."""
    from functions.config import Config

    errors = []
    for name, (field, kind) in _RELEASE.items():
        if name not in settings:
            continue
        value = settings[name]
        pattern = r"[-+]?[0-9]+" if kind is int else r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?"
        if not re.fullmatch(pattern, value):
            what = "a whole number" if kind is int else "a number"
            errors.append(f"{name}={value!r} is not valid: it must be {what}")
            continue
        try:
            Config(**{field: kind(value)}).release_policy()
        except ValueError as exc:  # InvalidReleasePolicy: names the threshold and its range
            errors.append(f"{name}={value!r} is not valid: {exc}")
    return errors


def _guard_errors(settings: Mapping[str, str]) -> list[str]:
    """Each guard checked alone the way the deployed functions read it (functions.config)."""
    from functions.config import ENV_NAMES, Config, ConfigError

    errors = []
    for name, field in _GUARDS.items():
        if name not in settings:
            continue
        value = settings[name]
        if not re.fullmatch(r"[0-9]+", value):
            errors.append(f"{name}={value!r} is not valid: it must be a whole number")
            continue
        try:
            Config.from_env({"MLRELAY_PLATFORM": "gcp", f"MLRELAY_{ENV_NAMES[field]}": value})
        except ConfigError as exc:
            errors.append(f"{name}={value!r} is not valid: {exc}")
    return errors


def _schedule_errors(settings: Mapping[str, str]) -> list[str]:
    errors = []
    for name, example in (("SCHEDULE", "0 3 * * 1"), ("SWEEP_SCHEDULE", "*/5 * * * *")):
        if name in settings:
            from croniter import croniter

            schedule = settings[name]
            if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
                errors.append(f"{name}={schedule!r} is not a cron schedule of 5 fields (e.g. '{example}')")
    if "SCHEDULE_TZ" in settings:
        try:
            zoneinfo.ZoneInfo(settings["SCHEDULE_TZ"])
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            errors.append(f"SCHEDULE_TZ={settings['SCHEDULE_TZ']!r} is not a time zone name (e.g. Etc/UTC)")
    if "SCHEDULE_REQUEST" in settings:
        from events.run_request import InvalidRunRequest, parse_run_request

        try:
            parse_run_request(settings["SCHEDULE_REQUEST"])
        except InvalidRunRequest as exc:
            errors.append(f"SCHEDULE_REQUEST is not a run request the chain accepts: {exc}")
    return errors


def config_defaults() -> dict[str, str]:
    """What deploy.sh takes from the functions' code: the defaults of functions.config.Config, and
    TRIGGER_PREFIX, the prefix start_pipeline accepts trigger files under (not a setting: the
    notification must send exactly what the function accepts)."""
    from functions.config import Config
    from functions.run_store import TRIGGER_PREFIX

    defaults = {f.name: f.default for f in fields(Config)}
    return {
        "TRIGGER_PREFIX": TRIGGER_PREFIX,
        "START_TOPIC": defaults["start_topic"],
        "JOB_EVENTS_TOPIC": defaults["job_events_topic"],
        "DEAD_LETTER_TOPIC": defaults["dead_letter_topic"],
        "RELEASE_TOPIC": defaults["release_topic"],
        "RECONCILE_TOPIC": defaults["reconcile_topic"],
        "MODEL_NAME": defaults["model_name"],
        "ENDPOINT_ID": defaults["endpoint_id"],
        **{name: str(defaults[field]) for name, (field, _) in _RELEASE.items()},
        **{name: str(defaults[field]) for name, field in _GUARDS.items()},
        "TASKS_QUEUE": defaults["tasks_queue"],
        "SERVING_MACHINE_TYPE": defaults["serving_machine_type"],
        "MAX_WORKERS": str(defaults["max_workers"]),
    }


def function_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The MLRELAY_* environment of the deployed functions, written by Config itself.

    Building a Config and asking it for its environment keeps the variable names in one place;
    reading that environment back must give the same Config, or the functions would run with
    settings other than the ones deployed.
    """
    from functions.config import Config

    values: dict[str, Any] = {
        "platform": "gcp",
        "project": settings["PROJECT_ID"],
        "region": settings["REGION"],
        "bucket": settings["BUCKET"],
        "start_topic": settings["START_TOPIC"],
        "job_events_topic": settings["JOB_EVENTS_TOPIC"],
        "dead_letter_topic": settings["DEAD_LETTER_TOPIC"],
        "release_topic": settings["RELEASE_TOPIC"],
        "reconcile_topic": settings["RECONCILE_TOPIC"],
        "model_name": settings["MODEL_NAME"],
        "endpoint_id": settings["ENDPOINT_ID"],
        **{field: kind(settings[name]) for name, (field, kind) in _RELEASE.items()},
        **{field: int(settings[name]) for name, field in _GUARDS.items()},
        "tasks_queue": settings["TASKS_QUEUE"],
        "tasks_service_account": settings["TASKS_SA"],
        "default_source": "bigquery",
        "dataflow_service_account": settings["DATAFLOW_SA"],
        "training_service_account": settings["TRAINING_SA"],
        "training_image": settings["TRAINING_IMAGE"],
        "serving_image": settings["SERVING_IMAGE"],
        "flex_template": settings["FLEX_TEMPLATE"],
        "max_workers": int(settings["MAX_WORKERS"]),
        "serving_machine_type": settings["SERVING_MACHINE_TYPE"],
    }
    config = Config(**values)
    env = config.to_env()
    bad = [f"{key}={value!r}" for key, value in env.items() if re.search(r"[,\n]", value)]
    if bad:
        raise DeployError(f"these values cannot be passed with --set-env-vars (comma or newline): {', '.join(bad)}")
    if Config.from_env(env) != config:
        raise DeployError("functions.config.Config does not read back the environment it writes")
    return env


def env_vars_flag(env: Mapping[str, str]) -> str:
    """KEY=VALUE pairs joined the way `gcloud functions deploy --set-env-vars` takes them."""
    return ",".join(f"{key}={value}" for key, value in env.items())


# --- staging ------------------------------------------------------------------------------------

def stage_functions(dest: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Lay out the functions' source as Cloud Functions builds it: main.py at the root.

    main.py re-exports the entry points of functions.main; functions/ and events/ are copied
    as they are; functions/requirements.txt becomes the root requirements.txt the build installs.
    """
    requirements = repo_root / "functions" / "requirements.txt"
    if not requirements.is_file():
        raise DeployError(f"{requirements} is missing: the functions' dependencies are listed there")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for package in FUNCTION_PACKAGES:
        source = repo_root / package
        if not (source / "__init__.py").is_file():
            raise DeployError(f"{source} is not a Python package: the functions import it")
        shutil.copytree(source, dest / package, ignore=_IGNORED, dirs_exist_ok=True)
    shutil.copy2(repo_root / "deploy" / FUNCTIONS_ENTRY.name, dest / "main.py")
    shutil.copy2(requirements, dest / "requirements.txt")
    return dest


def pinned_requirements(requirements_text: str, names: Iterable[str] = FLEX_PINNED,
                        image: str = "the Flex Template image") -> list[str]:
    """The lines of a requirements file that pin ``names`` (extras kept), in the order of ``names``."""
    pins: dict[str, str] = {}
    for line in requirements_text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*\S+$", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = line
    missing = [name for name in names if name not in pins]
    if missing:
        raise DeployError(f"requirements.txt pins none of {', '.join(missing)} ({image} needs them)")
    return [pins[name] for name in names]


def stage_flex(dest: Path, repo_root: Path = REPO_ROOT) -> str:
    """Lay out the Flex Template's build context and return its content hash (the image tag)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    template_dir = repo_root / "deploy" / FLEX_DIR.name
    for name in ("Dockerfile", "main.py", "metadata.json"):
        if not (template_dir / name).is_file():
            raise DeployError(f"{template_dir / name} is missing")
        shutil.copy2(template_dir / name, dest / name)
    pipeline = repo_root / "beam_pipeline"
    if not (pipeline / "setup.py").is_file():
        raise DeployError(f"{pipeline / 'setup.py'} is missing: Dataflow workers install the pipeline from it")
    shutil.copytree(pipeline, dest / "beam_pipeline", ignore=_IGNORED, dirs_exist_ok=True)
    pins = pinned_requirements((repo_root / "requirements.txt").read_text())
    (dest / "requirements.txt").write_text("\n".join(pins) + "\n")
    return content_hash(dest)


def _stage_image(dest: Path, repo_root: Path, image_dir: Path, packages: Iterable[str],
                 pinned: Iterable[str], image: str) -> str:
    """Lay out an image's build context (its Dockerfile, the packages it ships, the repository's pins
    of what they import) and return its content hash (the image tag)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dockerfile = repo_root / "deploy" / image_dir.name / "Dockerfile"
    if not dockerfile.is_file():
        raise DeployError(f"{dockerfile} is missing")
    shutil.copy2(dockerfile, dest / "Dockerfile")
    for package in packages:
        if not (repo_root / package / "__init__.py").is_file():
            raise DeployError(f"{repo_root / package} is not a package: {image} ships it")
        shutil.copytree(repo_root / package, dest / package, ignore=_IGNORED, dirs_exist_ok=True)
    pins = pinned_requirements((repo_root / "requirements.txt").read_text(), pinned, image)
    (dest / "requirements.txt").write_text("\n".join(pins) + "\n")
    return content_hash(dest)


def stage_training(dest: Path, repo_root: Path = REPO_ROOT) -> str:
    """The training image's build context; returns its content hash (the image tag)."""
    return _stage_image(dest, repo_root, TRAINING_DIR, ("trainer", "natality_sample"), TRAINING_PINNED,
                        "the training image")


def stage_serving(dest: Path, repo_root: Path = REPO_ROOT) -> str:
    """The serving image's build context; returns its content hash (the image tag)."""
    return _stage_image(dest, repo_root, SERVING_DIR, ("model_server",), SERVING_PINNED, "the serving image")

def content_hash(directory: Path, length: int = 16) -> str:
    """A hash of every file's relative path and bytes: equal trees, equal hashes."""
    digest = hashlib.sha256()
    directory = Path(directory)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:length]


def matching_notifications(listing: Any, topic: str, prefix: str, bucket: str) -> list[str]:
    """The notification configs of ``bucket`` that send objects under ``prefix`` to ``topic``.

    ``listing`` is the answer of `gcloud storage buckets notifications list --format=json`; config
    objects are found wherever they sit in it, so the check does not depend on how the listing
    wraps them. ``topic`` is a topic id or projects/P/topics/T. Returns the configs' names in the
    form `gcloud storage buckets notifications delete` takes.
    """
    wanted = topic.rsplit("/", 1)[-1]
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            node_topic = node.get("topic")
            if isinstance(node_topic, str) and "id" in node:
                if node_topic.rsplit("/topics/", 1)[-1] == wanted and (node.get("object_name_prefix") or "") == prefix:
                    found.append(f"projects/_/buckets/{bucket}/notificationConfigs/{node['id']}")
                return
            for value in node.values():
                visit(value)

    visit(listing)
    return found


# --- command line -------------------------------------------------------------------------------

def _settings(args: list[str]) -> dict[str, str]:
    settings = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise DeployError(f"expected KEY=VALUE, got {arg!r}")
        settings[key] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    try:
        if command == "check-settings":
            errors = settings_errors(_settings(rest))
            for error in errors:
                print(f"deploy.sh: {error}", file=sys.stderr)
            return 1 if errors else 0
        if command == "config-defaults":
            for key, value in config_defaults().items():
                print(f"{key}={value}")
        elif command == "function-env":
            print(env_vars_flag(function_env(_settings(rest))))
        elif command == "stage-functions":
            stage_functions(Path(rest[0]))
        elif command == "stage-flex":
            print(stage_flex(Path(rest[0])))
        elif command == "stage-training":
            print(stage_training(Path(rest[0])))
        elif command == "stage-serving":
            print(stage_serving(Path(rest[0])))
        elif command == "notifications":
            text = sys.stdin.read().strip()
            for name in matching_notifications(json.loads(text) if text else [], rest[0], rest[1], rest[2]):
                print(name)
        else:
            print(f"deploy_helpers: unknown command {command!r}\n{__doc__}", file=sys.stderr)
            return 2
    except (DeployError, IndexError, KeyError, json.JSONDecodeError) as exc:
        detail = f"missing argument or setting {exc}" if isinstance(exc, (IndexError, KeyError)) else exc
        print(f"deploy.sh: {command}: {detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
