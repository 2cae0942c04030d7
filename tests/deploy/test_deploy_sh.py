"""deploy.sh against a recording fake gcloud (tests/fakes/cloud_cli/gcloud).

A copy of the repository is deployed to a fake project; the recorded calls and the fake's state say
what a real project would hold: the APIs, the bucket, topics and trigger-file notification, the
service accounts and every IAM binding (exactly those, nothing broader), the sink with the code's
filter, the four functions of a run's events with their triggers and dead letters, the reconcile
sweep (run once per tick, on a schedule of its own), the release queue whose tasks end the canaries'
bakes, the Flex Template, the images, the endpoint and the two schedules. A second run
must create nothing; a dry run must need no gcloud and change nothing; a teardown must leave
nothing behind. The Python the script relies on
(deploy/deploy_helpers.py, the Flex Template's entry point) is tested directly at the end.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from events.run_request import parse_run_request
from functions.config import Config
from functions.run_store import TRIGGER_PREFIX
from tests.conftest import REPO

FAKE_CLI = REPO / "tests" / "fakes" / "cloud_cli"
BASH = shutil.which("bash")
COPIED = ("deploy", "functions", "events", "beam_pipeline", "trainer", "natality_sample", "model_server", "mlrelay")
PROJECT = "mlrelay-test-proj"
NUMBER = "123456789012"
REGION = "europe-west4"  # not the default, so the setting is seen to reach every command
BUCKET = f"{PROJECT}-mlrelay"


def _sa(name: str) -> str:
    return f"{name}@{PROJECT}.iam.gserviceaccount.com"


FUNCTIONS_SA, DATAFLOW_SA = _sa("mlrelay-functions"), _sa("mlrelay-dataflow")
TRAINING_SA, TRIGGER_SA = _sa("mlrelay-training"), _sa("mlrelay-trigger")
BUILD_SA, TASKS_SA = _sa("mlrelay-build"), _sa("mlrelay-release-publisher")
BUILD_SA_RESOURCE = f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}"
PUBSUB_AGENT = f"service-{NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
GCS_AGENT = f"service-{NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
FUNCTIONS = {  # name: (entry point, trigger)
    "mlrelay-start-pipeline": ("start_pipeline", "start"),
    "mlrelay-on-preprocess-output": ("on_preprocess_output", "storage"),
    "mlrelay-on-training-complete": ("on_training_complete", "job-events"),
    "mlrelay-on-release-event": ("on_release_event", "release"),
    "mlrelay-reconcile-runs": ("reconcile_runs", "reconcile"),
}
# Run once per event, neither retried nor dead-lettered: a failed sweep is made good by the next tick.
ONCE = {"mlrelay-reconcile-runs"}
SWEEP = "mlrelay-reconcile-runs"
# The settings deploy.sh passes to every function beyond the names of what it provisioned.
GUARDS = ("MLRELAY_RECONCILE_AFTER_SECONDS", "MLRELAY_DEBOUNCE_SECONDS", "MLRELAY_MAX_ACTIVE_RUNS",
          "MLRELAY_MAX_QUEUED_RUNS", "MLRELAY_DAILY_RUN_BUDGET")
QUEUE = f"{REGION}/mlrelay-release"  # the fake's key of a queue: location/id

_loader = importlib.machinery.SourceFileLoader("fake_gcloud", str(FAKE_CLI / "gcloud"))
_spec = importlib.util.spec_from_loader("fake_gcloud", _loader)
fake_gcloud = importlib.util.module_from_spec(_spec)
_loader.exec_module(fake_gcloud)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deploy_helpers = _load("deploy_helpers", REPO / "deploy" / "deploy_helpers.py")


# --- running deploy.sh --------------------------------------------------------------------------

class Workspace:
    """A copy of the repository, a fake project and the environment deploy.sh runs in."""

    def __init__(self, root: Path):
        self.root = root
        self.repo = root / "repo"
        self.repo.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in COPIED:
            shutil.copytree(REPO / name, self.repo / name, ignore=ignore)
        for name in ("deploy.sh", "requirements.txt"):
            shutil.copy2(REPO / name, self.repo / name)
        self.bin = root / "bin"  # python3 for the fake: the test's own interpreter, quick to start
        self.bin.mkdir()
        (self.bin / "python3").symlink_to(sys.executable)
        self.state = root / "state.json"
        self.uploads = root / "uploads"
        self.runs = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("FAKE_GCLOUD", "MLRELAY_"))}
        env.update(PATH=f"{FAKE_CLI}:{self.bin}:{os.environ['PATH']}", PROJECT_ID=PROJECT, REGION=REGION,
                   PYTHON=sys.executable, RETRY_DELAY="0", FAKE_GCLOUD_STATE=str(self.state),
                   FAKE_GCLOUD_UPLOADS=str(self.uploads), FAKE_GCLOUD_PROJECT_NUMBER=NUMBER)
        env.update(extra)
        return env

    def run(self, *args: str, env: dict[str, str] | None = None) -> "Run":
        self.runs += 1
        log = self.root / f"calls-{self.runs}.jsonl"
        env = dict(env if env is not None else self.env())
        env["FAKE_GCLOUD_LOG"] = str(log)
        result = subprocess.run([BASH, str(self.repo / "deploy.sh"), *args], env=env,
                                capture_output=True, text=True, timeout=120)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        state = json.loads(self.state.read_text()) if self.state.exists() else {}
        return Run(result, calls, state)


class Run:
    def __init__(self, result: subprocess.CompletedProcess, calls: list[dict], state: dict):
        self.result, self.state = result, state
        self.calls = [(fake_gcloud.Call(*fake_gcloud.split_command(c["argv"])), c["exit"]) for c in calls]
        self.errors = [c["error"] for c in calls]

    def ok(self) -> "Run":
        """deploy.sh succeeded, and every call that failed was a look-up told "not found"."""
        assert self.result.returncode == 0, self.result.stdout[-3000:] + self.result.stderr[-3000:]
        failed = [error for (call, code), error in zip(self.calls, self.errors)
                  if code != 0 and not ("NOT_FOUND" in error or "not found" in error)]
        assert not failed, failed
        return self

    def named(self, *words: str) -> list:
        return [call for call, _ in self.calls if call.words == words]

    def only(self, *words: str):
        found = self.named(*words)
        assert len(found) == 1, (words, len(found))
        return found[0]

    def resources(self, kind: str) -> dict:
        return self.state["resources"].get(kind, {})

    def bindings(self) -> set[tuple[str, str, str]]:
        return {(b["resource"], b["member"], b["role"]) for b in self.state["bindings"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("deploy"))
    assert shutil.which("gcloud", path=ws.env()["PATH"]) == str(FAKE_CLI / "gcloud")
    return ws


@pytest.fixture(scope="module")
def first(workspace) -> Run:
    return workspace.run().ok()


@pytest.fixture(scope="module")
def second(workspace, first) -> Run:
    return workspace.run().ok()


@pytest.fixture(scope="module")
def teardown(workspace, second) -> Run:
    return workspace.run("--teardown").ok()


def _function_env(call) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in call.required("set-env-vars").split(","))


def _trigger_subscription(run: Run, function: str) -> str:
    trigger = run.resources("function")[function]["eventTrigger"]["trigger"]
    return run.resources("trigger")[trigger]["transport"]["pubsub"]["subscription"].rsplit("/", 1)[-1]


# --- the first deployment -----------------------------------------------------------------------

def test_every_api_the_chain_uses_is_enabled(first):
    enabled = set(first.only("services", "enable").positionals)
    wanted = {f"{name}.googleapis.com" for name in (
        "cloudfunctions", "run", "eventarc", "pubsub", "storage", "dataflow", "aiplatform",
        "cloudscheduler", "logging", "cloudbuild", "artifactregistry", "cloudtasks", "monitoring")}
    assert wanted <= enabled
    first_call = first.calls[0][0]
    assert first_call.words == ("services", "enable")  # before anything uses them


def test_every_call_names_the_project_and_every_create_is_looked_up_first(first):
    for call, _ in first.calls:
        assert call.flag("project") == PROJECT
    seen: list[tuple[str, ...]] = []
    for call, _ in first.calls:
        words = call.words[:-1] if call.words[-1] == "pubsub" else call.words
        if words[-1] == "create":
            group = words[:-1]
            assert group + ("describe",) in seen or group + ("list",) in seen, words
        seen.append(call.words)


def test_bucket_has_uniform_access_in_the_region_and_expires_temp_files(first):
    bucket = first.resources("bucket")[BUCKET]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] is True
    assert bucket["location"] == REGION.upper()
    (rule,) = bucket["lifecycle"]["rule"]
    assert rule["action"]["type"] == "Delete" and rule["condition"]["matchesPrefix"] == ["tmp/"]


def test_topics_and_a_subscription_that_keeps_dead_letters(first):
    assert set(first.resources("topic")) == {"mlrelay-start", "mlrelay-job-events", "mlrelay-dead-letter",
                                             "mlrelay-release", "mlrelay-reconcile"}
    hold = first.resources("subscription")["mlrelay-dead-letter-hold"]
    assert hold["topic"].endswith("/topics/mlrelay-dead-letter") and hold["messageRetentionDuration"] == "7d"


def test_trigger_files_notify_the_start_topic(first):
    (notification,) = first.resources("notification").values()
    assert notification["topic"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-start"
    assert notification["object_name_prefix"] == TRIGGER_PREFIX == "triggers/"
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["payload_format"] == "JSON_API_V1"


def test_service_accounts_and_exactly_the_bindings_each_needs(first):
    assert set(first.resources("service_account")) == {FUNCTIONS_SA, DATAFLOW_SA, TRAINING_SA, TRIGGER_SA, BUILD_SA,
                                                       TASKS_SA}
    role = first.resources("role")["mlrelayBigQueryTempDatasets"]
    assert role["includedPermissions"] == ["bigquery.datasets.create"]
    writer = first.resources("sink")["mlrelay-job-events"]["writerIdentity"]
    sa = "serviceAccount:"
    expected = {
        (f"project:{PROJECT}", sa + FUNCTIONS_SA, "roles/dataflow.developer"),
        (f"project:{PROJECT}", sa + FUNCTIONS_SA, "roles/aiplatform.user"),
        (f"project:{PROJECT}", sa + FUNCTIONS_SA, "roles/monitoring.viewer"),
        (f"service_account:{TASKS_SA}", sa + FUNCTIONS_SA, "roles/iam.serviceAccountUser"),
        (f"queue:{QUEUE}", sa + FUNCTIONS_SA, "roles/cloudtasks.enqueuer"),
        ("topic:mlrelay-release", sa + TASKS_SA, "roles/pubsub.publisher"),
        (f"project:{PROJECT}", sa + DATAFLOW_SA, "roles/dataflow.worker"),
        (f"project:{PROJECT}", sa + DATAFLOW_SA, "roles/bigquery.jobUser"),
        (f"project:{PROJECT}", sa + DATAFLOW_SA, "roles/bigquery.readSessionUser"),
        (f"project:{PROJECT}", sa + DATAFLOW_SA, f"projects/{PROJECT}/roles/mlrelayBigQueryTempDatasets"),
        (f"project:{PROJECT}", sa + TRIGGER_SA, "roles/eventarc.eventReceiver"),
        (f"project:{PROJECT}", sa + GCS_AGENT, "roles/pubsub.publisher"),
        (f"bucket:{BUCKET}", sa + FUNCTIONS_SA, "roles/storage.objectAdmin"),
        (f"bucket:{BUCKET}", sa + DATAFLOW_SA, "roles/storage.objectAdmin"),
        (f"bucket:{BUCKET}", sa + TRAINING_SA, "roles/storage.objectAdmin"),
        (f"service_account:{DATAFLOW_SA}", sa + FUNCTIONS_SA, "roles/iam.serviceAccountUser"),
        (f"service_account:{TRAINING_SA}", sa + FUNCTIONS_SA, "roles/iam.serviceAccountUser"),
        (f"service_account:{TRIGGER_SA}", sa + PUBSUB_AGENT, "roles/iam.serviceAccountTokenCreator"),
        ("topic:mlrelay-dead-letter", sa + PUBSUB_AGENT, "roles/pubsub.publisher"),
        ("topic:mlrelay-job-events", writer, "roles/pubsub.publisher"),
        ("repository:mlrelay", sa + DATAFLOW_SA, "roles/artifactregistry.reader"),
        (f"project:{PROJECT}", sa + BUILD_SA, "roles/logging.logWriter"),
        (f"project:{PROJECT}", sa + BUILD_SA, "roles/storage.objectViewer"),
        (f"bucket:{BUCKET}", sa + BUILD_SA, "roles/storage.objectAdmin"),
        ("repository:mlrelay", sa + BUILD_SA, "roles/artifactregistry.writer"),
    }
    for function in FUNCTIONS:
        expected.add((f"function:{function}", sa + TRIGGER_SA, "roles/run.invoker"))
        if function not in ONCE:  # Pub/Sub acknowledges what it dead-letters as the subscriber
            expected.add((f"subscription:{_trigger_subscription(first, function)}", sa + PUBSUB_AGENT,
                          "roles/pubsub.subscriber"))
    assert first.bindings() == expected
    broad = {"roles/owner", "roles/editor", "roles/viewer", "roles/storage.admin", "roles/bigquery.admin",
             "roles/pubsub.admin", "roles/iam.serviceAccountAdmin", "roles/dataflow.admin", "roles/aiplatform.admin",
             "roles/cloudtasks.admin", "roles/cloudtasks.queueAdmin", "roles/monitoring.editor",
             "roles/monitoring.admin"}
    assert not {role for _, _, role in first.bindings()} & broad
    assert all(resource == f"bucket:{BUCKET}" for resource, _, role in first.bindings() if role.endswith("Admin"))


def test_sink_forwards_exactly_the_filter_of_the_code_to_the_job_events_topic(first):
    printed = subprocess.run([sys.executable, "-m", "events.sink_filters", "job-events"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    sink = first.resources("sink")["mlrelay-job-events"]
    assert sink["filter"] == printed
    assert sink["destination"] == f"pubsub.googleapis.com/projects/{PROJECT}/topics/mlrelay-job-events"
    assert first.only("logging", "sinks", "create").required("log-filter") == printed


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_is_deployed_gen2_private_with_its_trigger_and_delivery(first, name):
    entry_point, trigger = FUNCTIONS[name]
    (call,) = [c for c in first.named("functions", "deploy") if c.positional() == name]
    assert call.flag("gen2") is True and call.flag("runtime") == "python311"
    assert call.flag("region") == REGION and call.flag("entry-point") == entry_point
    assert call.flag("no-allow-unauthenticated") is True and call.flag("allow-unauthenticated") is None
    assert call.flag("retry") is (None if name in ONCE else True)
    assert call.flag("service-account") == FUNCTIONS_SA and call.flag("trigger-service-account") == TRIGGER_SA
    # built as the build account into the project's own repository, never as the Compute default account
    assert call.flag("build-service-account") == BUILD_SA_RESOURCE
    assert call.flag("docker-repository") == f"projects/{PROJECT}/locations/{REGION}/repositories/mlrelay"
    assert call.flag("min-instances") == "0"
    assert int(call.flag("timeout").rstrip("s")) <= 540  # event-driven functions' limit
    filters = sorted(call.flags.get("trigger-event-filters", []))
    if trigger == "storage":
        assert filters == [f"bucket={BUCKET}", "type=google.cloud.storage.object.v1.finalized"]
        assert call.flag("trigger-topic") is None and call.flag("trigger-location") == REGION
    else:
        assert filters == [] and call.flag("trigger-topic") == f"mlrelay-{trigger}"
    subscription = first.resources("subscription")[_trigger_subscription(first, name)]
    if name in ONCE:
        assert "deadLetterPolicy" not in subscription
        return
    assert subscription["deadLetterPolicy"] == {"deadLetterTopic": f"projects/{PROJECT}/topics/mlrelay-dead-letter",
                                                "maxDeliveryAttempts": 10}


def test_functions_get_a_gcp_configuration_naming_what_was_provisioned(first):
    envs = [_function_env(call) for call in first.named("functions", "deploy")]
    assert len(envs) == len(FUNCTIONS) and all(env == envs[0] for env in envs)
    env = envs[0]
    assert env["MLRELAY_PLATFORM"] == "gcp" and env["MLRELAY_BUCKET"] == BUCKET
    config = Config.from_env(env)
    assert (config.project, config.region, config.default_source) == (PROJECT, REGION, "bigquery")
    assert (config.dataflow_service_account, config.training_service_account) == (DATAFLOW_SA, TRAINING_SA)
    assert config.endpoint_id in first.resources("endpoint")
    # the release: the topic and queue provisioned, the account the task publishes as, the policy's defaults
    assert config.release_topic in first.resources("topic") and f"{REGION}/{config.tasks_queue}" in first.resources(
        "queue")
    assert config.tasks_service_account == TASKS_SA
    assert config.release_policy() == Config().release_policy()
    assert "MLRELAY_TRAFFIC_PERCENT" not in env
    # the sweep's topic as provisioned; the sweep's delay and the admission guards at config.py's defaults
    assert config.reconcile_topic == "mlrelay-reconcile" and config.reconcile_topic in first.resources("topic")
    assert all(name in env for name in GUARDS)
    defaults = Config()
    for field in ("reconcile_after_seconds", "debounce_seconds", "max_active_runs", "max_queued_runs",
                  "daily_run_budget"):
        assert getattr(config, field) == getattr(defaults, field), field
    objects = first.resources("object")
    assert config.flex_template.startswith(f"gs://{BUCKET}/packages/")
    assert f"{BUCKET}/{config.flex_template.split('/', 3)[3]}" in objects
    # the training image is the one built from deploy/training_image, tagged by its context's hash
    assert config.training_image in first.resources("image")
    assert config.training_image.startswith(f"{REGION}-docker.pkg.dev/{PROJECT}/mlrelay/trainer:")
    # and so is the serving image, from deploy/serving_image, into the same repository
    assert config.serving_image in first.resources("image")
    assert config.serving_image.startswith(f"{REGION}-docker.pkg.dev/{PROJECT}/mlrelay/server:")


def test_release_queue_is_regional_with_few_retries_and_only_the_functions_may_enqueue(first):
    create = first.only("tasks", "queues", "create")
    assert create.positional() == "mlrelay-release" and create.flag("location") == REGION
    queue = first.resources("queue")[QUEUE]
    assert queue["name"] == f"projects/{PROJECT}/locations/{REGION}/queues/mlrelay-release"
    assert queue["retryConfig"] == {"max-attempts": 5, "min-backoff": "10s", "max-backoff": "300s",
                                    "max-doublings": 4}
    # creating tasks is granted on this queue only, never on the project
    assert {(m, r) for res, m, r in first.bindings() if res == f"queue:{QUEUE}"} == {
        (f"serviceAccount:{FUNCTIONS_SA}", "roles/cloudtasks.enqueuer")}
    assert not [b for b in first.bindings() if b[2].startswith("roles/cloudtasks.") and b[0] != f"queue:{QUEUE}"]


def test_release_account_has_one_grant_publish_on_the_release_topic(first):
    assert first.resources("service_account")[TASKS_SA]["displayName"].startswith("mlrelay release")
    assert {b for b in first.bindings() if b[1] == f"serviceAccount:{TASKS_SA}"} == {
        ("topic:mlrelay-release", f"serviceAccount:{TASKS_SA}", "roles/pubsub.publisher")}
    # only the functions (which create the tasks carrying its token) may act as it
    assert {b for b in first.bindings() if b[0] == f"service_account:{TASKS_SA}"} == {
        (f"service_account:{TASKS_SA}", f"serviceAccount:{FUNCTIONS_SA}", "roles/iam.serviceAccountUser")}


def test_functions_may_schedule_bakes_read_serving_metrics_and_change_the_endpoint(first):
    granted = {(resource, role) for resource, member, role in first.bindings()
               if member == f"serviceAccount:{FUNCTIONS_SA}"}
    assert {(f"queue:{QUEUE}", "roles/cloudtasks.enqueuer"),
            (f"service_account:{TASKS_SA}", "roles/iam.serviceAccountUser"),
            (f"project:{PROJECT}", "roles/monitoring.viewer"),
            # undeployModel and mergeVersionAliases (aiplatform.endpoints.undeploy, aiplatform.models.update)
            (f"project:{PROJECT}", "roles/aiplatform.user")} <= granted
    # the functions never publish the bake's end themselves: the task does, as the release account
    assert ("topic:mlrelay-release", "roles/pubsub.publisher") not in granted


def test_release_function_is_triggered_by_the_release_topic_and_dead_lettered(first):
    (call,) = [c for c in first.named("functions", "deploy") if c.positional() == "mlrelay-on-release-event"]
    assert call.flag("entry-point") == "on_release_event" and call.flag("trigger-topic") == "mlrelay-release"
    others = [c for c in first.named("functions", "deploy") if c.positional() == "mlrelay-on-training-complete"]
    for flag in ("runtime", "source", "service-account", "build-service-account", "set-env-vars", "memory"):
        assert call.flag(flag) == others[0].flag(flag), flag
    function = first.resources("function")["mlrelay-on-release-event"]
    assert function["eventTrigger"]["pubsubTopic"] == "mlrelay-release"
    subscription = _trigger_subscription(first, "mlrelay-on-release-event")
    assert first.resources("subscription")[subscription]["deadLetterPolicy"]["deadLetterTopic"].endswith(
        "/topics/mlrelay-dead-letter")
    assert (f"subscription:{subscription}", f"serviceAccount:{PUBSUB_AGENT}", "roles/pubsub.subscriber") in (
        first.bindings())
    # the queue and the grants the function relies on exist before it is deployed
    order = [call.words for call, _ in first.calls]
    deploy_at = [i for i, (c, _) in enumerate(first.calls) if c.words == ("functions", "deploy")
                 and c.positional() == "mlrelay-on-release-event"][0]
    assert order.index(("tasks", "queues", "add-iam-policy-binding")) < deploy_at


def test_function_source_is_main_py_beside_the_packages_and_imports_on_its_own(workspace, first):
    source = workspace.uploads / "functions" / "mlrelay-start-pipeline"
    assert (source / "requirements.txt").read_text() == (workspace.repo / "functions" / "requirements.txt").read_text()
    assert not list(source.rglob("__pycache__"))
    # every entry point a deploy names is defined in the main.py Cloud Functions loads
    entry_points = sorted({call.required("entry-point") for call in first.named("functions", "deploy")})
    assert entry_points == sorted(entry for entry, _ in FUNCTIONS.values())
    probe = (f"import main, functions; assert all(callable(getattr(main, n)) for n in {entry_points!r}); "
             "print(functions.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=source, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().is_relative_to(source.resolve())


def test_flex_template_spec_points_at_the_built_image_with_the_workers_account(workspace, first):
    spec = json.loads((workspace.uploads / "objects" / BUCKET / "packages" / "preprocess-template.json").read_text())
    assert spec["image"] in first.resources("image") and spec["sdkInfo"]["language"] == "PYTHON"
    assert spec["defaultEnvironment"]["serviceAccountEmail"] == DATAFLOW_SA
    assert spec["defaultEnvironment"]["tempLocation"].startswith(f"gs://{BUCKET}/tmp/")
    tag = spec["image"].rsplit(":", 1)[1]
    context = workspace.uploads / "builds" / tag
    assert (context / "beam_pipeline" / "setup.py").is_file() and (context / "main.py").is_file()
    dockerfile = (context / "Dockerfile").read_text()
    assert "python311-template-launcher-base" in dockerfile
    assert 'FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/main.py"' in dockerfile
    pins = (context / "requirements.txt").read_text().split()
    assert pins == deploy_helpers.pinned_requirements((REPO / "requirements.txt").read_text())
    assert tag == deploy_helpers.content_hash(context)


def test_every_build_runs_as_the_build_account_and_logs_to_the_bucket(first):
    builds = first.named("builds", "submit")
    assert builds
    for call in builds:
        assert call.flag("service-account") == BUILD_SA_RESOURCE
        assert call.flag("gcs-log-dir").startswith(f"gs://{BUCKET}/tmp/")
        assert call.flag("region") == REGION
    assert all(call.flag("build-service-account") == BUILD_SA_RESOURCE for call in first.named("functions", "deploy"))
    # the deployments' describes use the documented --v2
    assert all(call.flag("v2") is True and call.flag("gen2") is None for call in first.named("functions", "describe"))


def test_grants_to_new_accounts_are_retried_until_iam_has_seen_them(workspace, tmp_path):
    """IAM is eventually consistent: the first grants naming a just-created account fail."""
    env = workspace.env(FAKE_GCLOUD_STATE=str(tmp_path / "state.json"), FAKE_GCLOUD_IAM_LAG="2",
                        IAM_RETRY_DELAY="0")
    run = workspace.run(env=env)
    assert run.result.returncode == 0, run.result.stdout[-2000:] + run.result.stderr[-2000:]
    refused = [error for error in run.errors if "does not exist" in error]
    assert len(refused) == 2 * 6, refused  # two refusals for each of the six accounts
    assert "IAM has not seen the account yet" in run.result.stdout
    assert run.bindings() >= {(f"project:{PROJECT}", f"serviceAccount:{BUILD_SA}", "roles/logging.logWriter")}


def test_a_grant_that_keeps_failing_stops_the_deployment_naming_it(workspace, tmp_path):
    env = workspace.env(FAKE_GCLOUD_STATE=str(tmp_path / "state.json"), FAKE_GCLOUD_IAM_LAG="9",
                        IAM_RETRY_DELAY="0", IAM_ATTEMPTS="3")
    run = workspace.run(env=env)
    assert run.result.returncode != 0
    assert "failed after 3 attempt(s)" in run.result.stderr and "add-iam-policy-binding" in run.result.stderr
    assert not run.named("functions", "deploy")


def test_the_training_image_is_built_from_its_context_and_no_prebuilt_image_is_named(workspace, first):
    config = Config.from_env(_function_env(first.named("functions", "deploy")[0]))
    tag = config.training_image.rsplit(":", 1)[1]
    context = workspace.uploads / "builds" / tag
    assert (context / "Dockerfile").is_file() and (context / "trainer" / "task.py").is_file()
    assert tag == deploy_helpers.content_hash(context)
    commands = " ".join(" ".join(c.words + tuple(c.positionals)) + str(c.flags) for c, _ in first.calls)
    assert "vertex-ai/training" not in commands and "pythonPackageSpec" not in commands


def test_the_serving_image_is_built_from_its_context_and_no_prebuilt_serving_image_is_named(workspace, first):
    config = Config.from_env(_function_env(first.named("functions", "deploy")[0]))
    tag = config.serving_image.rsplit(":", 1)[1]
    context = workspace.uploads / "builds" / tag
    assert (context / "Dockerfile").is_file() and (context / "model_server" / "__main__.py").is_file()
    assert tag == deploy_helpers.content_hash(context)
    assert [c.required("tag") for c in first.named("builds", "submit") if "/server:" in c.required("tag")] == [
        config.serving_image]
    commands = " ".join(" ".join(c.words + tuple(c.positionals)) + str(c.flags) for c, _ in first.calls)
    env = " ".join(_function_env(call)["MLRELAY_SERVING_IMAGE"] for call in first.named("functions", "deploy"))
    assert "vertex-ai/prediction" not in commands + env and "tf2-cpu" not in commands + env


def test_a_given_training_image_is_used_and_not_built(workspace, tmp_path):
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/elsewhere/trainer:v7"
    run = workspace.run(env=workspace.env(FAKE_GCLOUD_STATE=str(tmp_path / "state.json"), TRAINING_IMAGE=image)).ok()
    assert Config.from_env(_function_env(run.named("functions", "deploy")[0])).training_image == image
    assert not [c for c in run.named("builds", "submit") if "/trainer:" in c.required("tag")]


def test_a_given_serving_image_is_used_and_not_built(workspace, tmp_path):
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/elsewhere/server:v3"
    run = workspace.run(env=workspace.env(FAKE_GCLOUD_STATE=str(tmp_path / "state.json"), SERVING_IMAGE=image)).ok()
    assert Config.from_env(_function_env(run.named("functions", "deploy")[0])).serving_image == image
    assert not [c for c in run.named("builds", "submit") if "/server:" in c.required("tag")]


def test_endpoint_and_weekly_schedule_publishing_a_valid_run_request(first):
    create = first.only("ai", "endpoints", "create")
    assert create.flag("endpoint-id") == "babyweight" and create.flag("region") == REGION
    assert set(first.resources("scheduler_job")) == {"mlrelay-retrain", "mlrelay-reconcile"}
    job = first.resources("scheduler_job")["mlrelay-retrain"]
    assert job["name"] == f"projects/{PROJECT}/locations/{REGION}/jobs/mlrelay-retrain"
    assert job["schedule"] == "0 3 * * 1" and job["timeZone"] == "Etc/UTC"
    assert job["pubsubTarget"]["topicName"] == f"projects/{PROJECT}/topics/mlrelay-start"
    assert parse_run_request(job["pubsubTarget"]["data"]).source == "bigquery"


def test_the_reconcile_sweep_ticks_every_five_minutes_into_its_own_function(first):
    job = first.resources("scheduler_job")["mlrelay-reconcile"]
    assert job["name"] == f"projects/{PROJECT}/locations/{REGION}/jobs/mlrelay-reconcile"
    assert job["schedule"] == "*/5 * * * *" and job["timeZone"] == "Etc/UTC"
    assert job["pubsubTarget"] == {"topicName": f"projects/{PROJECT}/topics/mlrelay-reconcile", "data": "{}"}
    function = first.resources("function")[SWEEP]
    assert function["eventTrigger"]["pubsubTopic"] == "mlrelay-reconcile"
    assert function["eventTrigger"]["eventType"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert function["eventTrigger"]["retryPolicy"] == "RETRY_POLICY_DO_NOT_RETRY"
    assert function["flags"]["entry-point"] == "reconcile_runs" and function["flags"]["timeout"] == "300s"
    # the other functions are retried; only theirs dead-letter
    assert {name for name, f in first.resources("function").items()
            if f["eventTrigger"]["retryPolicy"] == "RETRY_POLICY_RETRY"} == set(FUNCTIONS) - ONCE
    updated = {c.positional().rsplit("/", 1)[-1] for c in first.named("pubsub", "subscriptions", "update")}
    assert updated == {_trigger_subscription(first, name) for name in set(FUNCTIONS) - ONCE}
    # nothing in the sweep's way: the function is invocable by the trigger account, the topic exists first
    assert (f"function:{SWEEP}", f"serviceAccount:{TRIGGER_SA}", "roles/run.invoker") in first.bindings()
    order = [(c.words, c.positionals[:1]) for c, _ in first.calls]
    assert order.index((("pubsub", "topics", "create"), ["mlrelay-reconcile"])) < order.index(
        (("functions", "deploy"), [SWEEP])) < order.index((("scheduler", "jobs", "create", "pubsub"), ["mlrelay-reconcile"]))


def test_settings_of_the_sweep_and_the_guards_reach_the_functions_and_the_schedule(workspace, tmp_path):
    state = tmp_path / "state.json"
    run = workspace.run(env=workspace.env(
        FAKE_GCLOUD_STATE=str(state), RECONCILE_TOPIC="sweep-ticks", SWEEP_JOB="sweeper",
        SWEEP_SCHEDULE="*/10 * * * *", RECONCILE_AFTER_SECONDS="1200", DEBOUNCE_SECONDS="0", MAX_ACTIVE_RUNS="3",
        MAX_QUEUED_RUNS="0", DAILY_RUN_BUDGET="0", RECONCILE_FUNCTION="sweep-runs")).ok()
    config = Config.from_env(_function_env(run.named("functions", "deploy")[0]))
    assert (config.reconcile_topic, config.reconcile_after_seconds, config.debounce_seconds) == ("sweep-ticks", 1200, 0)
    assert (config.max_active_runs, config.max_queued_runs, config.daily_run_budget) == (3, 0, 0)
    resources = json.loads(state.read_text())["resources"]  # this run's project, not the workspace's
    job = resources["scheduler_job"]["sweeper"]
    assert job["schedule"] == "*/10 * * * *" and job["pubsubTarget"]["topicName"].endswith("/topics/sweep-ticks")
    assert resources["function"]["sweep-runs"]["eventTrigger"]["pubsubTopic"] == "sweep-ticks"
    assert "mlrelay-reconcile" not in resources["topic"] and "sweep-ticks" in resources["topic"]


def test_it_ends_with_three_ways_to_start_a_run_and_how_to_watch_it(first):
    out = first.result.stdout
    assert f"gcloud storage cp request.json gs://{BUCKET}/triggers/request.json" in out
    assert "gcloud pubsub topics publish mlrelay-start" in out
    assert "gcloud scheduler jobs run mlrelay-retrain" in out
    assert f"mlrelay status --bucket gs://{BUCKET}" in out
    assert f"mlrelay dead-letters list --project {PROJECT}" in out and "mlrelay-dead-letter-hold" in out
    assert "mlrelay-reconcile ('*/5 * * * *', UTC)" in out
    assert f"gcloud scheduler jobs run mlrelay-reconcile --location={REGION}" in out


# --- running it again, dry runs, bad settings ---------------------------------------------------

READS = {"describe", "list", "service-agent"}
IDEMPOTENT = {"update", "deploy", "add-iam-policy-binding", "add-invoker-policy-binding", "enable", "cp", "build"}


def _stable(resources: dict) -> dict:
    """Resources without what differs between two identical runs (scratch paths, archive bytes)."""
    resources = json.loads(json.dumps(resources))
    for function in resources.get("function", {}).values():
        function["flags"].pop("source")
    for uploaded in resources.get("object", {}).values():
        uploaded.pop("size")
    return resources


def test_a_second_run_creates_nothing_and_changes_no_resource(first, second):
    verbs = {call.words[-2] if call.words[-1] == "pubsub" else call.words[-1] for call, _ in second.calls}
    assert verbs <= READS | IDEMPOTENT, verbs - READS - IDEMPOTENT
    assert not second.named("builds", "submit")  # the unchanged launcher image is not rebuilt
    assert _stable(second.state["resources"]) == _stable(first.state["resources"])
    assert second.bindings() == first.bindings()
    assert second.named("logging", "sinks", "update")
    assert {c.positional() for c in second.named("scheduler", "jobs", "update", "pubsub")} == {
        "mlrelay-retrain", "mlrelay-reconcile"}
    assert {c.positional() for c in second.named("functions", "deploy")} == set(FUNCTIONS)
    assert second.resources("function")[SWEEP]["eventTrigger"]["retryPolicy"] == "RETRY_POLICY_DO_NOT_RETRY"
    assert second.named("tasks", "queues", "update") and not second.named("tasks", "queues", "create")


def _tree_digest(root: Path) -> str:
    """Every path and file of a tree but Python's bytecode caches (importing is not a change)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_dry_run_needs_no_gcloud_prints_every_command_and_changes_nothing(workspace, tmp_path):
    tools = tmp_path / "tools"  # a PATH with what deploy.sh needs and no gcloud
    tools.mkdir()
    for tool in ("dirname", "mktemp", "rm", "cat", "sed", "grep", "sleep"):
        (tools / tool).symlink_to(shutil.which(tool))
    env = workspace.env(PATH=str(tools), FAKE_GCLOUD_STATE=str(tmp_path / "state.json"))
    assert shutil.which("gcloud", path=env["PATH"]) is None
    before = _tree_digest(workspace.repo)
    run = workspace.run("--dry-run", env=env).ok()
    out = run.result.stdout
    for line in (f"gcloud storage buckets create gs://{BUCKET}", "gcloud pubsub topics create mlrelay-dead-letter",
                 "gcloud logging sinks create mlrelay-job-events", "gcloud scheduler jobs create pubsub",
                 "gcloud ai endpoints create --endpoint-id=babyweight", "gcloud builds submit",
                 "gcloud pubsub topics create mlrelay-release",
                 f"gcloud tasks queues create mlrelay-release --location={REGION} --max-attempts=5",
                 "gcloud iam service-accounts create mlrelay-release-publisher",
                 f"gcloud tasks queues add-iam-policy-binding mlrelay-release --location={REGION} "
                 f"--member=serviceAccount:{FUNCTIONS_SA} --role=roles/cloudtasks.enqueuer",
                 f"gcloud pubsub topics add-iam-policy-binding mlrelay-release "
                 f"--member=serviceAccount:{TASKS_SA} --role=roles/pubsub.publisher",
                 f"gcloud functions deploy mlrelay-on-release-event --gen2",
                 "gcloud pubsub topics create mlrelay-reconcile",
                 "gcloud functions deploy mlrelay-reconcile-runs --gen2",
                 f"gcloud scheduler jobs create pubsub mlrelay-reconcile --location={REGION} "
                 f"'--schedule=*/5 * * * *' --time-zone=Etc/UTC --topic=projects/{PROJECT}/topics/mlrelay-reconcile "
                 "'--message-body={}'"):
        assert line in out
    assert all(f"gcloud functions deploy {name} " in out for name in FUNCTIONS)
    (sweep,) = [line for line in out.splitlines() if line.startswith(f"gcloud functions deploy {SWEEP} ")]
    assert "--entry-point=reconcile_runs" in sweep and "--trigger-topic=mlrelay-reconcile" in sweep
    assert " --retry " not in sweep and "MLRELAY_MAX_ACTIVE_RUNS=" in sweep
    assert run.calls == [] and not (tmp_path / "state.json").exists()
    assert _tree_digest(workspace.repo) == before


