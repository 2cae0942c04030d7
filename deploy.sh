#!/usr/bin/env bash
# Provision mlrelay's chain on Google Cloud, from an empty project to a working chain.
#
#   PROJECT_ID=my-project bash deploy.sh              create what is missing, update the rest
#   PROJECT_ID=my-project bash deploy.sh --dry-run    print every command; run none (no gcloud needed)
#   PROJECT_ID=my-project bash deploy.sh --teardown   delete what deploy.sh created (--dry-run works too)
#
# It can be run again at any time: each resource is looked up before it is created, and what exists
# is updated in place (functions, sink filter, schedule, template) or left alone.
#
# Settings (environment; defaults in brackets):
#   PROJECT_ID (required)          REGION [us-central1]           BUCKET [$PROJECT_ID-mlrelay]
#   START_TOPIC, JOB_EVENTS_TOPIC, DEAD_LETTER_TOPIC, RELEASE_TOPIC, MODEL_NAME, ENDPOINT_ID,
#   SERVING_MACHINE_TYPE, MAX_WORKERS [functions/config.py's defaults]
#   CANARY_PERCENT, BAKE_SECONDS, GATE_MIN_IMPROVEMENT, GATE_TOLERANCE, GATE_SLICE_TOLERANCE,
#   TASKS_QUEUE [functions/config.py's defaults]: the release policy, and the Cloud Tasks queue
#   whose scheduled task ends each canary's bake
#   TRAINING_IMAGE [built from deploy/training_image into ARTIFACT_REPO]
#   SERVING_IMAGE [built from deploy/serving_image into ARTIFACT_REPO]
#   DEBOUNCE_SECONDS, MAX_ACTIVE_RUNS, MAX_QUEUED_RUNS, DAILY_RUN_BUDGET [functions/config.py's
#   defaults]: the same request from the same origin within DEBOUNCE_SECONDS is refused (0: off);
#   at most MAX_ACTIVE_RUNS runs at once and MAX_QUEUED_RUNS more waiting; at most DAILY_RUN_BUDGET
#   runs admitted in any 24 h (0: no budget)
#   RECONCILE_TOPIC, RECONCILE_AFTER_SECONDS [functions/config.py's defaults]: the reconcile sweep's
#   topic, and how long an unfinished run may write nothing before the sweep asks the APIs about it
#   SCHEDULE [0 3 * * 1]           SCHEDULE_TZ [Etc/UTC]          SCHEDULE_REQUEST [{"source":"bigquery"}]
#   SWEEP_SCHEDULE [*/5 * * * *] (Etc/UTC)                         SWEEP_JOB [mlrelay-reconcile]
#   START_FUNCTION, PREPROCESS_FUNCTION, TRAINING_FUNCTION, RELEASE_FUNCTION, RECONCILE_FUNCTION
#   [mlrelay-start-pipeline, mlrelay-on-preprocess-output, ..., mlrelay-reconcile-runs]
#   FUNCTION_MAX_INSTANCES [5]     MAX_DELIVERY_ATTEMPTS [10]     SCHEDULER_JOB [mlrelay-retrain]
#   DEAD_LETTER_SUBSCRIPTION [$DEAD_LETTER_TOPIC-hold]: holds dead letters 7 days (mlrelay dead-letters)
#   SINK_NAME [mlrelay-job-events] ARTIFACT_REPO [mlrelay]        KEEP_BUCKET [0] (teardown keeps data)
#   FUNCTIONS_SA_NAME, DATAFLOW_SA_NAME, TRAINING_SA_NAME, TRIGGER_SA_NAME, BUILD_SA_NAME [mlrelay-...]
#   TASKS_SA_NAME [mlrelay-release-publisher]: the account a bake's task publishes to RELEASE_TOPIC as
#   IAM_RETRY_DELAY [2] IAM_ATTEMPTS [6]: a grant to a new account is retried while IAM catches up
#   PYTHON [.venv/bin/python, else python3]: runs the project's helpers (sink filter, sdist, checks)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/shell_lib.sh disable=SC1091
source "$ROOT/deploy/shell_lib.sh"
# shellcheck source=deploy/teardown.sh disable=SC1091
source "$ROOT/deploy/teardown.sh"

APIS=(
  cloudfunctions.googleapis.com run.googleapis.com eventarc.googleapis.com pubsub.googleapis.com
  storage.googleapis.com dataflow.googleapis.com compute.googleapis.com aiplatform.googleapis.com
  cloudscheduler.googleapis.com logging.googleapis.com cloudbuild.googleapis.com
  artifactregistry.googleapis.com iam.googleapis.com cloudresourcemanager.googleapis.com
  bigquery.googleapis.com bigquerystorage.googleapis.com cloudtasks.googleapis.com
  monitoring.googleapis.com
)