def test_dry_run_with_gcloud_present_calls_nothing(workspace, second):
    for args in (("--dry-run",), ("--teardown", "--dry-run")):
        run = workspace.run(*args).ok()
        assert run.calls == [], args
        assert _stable(run.state["resources"]) == _stable(second.state["resources"])
    assert "gcloud functions delete mlrelay-start-pipeline" in run.result.stdout
    assert "gcloud functions delete mlrelay-on-release-event" in run.result.stdout
    assert f"gcloud tasks queues delete mlrelay-release --location={REGION}" in run.result.stdout
    assert f"gcloud iam service-accounts delete {TASKS_SA}" in run.result.stdout
    assert "gcloud pubsub topics delete mlrelay-release " in run.result.stdout
    assert f"gcloud functions delete {SWEEP} " in run.result.stdout
    assert f"gcloud scheduler jobs delete mlrelay-reconcile --location={REGION}" in run.result.stdout
    assert "gcloud pubsub topics delete mlrelay-reconcile " in run.result.stdout


def test_missing_project_id_fails_with_a_clear_message_before_any_call(workspace):
    env = workspace.env()
    del env["PROJECT_ID"]
    run = workspace.run(env=env)
    assert run.result.returncode != 0 and run.calls == []
    assert "PROJECT_ID is not set" in run.result.stderr


@pytest.mark.parametrize("setting, value, message", [
    ("SCHEDULE", "every monday", "SCHEDULE='every monday' is not a cron schedule"),
    ("SCHEDULE_TZ", "Mars/Olympus", "is not a time zone name"),
    ("SCHEDULE_REQUEST", '{"limit": 0}', "SCHEDULE_REQUEST is not a run request the chain accepts"),
    ("BUCKET", "Has_Capitals", "BUCKET='Has_Capitals' is not valid"),
    ("MAX_DELIVERY_ATTEMPTS", "3", "from 5 to 100"),
    ("CANARY_PERCENT", "100", "CANARY_PERCENT='100' is not valid: release policy: canary_percent must be between"),
    ("BAKE_SECONDS", "15m", "BAKE_SECONDS='15m' is not valid: it must be a whole number"),
    ("GATE_TOLERANCE", "-0.1", "GATE_TOLERANCE='-0.1' is not valid: release policy: tolerance must be"),
    ("TASKS_QUEUE", "release_queue", "TASKS_QUEUE='release_queue' is not valid"),
    ("TASKS_SA_NAME", "Release", "TASKS_SA_NAME='Release' is not valid"),
    ("SWEEP_SCHEDULE", "every 5 minutes", "SWEEP_SCHEDULE='every 5 minutes' is not a cron schedule"),
    ("SWEEP_JOB", "sweep job", "SWEEP_JOB='sweep job' is not valid"),
    ("RECONCILE_TOPIC", "goog-ticks", "RECONCILE_TOPIC='goog-ticks' is not valid"),
    ("RECONCILE_FUNCTION", "Reconcile", "RECONCILE_FUNCTION='Reconcile' is not valid"),
    ("RECONCILE_AFTER_SECONDS", "0", "RECONCILE_AFTER_SECONDS='0' is not valid: MLRELAY_RECONCILE_AFTER_SECONDS must "
                                     "be 1 or more"),
    ("DEBOUNCE_SECONDS", "1m", "DEBOUNCE_SECONDS='1m' is not valid: it must be a whole number"),
    ("MAX_ACTIVE_RUNS", "0", "MAX_ACTIVE_RUNS='0' is not valid: MLRELAY_MAX_ACTIVE_RUNS must be 1 or more"),
    ("MAX_QUEUED_RUNS", "-1", "MAX_QUEUED_RUNS='-1' is not valid: it must be a whole number"),
    ("DAILY_RUN_BUDGET", "lots", "DAILY_RUN_BUDGET='lots' is not valid"),
])
def test_bad_settings_fail_before_any_call_naming_the_setting(workspace, setting, value, message):
    run = workspace.run(env=workspace.env(**{setting: value}))
    assert run.result.returncode == 1 and run.calls == []
    assert message in run.result.stderr