# The release queue's retries. Its one kind of task publishes the end of a bake to RELEASE_TOPIC
# (Pub/Sub's REST publish), which fails only for a moment (5xx, 429) or for good (403: a grant is
# missing); 5 attempts 10, 20, 40 and 80 s apart ride out the first and do not hide the second long.
QUEUE_RETRY=(--max-attempts=5 --min-backoff=10s --max-backoff=300s --max-doublings=4)

# The header comment above, as help.
usage() { sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "$ROOT/deploy.sh"; }

load_settings() {
  [[ -n ${PROJECT_ID:-} ]] || die "PROJECT_ID is not set: export PROJECT_ID=<your Google Cloud project id> and run again"
  if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x $ROOT/.venv/bin/python ]] && PYTHON=$ROOT/.venv/bin/python
  fi
  command -v "$PYTHON" >/dev/null || die "no Python at '$PYTHON': set PYTHON (make install builds .venv)"

  local defaults key value
  defaults=$(helper config-defaults) || die "cannot read functions/config.py's defaults with $PYTHON"
  # Settings not given take the functions' defaults; TRIGGER_PREFIX is not a setting.
  while IFS='=' read -r key value; do
    if [[ $key == TRIGGER_PREFIX || -z ${!key:-} ]]; then
      printf -v "$key" '%s' "$value"
    fi
  done <<<"$defaults"

  REGION=${REGION:-us-central1}
  BUCKET=${BUCKET:-$PROJECT_ID-mlrelay}
  DEAD_LETTER_SUBSCRIPTION=${DEAD_LETTER_SUBSCRIPTION:-$DEAD_LETTER_TOPIC-hold}
  START_FUNCTION=${START_FUNCTION:-mlrelay-start-pipeline}
  PREPROCESS_FUNCTION=${PREPROCESS_FUNCTION:-mlrelay-on-preprocess-output}
  TRAINING_FUNCTION=${TRAINING_FUNCTION:-mlrelay-on-training-complete}
  RELEASE_FUNCTION=${RELEASE_FUNCTION:-mlrelay-on-release-event}
  RECONCILE_FUNCTION=${RECONCILE_FUNCTION:-mlrelay-reconcile-runs}
  FUNCTIONS_SA_NAME=${FUNCTIONS_SA_NAME:-mlrelay-functions}
  DATAFLOW_SA_NAME=${DATAFLOW_SA_NAME:-mlrelay-dataflow}
  TRAINING_SA_NAME=${TRAINING_SA_NAME:-mlrelay-training}
  TRIGGER_SA_NAME=${TRIGGER_SA_NAME:-mlrelay-trigger}
  BUILD_SA_NAME=${BUILD_SA_NAME:-mlrelay-build}
  TASKS_SA_NAME=${TASKS_SA_NAME:-mlrelay-release-publisher}
  BQ_TEMP_ROLE=${BQ_TEMP_ROLE:-mlrelayBigQueryTempDatasets}
  ARTIFACT_REPO=${ARTIFACT_REPO:-mlrelay}
  SINK_NAME=${SINK_NAME:-mlrelay-job-events}
  SCHEDULER_JOB=${SCHEDULER_JOB:-mlrelay-retrain}
  SCHEDULE=${SCHEDULE:-0 3 * * 1}
  SCHEDULE_TZ=${SCHEDULE_TZ:-Etc/UTC}
  local default_request='{"source":"bigquery"}'
  SCHEDULE_REQUEST=${SCHEDULE_REQUEST:-$default_request}
  SWEEP_JOB=${SWEEP_JOB:-mlrelay-reconcile}
  SWEEP_SCHEDULE=${SWEEP_SCHEDULE:-*/5 * * * *}
  FUNCTION_MAX_INSTANCES=${FUNCTION_MAX_INSTANCES:-5}
  MAX_DELIVERY_ATTEMPTS=${MAX_DELIVERY_ATTEMPTS:-10}
  DEPLOY_ATTEMPTS=${DEPLOY_ATTEMPTS:-3}
  RETRY_DELAY=${RETRY_DELAY:-30}
  KEEP_BUCKET=${KEEP_BUCKET:-0}
  TRAINING_IMAGE=${TRAINING_IMAGE:-}
  SERVING_IMAGE=${SERVING_IMAGE:-}
  IAM_RETRY_DELAY=${IAM_RETRY_DELAY:-2}
  IAM_ATTEMPTS=${IAM_ATTEMPTS:-6}

  local settings=() name
  for name in PROJECT_ID REGION BUCKET START_TOPIC JOB_EVENTS_TOPIC DEAD_LETTER_TOPIC RELEASE_TOPIC \
      RECONCILE_TOPIC DEAD_LETTER_SUBSCRIPTION START_FUNCTION PREPROCESS_FUNCTION TRAINING_FUNCTION \
      RELEASE_FUNCTION RECONCILE_FUNCTION \
      FUNCTIONS_SA_NAME DATAFLOW_SA_NAME TRAINING_SA_NAME TRIGGER_SA_NAME BUILD_SA_NAME TASKS_SA_NAME \
      BQ_TEMP_ROLE ARTIFACT_REPO SINK_NAME SCHEDULER_JOB SCHEDULE SCHEDULE_TZ SCHEDULE_REQUEST \
      SWEEP_JOB SWEEP_SCHEDULE \
      MODEL_NAME ENDPOINT_ID CANARY_PERCENT BAKE_SECONDS GATE_MIN_IMPROVEMENT GATE_TOLERANCE \
      GATE_SLICE_TOLERANCE TASKS_QUEUE TRAINING_IMAGE SERVING_IMAGE SERVING_MACHINE_TYPE MAX_WORKERS \
      RECONCILE_AFTER_SECONDS DEBOUNCE_SECONDS MAX_ACTIVE_RUNS MAX_QUEUED_RUNS DAILY_RUN_BUDGET \
      FUNCTION_MAX_INSTANCES MAX_DELIVERY_ATTEMPTS; do
    settings+=("$name=${!name}")
  done
  helper check-settings "${settings[@]}" || exit 1

  FUNCTIONS_SA=$FUNCTIONS_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  DATAFLOW_SA=$DATAFLOW_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  TRAINING_SA=$TRAINING_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  TRIGGER_SA=$TRIGGER_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  BUILD_SA=$BUILD_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  TASKS_SA=$TASKS_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com
  # How builds and function deploys name the account that builds (a resource name, not an email).
  BUILD_SA_RESOURCE=projects/$PROJECT_ID/serviceAccounts/$BUILD_SA
  DOCKER_REPOSITORY=projects/$PROJECT_ID/locations/$REGION/repositories/$ARTIFACT_REPO
  FLEX_TEMPLATE=gs://$BUCKET/packages/preprocess-template.json
  LAUNCHER_IMAGE=$REGION-docker.pkg.dev/$PROJECT_ID/$ARTIFACT_REPO/preprocess-launcher
}