def test_unknown_argument_is_refused(workspace):
    run = workspace.run("--dryrun")
    assert run.result.returncode == 1 and "unknown argument '--dryrun'" in run.result.stderr
    assert run.calls == []


def test_shellcheck_is_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    for command in (["shellcheck", "deploy.sh"], ["shellcheck", "-x", "deploy.sh", "deploy/shell_lib.sh",
                                                  "deploy/teardown.sh"]):
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


# --- teardown -----------------------------------------------------------------------------------

def test_teardown_deletes_what_deploy_created(teardown):
    left = {kind: names for kind, names in teardown.state["resources"].items() if names}
    # A deleted custom role lingers (Google keeps it, undeletable, for a while).
    assert left == {"role": {"mlrelayBigQueryTempDatasets": left["role"]["mlrelayBigQueryTempDatasets"]}}
    assert left["role"]["mlrelayBigQueryTempDatasets"]["deleted"] is True
    assert teardown.bindings() == {(f"project:{PROJECT}", f"serviceAccount:{GCS_AGENT}", "roles/pubsub.publisher")}


def test_teardown_removes_the_release_resources(teardown):
    deleted = {(call.words, call.positional()) for call in teardown.named("tasks", "queues", "delete")}
    assert deleted == {(("tasks", "queues", "delete"), "mlrelay-release")}
    assert teardown.only("tasks", "queues", "delete").flag("location") == REGION
    assert "mlrelay-release" in [c.positional() for c in teardown.named("pubsub", "topics", "delete")]
    assert TASKS_SA in [c.positional() for c in teardown.named("iam", "service-accounts", "delete")]
    assert "mlrelay-on-release-event" in [c.positional() for c in teardown.named("functions", "delete")]
    revoked = {(c.required("member"), c.required("role")) for c in teardown.named("projects",
                                                                                 "remove-iam-policy-binding")}
    assert (f"serviceAccount:{FUNCTIONS_SA}", "roles/monitoring.viewer") in revoked
    assert "TASKS_QUEUE to another name" in teardown.result.stdout


def test_teardown_removes_the_sweep(teardown):
    assert {c.positional() for c in teardown.named("scheduler", "jobs", "delete")} == {"mlrelay-retrain",
                                                                                       "mlrelay-reconcile"}
    assert SWEEP in [c.positional() for c in teardown.named("functions", "delete")]
    assert "mlrelay-reconcile" in [c.positional() for c in teardown.named("pubsub", "topics", "delete")]
    assert not teardown.resources("scheduler_job") and SWEEP not in teardown.resources("function")


def test_teardown_again_and_deploy_again_both_work(workspace, teardown):
    again = workspace.run("--teardown").ok()
    assert not [call for call, _ in again.calls if call.words[-1] == "delete"]
    # A deleted queue's name stays taken for a while: its create seems to succeed and does not.
    blocked = workspace.run()
    assert blocked.result.returncode == 1
    assert "queue mlrelay-release was not created" in blocked.result.stderr
    assert "TASKS_QUEUE=<another name>" in blocked.result.stderr
    assert not blocked.named("functions", "deploy")  # it stops before deploying anything that needs it
    assert blocked.named("iam", "roles", "undelete")  # the steps before it ran, as on any run
    redeploy = workspace.run(env=workspace.env(TASKS_QUEUE="mlrelay-release-2")).ok()
    assert not redeploy.named("iam", "roles", "create") and not redeploy.named("iam", "roles", "undelete")
    assert len(redeploy.resources("function")) == len(FUNCTIONS) and "deleted" not in redeploy.resources("role")[
        "mlrelayBigQueryTempDatasets"]
    assert set(redeploy.resources("queue")) == {f"{REGION}/mlrelay-release-2"}
    env = _function_env(redeploy.named("functions", "deploy")[0])
    assert env["MLRELAY_TASKS_QUEUE"] == "mlrelay-release-2"