# --- the steps, in the order their dependencies need ---------------------------------------------

enable_apis() {
  say "Enabling the APIs"
  gc services enable "${APIS[@]}"
  gc_query PROJECT_NUMBER PROJECT_NUMBER projects describe "$PROJECT_ID" --format='value(projectNumber)'
  PUBSUB_AGENT=service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
  gc_query GCS_AGENT "service-$PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com" storage service-agent
}

create_bucket() {
  say "Bucket gs://$BUCKET"
  if ! gc_lookup storage buckets describe "gs://$BUCKET"; then
    gc storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
      --public-access-prevention
  fi
  # Dataflow's temp and staging files under tmp/ are deleted after a week.
  gc storage buckets update "gs://$BUCKET" --lifecycle-file="$ROOT/deploy/lifecycle.json"
}

create_topics() {
  say "Topics"
  local topic
  for topic in "$START_TOPIC" "$JOB_EVENTS_TOPIC" "$DEAD_LETTER_TOPIC" "$RELEASE_TOPIC" "$RECONCILE_TOPIC"; do
    gc_lookup pubsub topics describe "$topic" || gc pubsub topics create "$topic"
  done
  # A topic keeps nothing by itself: dead letters are held here for a week, for inspection and
  # replay (`mlrelay dead-letters list` and `replay` pull from this subscription).
  if ! gc_lookup pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION"; then
    gc pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" --topic="$DEAD_LETTER_TOPIC" \
      --message-retention-duration=7d --expiration-period=never
  fi
}