# --- the Python deploy.sh relies on -------------------------------------------------------------

VALID = {"PROJECT_ID": PROJECT, "REGION": REGION, "BUCKET": BUCKET, "SCHEDULE": "0 3 * * 1",
         "SCHEDULE_TZ": "Etc/UTC", "SCHEDULE_REQUEST": "{}", "MAX_DELIVERY_ATTEMPTS": "10",
         "START_FUNCTION": "mlrelay-start-pipeline", "ENDPOINT_ID": "babyweight", "MODEL_NAME": "babyweight",
         "TRAINING_IMAGE": "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest"}


def test_settings_checks_pass_good_values_and_name_each_bad_one():
    assert deploy_helpers.settings_errors(VALID) == []
    bad = {**VALID, "REGION": "moon", "ENDPOINT_ID": "Baby_Weight", "TRAINING_IMAGE": "a,b"}
    errors = deploy_helpers.settings_errors(bad)
    assert [e.split("=", 1)[0] for e in errors] == ["REGION", "ENDPOINT_ID", "TRAINING_IMAGE"]
    assert deploy_helpers.settings_errors({}) == [
        "PROJECT_ID is not set: export PROJECT_ID=<your Google Cloud project id> and run again"]


def _settings() -> dict[str, str]:
    return {"PROJECT_ID": PROJECT, "REGION": REGION, "BUCKET": BUCKET, "START_TOPIC": "s",
            "JOB_EVENTS_TOPIC": "j", "DEAD_LETTER_TOPIC": "d", "MODEL_NAME": "babyweight",
            "ENDPOINT_ID": "babyweight", "RELEASE_TOPIC": "r", "CANARY_PERCENT": "25", "BAKE_SECONDS": "600",
            "GATE_MIN_IMPROVEMENT": "0.1", "GATE_TOLERANCE": "0.004", "GATE_SLICE_TOLERANCE": "0.03",
            "TASKS_QUEUE": "q", "TASKS_SA": TASKS_SA, "DATAFLOW_SA": DATAFLOW_SA,
            "TRAINING_SA": TRAINING_SA, "TRAINING_IMAGE": "img:1", "SERVING_IMAGE": "img:2",
            "SERVING_MACHINE_TYPE": "n1-standard-2",
            "FLEX_TEMPLATE": f"gs://{BUCKET}/packages/preprocess-template.json", "MAX_WORKERS": "3",
            "RECONCILE_TOPIC": "t", "RECONCILE_AFTER_SECONDS": "900", "DEBOUNCE_SECONDS": "30",
            "MAX_ACTIVE_RUNS": "4", "MAX_QUEUED_RUNS": "0", "DAILY_RUN_BUDGET": "0"}


def test_function_env_is_what_config_reads_back():
    env = deploy_helpers.function_env(_settings())
    config = Config.from_env(env)
    assert (config.platform, config.max_workers) == ("gcp", 3)
    assert (config.release_topic, config.tasks_queue, config.tasks_service_account) == ("r", "q", TASKS_SA)
    policy = config.release_policy()
    assert (policy.canary_percent, policy.bake_seconds) == (25, 600)
    assert (policy.min_improvement_over_mean, policy.tolerance, policy.slice_tolerance) == (0.1, 0.004, 0.03)
    assert (config.reconcile_topic, config.reconcile_after_seconds, config.debounce_seconds) == ("t", 900, 30)
    assert (config.max_active_runs, config.max_queued_runs, config.daily_run_budget) == (4, 0, 0)
    assert deploy_helpers.env_vars_flag(env).split(",")[0] == "MLRELAY_PLATFORM=gcp"
    with pytest.raises(deploy_helpers.DeployError, match="comma or newline"):
        deploy_helpers.function_env({**_settings(), "SERVING_IMAGE": "a,b"})


def test_pins_come_from_requirements_and_a_missing_one_is_named():
    pins = deploy_helpers.pinned_requirements("apache-beam[gcp]==2.77.0\npyfarmhash==0.5.1\n"
                                              "pyarrow==25.0.1  # x\nnumpy==2.4.6\npandas==3\n")
    assert pins == ["apache-beam[gcp]==2.77.0", "pyfarmhash==0.5.1", "pyarrow==25.0.1", "numpy==2.4.6"]
    with pytest.raises(deploy_helpers.DeployError, match="numpy"):
        deploy_helpers.pinned_requirements("apache-beam==1\npyfarmhash==1\npyarrow==1\n")


def test_notifications_are_matched_on_topic_and_prefix_wherever_the_listing_puts_them():
    ours = {"id": "7", "topic": "//pubsub.googleapis.com/projects/p/topics/mlrelay-start",
            "object_name_prefix": "triggers/"}
    other_prefix = {**ours, "id": "8", "object_name_prefix": "data/"}
    other_topic = {**ours, "id": "9", "topic": "//pubsub.googleapis.com/projects/p/topics/elsewhere"}
    listing = [{"bucket": "b", "notification_configuration": ours}, other_prefix, other_topic]
    assert deploy_helpers.matching_notifications(listing, "projects/p/topics/mlrelay-start", "triggers/", "b") == [
        "projects/_/buckets/b/notificationConfigs/7"]
    assert deploy_helpers.matching_notifications([], "mlrelay-start", "triggers/", "b") == []