create_service_accounts() {
  say "Service accounts"
  local name title
  while IFS='|' read -r name title; do
    if ! gc_lookup iam service-accounts describe "$name@$PROJECT_ID.iam.gserviceaccount.com"; then
      gc iam service-accounts create "$name" --display-name="$title"
    fi
  done <<EOF
$FUNCTIONS_SA_NAME|mlrelay functions (runtime)
$DATAFLOW_SA_NAME|mlrelay Dataflow workers
$TRAINING_SA_NAME|mlrelay Vertex AI training
$TRIGGER_SA_NAME|mlrelay Eventarc triggers
$BUILD_SA_NAME|mlrelay builds (Cloud Build)
$TASKS_SA_NAME|mlrelay release publisher (ends each bake)
EOF
  # Beam's BigQuery read runs the query into a temporary dataset it creates and then deletes; the
  # creator owns that dataset, so creating datasets is the one BigQuery right it needs beyond
  # running jobs and read sessions (roles/bigquery.user would add listing every dataset).
  if gc_lookup iam roles describe "$BQ_TEMP_ROLE" --format='value(deleted)'; then
    [[ $LOOKUP != True ]] || gc iam roles undelete "$BQ_TEMP_ROLE"
  else
    gc iam roles create "$BQ_TEMP_ROLE" --title="mlrelay BigQuery temporary datasets" \
      --description="Create the temporary dataset of a Beam BigQuery query read" \
      --permissions=bigquery.datasets.create --stage=GA
  fi
}

grant_roles() {
  say "IAM: each account gets what its work needs, on the narrowest resource"
  # Functions: read and write the bucket (ledger, markers), launch the Flex Template and the
  # training job as their own accounts, register and deploy models. aiplatform.user also holds
  # what a release changes on the endpoint and the registry: aiplatform.endpoints.undeploy (and
  # .deploy, for a rollback) and aiplatform.models.update, which mergeVersionAliases requires
  # (https://cloud.google.com/iam/docs/roles-permissions/aiplatform).
  # The reconcile sweep asks the same APIs about quiet runs: dataflow.developer holds
  # dataflow.jobs.get, aiplatform.user customJobs.get and the operations' get.
  grant_bucket "serviceAccount:$FUNCTIONS_SA" roles/storage.objectAdmin
  grant_project "serviceAccount:$FUNCTIONS_SA" roles/dataflow.developer
  grant_project "serviceAccount:$FUNCTIONS_SA" roles/aiplatform.user
  grant_on_account "$DATAFLOW_SA" "serviceAccount:$FUNCTIONS_SA" roles/iam.serviceAccountUser
  grant_on_account "$TRAINING_SA" "serviceAccount:$FUNCTIONS_SA" roles/iam.serviceAccountUser
  # The bake's verdict reads the endpoint's serving metrics (timeSeries.list needs
  # monitoring.timeSeries.list, which Monitoring grants per project only).
  grant_project "serviceAccount:$FUNCTIONS_SA" roles/monitoring.viewer
  # A bake's end is a task carrying an OAuth token of the release account: "The caller must have
  # iam.serviceAccounts.actAs permission for the service account"
  # (https://cloud.google.com/tasks/docs/reference/rest/v2/OAuthToken; the Service Account User
  # role, as https://cloud.google.com/tasks/docs/creating-http-target-tasks sets up), on that one
  # account. Creating the task itself is granted on the queue (create_queue).
  grant_on_account "$TASKS_SA" "serviceAccount:$FUNCTIONS_SA" roles/iam.serviceAccountUser
  # The release account can do one thing: publish the bake's end to the release topic.
  grant_topic "$RELEASE_TOPIC" "serviceAccount:$TASKS_SA" roles/pubsub.publisher
  # Dataflow launcher and workers: run the job, read and write the bucket, query the public table.
  grant_project "serviceAccount:$DATAFLOW_SA" roles/dataflow.worker
  grant_bucket "serviceAccount:$DATAFLOW_SA" roles/storage.objectAdmin
  grant_project "serviceAccount:$DATAFLOW_SA" roles/bigquery.jobUser
  grant_project "serviceAccount:$DATAFLOW_SA" roles/bigquery.readSessionUser
  grant_project "serviceAccount:$DATAFLOW_SA" "projects/$PROJECT_ID/roles/$BQ_TEMP_ROLE"
  # Vertex AI training: read the shards and the trainer package, write the model and metrics.
  grant_bucket "serviceAccount:$TRAINING_SA" roles/storage.objectAdmin
  # Eventarc triggers receive events (run.invoker is granted on each function after its deploy).
  grant_project "serviceAccount:$TRIGGER_SA" roles/eventarc.eventReceiver
  # Pub/Sub signs the push requests of the triggers as the trigger account.
  grant_on_account "$TRIGGER_SA" "serviceAccount:$PUBSUB_AGENT" roles/iam.serviceAccountTokenCreator
  # Cloud Storage publishes the trigger-file notifications and Eventarc's storage events.
  grant_project "serviceAccount:$GCS_AGENT" roles/pubsub.publisher
  # Pub/Sub forwards undeliverable events to the dead-letter topic.
  grant_topic "$DEAD_LETTER_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher
  # Builds (the launcher image and the functions) run as their own account, never as the Compute
  # default account, which projects created since mid-2024 leave without roles. What a build needs
  # (https://cloud.google.com/run/docs/configuring/services/build-service-account): write its logs,
  # read the uploaded source and stage into the bucket, push to the one image repository (granted
  # in create_repository).
  grant_project "serviceAccount:$BUILD_SA" roles/logging.logWriter
  grant_project "serviceAccount:$BUILD_SA" roles/storage.objectViewer
  grant_bucket "serviceAccount:$BUILD_SA" roles/storage.objectAdmin
}