def _check_image_context(context: Path, tag: str, entrypoint: list[str], pinned) -> None:
    """An image's staged context: tagged by its hash, on python:3.11-slim, running `entrypoint`,
    with pins of exactly `pinned`, each the version the tests run, and no bytecode."""
    assert tag == deploy_helpers.content_hash(context)
    dockerfile = (context / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    (line,) = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT ")]
    assert json.loads(line.removeprefix("ENTRYPOINT ")) == entrypoint
    pins = (context / "requirements.txt").read_text().split()
    constraints = {line.lower().replace("_", "-") for line in (REPO / "constraints.txt").read_text().split()}
    assert [p.split("==")[0] for p in pins] == list(pinned)
    assert set(pins) <= set(constraints), "the image must run the versions the tests run"
    assert not list(context.rglob("__pycache__"))


def test_the_training_image_context_holds_the_trainer_and_the_tested_pins(tmp_path):
    from functions.request_bodies import TRAINER_COMMAND

    context = tmp_path / "context"
    # the image's entry point is the command the CustomJob runs (and the local stand-in runs)
    _check_image_context(context, deploy_helpers.stage_training(context), list(TRAINER_COMMAND),
                         deploy_helpers.TRAINING_PINNED)
    # the context's own trainer runs, found before any other copy (as in the image, from its WORKDIR)
    probe = subprocess.run([sys.executable, "-c", "import trainer, trainer.task; print(trainer.__file__)"],
                           cwd=context, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve().is_relative_to(context.resolve())


def test_the_serving_image_context_holds_model_server_and_the_tested_pins(tmp_path):
    context = tmp_path / "context"
    _check_image_context(context, deploy_helpers.stage_serving(context), ["python", "-m", "model_server"],
                         deploy_helpers.SERVING_PINNED)
    assert sorted(p.name for p in context.iterdir()) == ["Dockerfile", "model_server", "requirements.txt"]
    # the context's model_server stands alone: it imports, from the context, with no other project package
    probe = subprocess.run([sys.executable, "-I", "-c",
                            "import sys; sys.path.insert(0, ''); import model_server.__main__, model_server.app, "
                            "model_server.model_loading, model_server.artifacts; print(model_server.__file__)"],
                           cwd=context, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve().is_relative_to(context.resolve())


def test_content_hash_follows_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("1")
    first = deploy_helpers.content_hash(tmp_path)
    assert deploy_helpers.content_hash(tmp_path) == first
    (tmp_path / "a" / "f").write_text("2")
    assert deploy_helpers.content_hash(tmp_path) != first


def test_staging_functions_without_requirements_says_which_file_is_missing(tmp_path):
    (tmp_path / "functions").mkdir()
    with pytest.raises(deploy_helpers.DeployError, match="functions/requirements.txt is missing"):
        deploy_helpers.stage_functions(tmp_path / "out", repo_root=tmp_path)


# --- the Flex Template's entry point ------------------------------------------------------------

@pytest.fixture(scope="module")
def flex_main():
    return _load("flex_template_main", REPO / "deploy" / "flex_template" / "main.py")


LAUNCHER_ARGS = [  # as Dataflow's launcher passes them: the parameters, then its own options
    "--source=bigquery", f"--out=gs://{BUCKET}/runs/run-1/preprocess/", "--run_id=run-20240101-000000-abcdef0123",
    "--limit=1000", "--runner=DataflowRunner", f"--project={PROJECT}", f"--region={REGION}",
    f"--temp_location=gs://{BUCKET}/tmp/", f"--staging_location=gs://{BUCKET}/tmp/staging/",
    "--job_name=run-20240101-000000-abcdef0123", f"--service_account_email={DATAFLOW_SA}",
    "--max_num_workers=4", "--labels=app=other", '--labels={"goog-dataflow-provided-template-type": "flex"}',
    f"--template_location=gs://{BUCKET}/tmp/staging/template_launches/2024/job_object",
]


def test_launcher_arguments_become_the_run_and_the_launchers_options_reach_beam(flex_main):
    from apache_beam.options.pipeline_options import PipelineOptions

    config, flags = flex_main.parse_launch(LAUNCHER_ARGS)
    assert (config.source, config.limit, config.run_id) == ("bigquery", 1000, "run-20240101-000000-abcdef0123")
    assert (config.runner, config.waits, config.max_num_workers) == ("DataflowRunner", False, 4)
    options = PipelineOptions(flags, **flex_main.pipeline_options(config, flags)).get_all_options(drop_default=True)
    assert options["template_location"].endswith("/template_launches/2024/job_object")
    assert options["job_name"] == "run-20240101-000000-abcdef0123"  # the launch request's name, not a new one
    assert options["setup_file"].endswith("beam_pipeline/setup.py")
    assert options["service_account_email"] == DATAFLOW_SA
    assert sorted(options["labels"]) == ["app=mlrelay", "goog-dataflow-provided-template-type=flex",
                                         "run_id=run-20240101-000000-abcdef0123"]


def test_bad_launches_exit_2_with_the_reason(flex_main, capsys):
    assert flex_main.main([a for a in LAUNCHER_ARGS if not a.startswith("--out")]) == 2
    assert "--out" in capsys.readouterr().err
    local_out = [("--out=/tmp/x" if a.startswith("--out") else a) for a in LAUNCHER_ARGS]
    assert flex_main.main(local_out) == 2
    assert "preprocess-template: error: --out must be a gs:// path" in capsys.readouterr().err


def test_template_parameters_are_those_the_functions_launch_with():
    from functions.gcp_adapters import DataflowJobs
    from functions.local_adapters import LocalJobs

    metadata = json.loads((REPO / "deploy" / "flex_template" / "metadata.json").read_text())
    declared = {p["name"] for p in metadata["parameters"]}
    required = {p["name"] for p in metadata["parameters"] if not p.get("isOptional")}
    config = Config.from_env(deploy_helpers.function_env(_settings()))
    gcp = DataflowJobs(config).launch_request("run-1", "bigquery", f"gs://{BUCKET}/o/", 10, {"app": "mlrelay"})
    local_bodies = []

    class Recorder:
        def call(self, method, path, body=None, query=None):
            local_bodies.append(body)
            return {"job": {"id": "1", "name": "run-1"}}

    LocalJobs(Recorder(), config).launch_preprocess("run-1", "bigquery", f"gs://{BUCKET}/o/", 10, {"app": "mlrelay"})
    # the local cloud receives the very body the cloud gets, with the worker account and limits
    assert local_bodies == [{"launchParameter": gcp["launchParameter"]}]
    environment = gcp["launchParameter"]["environment"]
    assert environment["maxWorkers"] == config.max_workers
    assert environment["serviceAccountEmail"] == config.dataflow_service_account != ""
    parameters = gcp["launchParameter"]["parameters"]
    assert required <= set(parameters) <= declared, parameters


# The launcher's side of a launch, on one machine: gcp-storage-emulator stands in for the bucket,
# and main.py runs as the Flex Template launcher runs it. Beam then writes the job it would submit to
# --template_location, which is where the launcher reads it from. The machine has no Google
# credentials; Beam's 24-second retry for them is skipped by telling it none were found.
LAUNCH_DRIVER = """
import io, json, os, sys, tarfile
from gcp_storage_emulator.server import create_server
server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=sys.argv[1])
server.start()
try:
    os.environ["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:%d" % server._api._httpd.server_address[1]
    from apache_beam.internal.gcp import auth
    auth._Credentials._credentials_init = True
    import importlib.util
    spec = importlib.util.spec_from_file_location("template_main", "deploy/flex_template/main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    code = main.main(sys.argv[2:])
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    bucket = storage.Client(project="p", credentials=AnonymousCredentials()).bucket(sys.argv[1])
    names = sorted(blob.name for blob in bucket.list_blobs())
    job = [json.loads(bucket.blob(n).download_as_bytes()) for n in names if n.endswith("/job_object")]
    packages = [n for n in names if n.endswith("/workflow.tar.gz")]
    with tarfile.open(fileobj=io.BytesIO(bucket.blob(packages[0]).download_as_bytes())) as tar:
        members = tar.getnames()
    print(json.dumps({"code": code, "names": names, "job": job, "package": members}))
finally:
    server.stop()
"""


@pytest.mark.slow
def test_a_launch_writes_the_job_where_the_launcher_reads_it():
    out = subprocess.run([sys.executable, "-c", LAUNCH_DRIVER, BUCKET, *LAUNCHER_ARGS], cwd=REPO, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    (job,) = report["job"]
    assert "tmp/staging/template_launches/2024/job_object" in report["names"]
    assert job["name"] == "run-20240101-000000-abcdef0123" and job["type"] == "JOB_TYPE_BATCH"
    assert job["labels"] == {"app": "mlrelay", "run_id": "run-20240101-000000-abcdef0123",
                             "goog-dataflow-provided-template-type": "flex"}
    assert job["environment"]["serviceAccountEmail"] == DATAFLOW_SA
    # The pipeline's sdist (its setup.py maps beam_pipeline to the sdist's root), for the workers.
    assert {"mlrelay-beam-pipeline-0.1.0/pipeline.py", "mlrelay-beam-pipeline-0.1.0/setup.py"} <= set(report["package"])