create_repository() {
  say "Artifact Registry repository $ARTIFACT_REPO"
  if ! gc_lookup artifacts repositories describe "$ARTIFACT_REPO" --location="$REGION"; then
    gc artifacts repositories create "$ARTIFACT_REPO" --repository-format=docker --location="$REGION" \
      --description="mlrelay images"
  fi
  grant_repository "serviceAccount:$BUILD_SA" roles/artifactregistry.writer
  grant_repository "serviceAccount:$DATAFLOW_SA" roles/artifactregistry.reader
}

# The queue of the bakes' ends: each is a task scheduled bake_seconds ahead that calls Pub/Sub's
# REST publish on RELEASE_TOPIC with the release account's OAuth token (the Cloud Tasks service
# agent mints it; the API grants the agent that role itself when it is enabled). A second run
# applies the retry settings to the queue again.
create_queue() {
  say "Cloud Tasks queue $TASKS_QUEUE ($REGION): the end of each canary's bake"
  local verb=create
  gc_lookup tasks queues describe "$TASKS_QUEUE" --location="$REGION" && verb=update
  gc tasks queues "$verb" "$TASKS_QUEUE" --location="$REGION" "${QUEUE_RETRY[@]}"
  # A name deleted less than 3 days ago can seem to be created again while it is not: "run
  # queues.get to confirm that the queue creation was successful"
  # (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues/delete).
  if [[ $verb == create ]] && (( ! DRY_RUN )) \
      && ! gc_lookup tasks queues describe "$TASKS_QUEUE" --location="$REGION"; then
    die "queue $TASKS_QUEUE was not created: Cloud Tasks keeps the name of a deleted queue for up to" \
      "3 days. Run again later, or with TASKS_QUEUE=<another name>"
  fi
  # The functions create tasks on this queue only (roles/cloudtasks.enqueuer: cloudtasks.tasks.create).
  grant_queue "serviceAccount:$FUNCTIONS_SA" roles/cloudtasks.enqueuer
}

create_notification() {
  say "Trigger files: gs://$BUCKET/$TRIGGER_PREFIX* -> $START_TOPIC"
  local topic=projects/$PROJECT_ID/topics/$START_TOPIC matching=""
  gc_list NOTIFICATIONS storage buckets notifications list "gs://$BUCKET"
  matching=$(helper notifications "$topic" "$TRIGGER_PREFIX" "$BUCKET" <<<"$NOTIFICATIONS")
  if [[ -z $matching ]]; then
    gc storage buckets notifications create "gs://$BUCKET" --topic="$topic" --event-types=OBJECT_FINALIZE \
      --object-prefix="$TRIGGER_PREFIX" --payload-format=json --skip-topic-setup
  fi
}

# build_image CONTEXT IMAGE: build with Cloud Build as the build account, unless the image exists.
# Every tag is its build context's hash, so unchanged code is not built again. A build run as a
# chosen account must say where its logs go; they stay in the bucket's tmp/ for a week.
build_image() {
  local context=$1 image=$2
  if ! gc_lookup artifacts docker images describe "$image"; then
    gc builds submit "$context" --tag="$image" --region="$REGION" \
      --service-account="$BUILD_SA_RESOURCE" --gcs-log-dir="gs://$BUCKET/tmp/build-logs" \
      --gcs-source-staging-dir="gs://$BUCKET/tmp/build-source"
  fi
}

build_flex_template() {
  say "Dataflow Flex Template $FLEX_TEMPLATE"
  local tag image
  tag=$(helper stage-flex "$WORK/flex-context")
  image=$LAUNCHER_IMAGE:$tag
  build_image "$WORK/flex-context" "$image"
  gc dataflow flex-template build "$FLEX_TEMPLATE" --image="$image" --sdk-language=PYTHON \
    --metadata-file="$WORK/flex-context/metadata.json" --service-account-email="$DATAFLOW_SA" \
    --temp-location="gs://$BUCKET/tmp/" --staging-location="gs://$BUCKET/tmp/staging/" \
    --max-workers="$MAX_WORKERS"
}

# own_image VAR NAME KIND: the image VAR names when it is given, else ours, built from
# deploy/KIND_image into the repository and tagged by its context's hash. Vertex AI pulls both
# from the project's own repository as its service agent: the training image when a job starts,
# the serving image (named, with its routes and port, by each uploaded model) when one is deployed.
own_image() {
  local var=$1 name=$2 kind=$3 tag
  if [[ -n ${!var} ]]; then
    say "${kind^} image ${!var} (given)"
    return 0
  fi
  tag=$(helper "stage-$kind" "$WORK/$kind-context")
  printf -v "$var" '%s' "$REGION-docker.pkg.dev/$PROJECT_ID/$ARTIFACT_REPO/$name:$tag"
  say "${kind^} image ${!var}"
  build_image "$WORK/$kind-context" "${!var}"
}

create_endpoint() {
  say "Vertex AI endpoint $ENDPOINT_ID"
  if ! gc_lookup ai endpoints describe "$ENDPOINT_ID" --region="$REGION"; then
    gc ai endpoints create --endpoint-id="$ENDPOINT_ID" --display-name="$ENDPOINT_ID" --region="$REGION"
  fi
}

create_sink() {
  say "Log sink $SINK_NAME -> $JOB_EVENTS_TOPIC"
  local filter destination=pubsub.googleapis.com/projects/$PROJECT_ID/topics/$JOB_EVENTS_TOPIC
  # The filter has one definition, in events/sink_filters.py; the local cloud applies the same text.
  filter=$(cd "$ROOT" && "$PYTHON" -m events.sink_filters job-events)
  if gc_lookup logging sinks describe "$SINK_NAME"; then
    gc logging sinks update "$SINK_NAME" "$destination" --log-filter="$filter"
  else
    gc logging sinks create "$SINK_NAME" "$destination" --log-filter="$filter" \
      --description="mlrelay: the terminal lines of training, preprocessing and deploy jobs"
  fi
  gc_query SINK_WRITER "serviceAccount:WRITER_IDENTITY_OF_$SINK_NAME" logging sinks describe "$SINK_NAME" \
    --format='value(writerIdentity)'
  grant_topic "$JOB_EVENTS_TOPIC" "$SINK_WRITER" roles/pubsub.publisher
}

# deploy_function NAME ENTRY_POINT TIMEOUT DELIVERY TRIGGER_FLAG...
#
# DELIVERY is `retried` or `once`. A retried function is deployed with --retry: each is idempotent
# (create-only launch markers, deterministic job names, a look-up of jobs by run label), so a
# redelivered event repeats no work, and a transient fault (the function raises) gets another
# delivery instead of losing the run. Bad events are acknowledged by the functions, so a retry never
# loops on them; what fails MAX_DELIVERY_ATTEMPTS times goes to the dead-letter topic. A function
# run `once` gets neither: without --retry a failed event is dropped (gen2's default), so there is
# nothing to dead-letter.
# Memory: 512Mi holds the Google Cloud clients the functions import, with room to spare.
# Instances: none while idle; at most FUNCTION_MAX_INSTANCES, which bounds the cost of a burst.
deploy_function() {
  local name=$1 entry_point=$2 timeout=$3 delivery=$4 trigger subscription
  shift 4
  local retry_flag=""
  case $delivery in
    retried) retry_flag=--retry ;;
    once) ;;
    *) die "deploy_function $name: delivery must be 'retried' or 'once', not '$delivery'" ;;
  esac
  retry gc functions deploy "$name" --gen2 --runtime=python311 --region="$REGION" \
    --source="$WORK/functions-source" --entry-point="$entry_point" --no-allow-unauthenticated \
    --service-account="$FUNCTIONS_SA" --trigger-service-account="$TRIGGER_SA" ${retry_flag:+"$retry_flag"} \
    --build-service-account="$BUILD_SA_RESOURCE" --docker-repository="$DOCKER_REPOSITORY" \
    --timeout="$timeout" --memory=512Mi --min-instances=0 --max-instances="$FUNCTION_MAX_INSTANCES" \
    --set-env-vars="$FUNCTION_ENV" "$@"
  gc functions add-invoker-policy-binding "$name" --region="$REGION" --member="serviceAccount:$TRIGGER_SA"
  [[ $delivery == retried ]] || return 0
  # The dead-letter policy goes on the Pub/Sub subscription Eventarc made for the trigger.
  gc_query trigger "projects/$PROJECT_ID/locations/$REGION/triggers/TRIGGER_OF_$name" \
    functions describe "$name" --v2 --region="$REGION" --format='value(eventTrigger.trigger)'
  gc_query subscription "projects/$PROJECT_ID/subscriptions/SUBSCRIPTION_OF_$name" \
    eventarc triggers describe "$trigger" --format='value(transport.pubsub.subscription)'
  gc pubsub subscriptions update "$subscription" \
    --dead-letter-topic="projects/$PROJECT_ID/topics/$DEAD_LETTER_TOPIC" \
    --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS"
  grant_subscription "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber
}

deploy_functions() {
  say "Functions (2nd gen)"
  helper stage-functions "$WORK/functions-source"
  FUNCTION_ENV=$(helper function-env "PROJECT_ID=$PROJECT_ID" "REGION=$REGION" "BUCKET=$BUCKET" \
    "START_TOPIC=$START_TOPIC" "JOB_EVENTS_TOPIC=$JOB_EVENTS_TOPIC" "DEAD_LETTER_TOPIC=$DEAD_LETTER_TOPIC" \
    "RELEASE_TOPIC=$RELEASE_TOPIC" "MODEL_NAME=$MODEL_NAME" "ENDPOINT_ID=$ENDPOINT_ID" \
    "CANARY_PERCENT=$CANARY_PERCENT" "BAKE_SECONDS=$BAKE_SECONDS" "GATE_MIN_IMPROVEMENT=$GATE_MIN_IMPROVEMENT" \
    "GATE_TOLERANCE=$GATE_TOLERANCE" "GATE_SLICE_TOLERANCE=$GATE_SLICE_TOLERANCE" \
    "TASKS_QUEUE=$TASKS_QUEUE" "TASKS_SA=$TASKS_SA" \
    "RECONCILE_TOPIC=$RECONCILE_TOPIC" "RECONCILE_AFTER_SECONDS=$RECONCILE_AFTER_SECONDS" \
    "DEBOUNCE_SECONDS=$DEBOUNCE_SECONDS" "MAX_ACTIVE_RUNS=$MAX_ACTIVE_RUNS" \
    "MAX_QUEUED_RUNS=$MAX_QUEUED_RUNS" "DAILY_RUN_BUDGET=$DAILY_RUN_BUDGET" \
    "DATAFLOW_SA=$DATAFLOW_SA" "TRAINING_SA=$TRAINING_SA" "TRAINING_IMAGE=$TRAINING_IMAGE" \
    "SERVING_IMAGE=$SERVING_IMAGE" "SERVING_MACHINE_TYPE=$SERVING_MACHINE_TYPE" \
    "FLEX_TEMPLATE=$FLEX_TEMPLATE" "MAX_WORKERS=$MAX_WORKERS")
  # Validating a request, recording the run and one Flex Template launch call: 2 minutes is ample.
  deploy_function "$START_FUNCTION" start_pipeline 120s retried --trigger-topic="$START_TOPIC"
  # Every object finalized in the bucket arrives here; all but a run's manifest return at once,
  # and a manifest costs one CustomJob create call.
  deploy_function "$PREPROCESS_FUNCTION" on_preprocess_output 120s retried \
    --trigger-event-filters="type=google.cloud.storage.object.v1.finalized" \
    --trigger-event-filters="bucket=$BUCKET" --trigger-location="$REGION"
  # Confirming the job, registering the model version (an upload that can take a minute) and
  # starting the deploy, which it never waits for: 5 minutes, well inside the 9-minute limit.
  deploy_function "$TRAINING_FUNCTION" on_training_complete 300s retried --trigger-topic="$JOB_EVENTS_TOPIC"
  # A bake's end, published by its task: a few Monitoring reads, then the promotion or rollback
  # (undeployModel, mergeVersionAliases: calls started, never waited for). 5 minutes, as above.
  deploy_function "$RELEASE_FUNCTION" on_release_event 300s retried --trigger-topic="$RELEASE_TOPIC"
  # The reconcile sweep, on each SWEEP_SCHEDULE tick: it reads the ledgers of the unfinished runs and,
  # for each run quiet for RECONCILE_AFTER_SECONDS, asks the job or operation API about it and may
  # drive it on (a model upload, a launch): 5 minutes, as above. Run once, neither retried nor
  # dead-lettered: a tick carries nothing, so a failed sweep is made good by the next one (every
  # few minutes, idempotent as the events it stands in for), while its retries would overlap the
  # next ticks and its dead letters would crowd the queue `mlrelay dead-letters replay` serves.
  deploy_function "$RECONCILE_FUNCTION" reconcile_runs 300s once --trigger-topic="$RECONCILE_TOPIC"
}

# schedule_job NAME SCHEDULE TIME_ZONE TOPIC BODY: a Cloud Scheduler job publishing BODY to TOPIC,
# created, or updated in place when it exists. No grant is needed on the topic: whoever may create
# a job "can create jobs that publish to any Pub/Sub topics within the project"
# (https://cloud.google.com/scheduler/docs/access-control).
schedule_job() {
  local name=$1 schedule=$2 time_zone=$3 topic=$4 body=$5 verb=create
  gc_lookup scheduler jobs describe "$name" --location="$REGION" && verb=update
  gc scheduler jobs "$verb" pubsub "$name" --location="$REGION" --schedule="$schedule" \
    --time-zone="$time_zone" --topic="projects/$PROJECT_ID/topics/$topic" --message-body="$body"
}

create_schedule() {
  say "Schedule $SCHEDULER_JOB: '$SCHEDULE' ($SCHEDULE_TZ)"
  schedule_job "$SCHEDULER_JOB" "$SCHEDULE" "$SCHEDULE_TZ" "$START_TOPIC" "$SCHEDULE_REQUEST"
  # The sweep's tick: any message is one, but a Pub/Sub message needs data (or an attribute), hence
  # {}. A schedule in minutes means the same in every time zone, so it has none of its own.
  say "Reconcile sweep $SWEEP_JOB: '$SWEEP_SCHEDULE' (Etc/UTC)"
  schedule_job "$SWEEP_JOB" "$SWEEP_SCHEDULE" Etc/UTC "$RECONCILE_TOPIC" '{}'
}

print_next_steps() {
  local heading="mlrelay is deployed in $PROJECT_ID ($REGION). Start a run in any of three ways:"
  if (( DRY_RUN )); then
    heading="Dry run: nothing was changed. Once deployed, start a run in any of three ways:"
  fi
  cat <<EOF

$heading
  1. upload a trigger file (a JSON run request; {} takes every default):
       echo '{"limit": 200000}' > request.json
       gcloud storage cp request.json gs://$BUCKET/${TRIGGER_PREFIX}request.json     (or: gsutil cp ...)
  2. publish a run request:
       gcloud pubsub topics publish $START_TOPIC --project=$PROJECT_ID --message='{"limit": 200000}'
  3. run the schedule now:
       gcloud scheduler jobs run $SCHEDULER_JOB --location=$REGION --project=$PROJECT_ID
Watch it:
  mlrelay status --bucket gs://$BUCKET
  gcloud tasks list --queue=$TASKS_QUEUE --location=$REGION --project=$PROJECT_ID   (bakes still running)
  mlrelay dead-letters list --project $PROJECT_ID   (events that failed every delivery, from $DEAD_LETTER_SUBSCRIPTION)
The reconcile sweep $SWEEP_JOB ('$SWEEP_SCHEDULE', UTC) drives on any run quiet for ${RECONCILE_AFTER_SECONDS}s whose
event was lost; run it now with:
  gcloud scheduler jobs run $SWEEP_JOB --location=$REGION --project=$PROJECT_ID
EOF
}

deploy() {
  enable_apis
  create_bucket
  create_topics
  create_service_accounts
  grant_roles
  create_queue
  create_notification
  create_repository
  build_flex_template
  own_image TRAINING_IMAGE trainer training
  own_image SERVING_IMAGE server serving
  create_endpoint
  create_sink
  deploy_functions
  create_schedule
  print_next_steps
}

main() {
  DRY_RUN=0
  local mode=deploy arg
  for arg in "$@"; do
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      --teardown) mode=teardown ;;
      -h|--help) usage; return 0 ;;
      *) usage >&2; die "unknown argument '$arg'" ;;
    esac
  done
  # A dry run cannot look anything up: a deployment shows every create, a teardown every delete.
  local assumes_present=0
  [[ $mode != teardown ]] || assumes_present=1
  # shellcheck disable=SC2034  # read by lookup (deploy/shell_lib.sh)
  DRY_RUN_ASSUMES_PRESENT=$assumes_present
  load_settings
  if (( ! DRY_RUN )); then
    command -v gcloud >/dev/null || die "gcloud is not installed: see https://cloud.google.com/sdk/docs/install"
  fi
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlrelay-deploy.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  export CLOUDSDK_CORE_DISABLE_PROMPTS=1
  if (( DRY_RUN )); then
    printf '# Dry run: the commands deploy.sh would run for project %s; nothing is changed.\n' "$PROJECT_ID"
  fi
  "$mode"
}

main "$@"
