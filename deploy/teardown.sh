# shellcheck shell=bash
# `deploy.sh --teardown`: delete what deploy.sh created, in the reverse order of its dependencies.
#
# Each resource is looked up first, so a second teardown (or one after a partial deploy) finds
# nothing to do and still succeeds. With KEEP_BUCKET=1 the bucket and its runs stay.
# Left in place on purpose: the enabled APIs, and the Cloud Storage service agent's
# pubsub.publisher grant (other Eventarc storage triggers of the project may rely on it).
# Sourced by deploy.sh, after deploy/shell_lib.sh.

# try_gc ARGS...: a gcloud change that may find its target already gone (a removed IAM binding).
try_gc() {
  if (( DRY_RUN )); then
    gc "$@"
    return 0
  fi
  local errors="$WORK/try.err"
  printf '+ %s\n' "$(quoted gcloud "$@" --project="$PROJECT_ID" --quiet)"
  if gcloud "$@" --project="$PROJECT_ID" --quiet 2>"$errors"; then
    return 0
  fi
  if grep -qiE "$NOT_FOUND_PATTERN" "$errors"; then
    printf '  (already gone)\n'
    return 0
  fi
  cat "$errors" >&2
  die "failed: $(quoted gcloud "$@")"
}

revoke_project() {
  try_gc projects remove-iam-policy-binding "$PROJECT_ID" --member="$1" --role="$2" --condition=None --format=none
}

teardown_functions() {
  say "Schedules and functions"
  local job name
  for job in "$SCHEDULER_JOB" "$SWEEP_JOB"; do
    if gc_lookup scheduler jobs describe "$job" --location="$REGION"; then
      gc scheduler jobs delete "$job" --location="$REGION"
    fi
  done
  # Deleting a function deletes its Eventarc trigger and the trigger's subscription.
  for name in "$START_FUNCTION" "$PREPROCESS_FUNCTION" "$TRAINING_FUNCTION" "$RELEASE_FUNCTION" \
      "$RECONCILE_FUNCTION"; do
    if gc_lookup functions describe "$name" --v2 --region="$REGION"; then
      gc functions delete "$name" --gen2 --region="$REGION"
    fi
  done
}

teardown_events() {
  say "Log sink, trigger-file notification, release queue, topics"
  if gc_lookup logging sinks describe "$SINK_NAME"; then
    gc logging sinks delete "$SINK_NAME"
  fi
  if gc_lookup storage buckets describe "gs://$BUCKET"; then
    local listing="[]" names name
    gc_list listing storage buckets notifications list "gs://$BUCKET"
    names=$(helper notifications "projects/$PROJECT_ID/topics/$START_TOPIC" "$TRIGGER_PREFIX" "$BUCKET" <<<"$listing")
    while read -r name; do
      [[ -z $name ]] || gc storage buckets notifications delete "$name"
    done <<<"$names"
  fi
  # A bake still pending goes with its queue (its canary goes with the endpoint). The name stays
  # taken for up to 3 days; deploy.sh says so if it is run again within them.
  if gc_lookup tasks queues describe "$TASKS_QUEUE" --location="$REGION"; then
    gc tasks queues delete "$TASKS_QUEUE" --location="$REGION"
  fi
  if gc_lookup pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION"; then
    gc pubsub subscriptions delete "$DEAD_LETTER_SUBSCRIPTION"
  fi
  local topic
  for topic in "$START_TOPIC" "$JOB_EVENTS_TOPIC" "$DEAD_LETTER_TOPIC" "$RELEASE_TOPIC" "$RECONCILE_TOPIC"; do
    if gc_lookup pubsub topics describe "$topic"; then
      gc pubsub topics delete "$topic"
    fi
  done
}

teardown_endpoint() {
  say "Vertex AI endpoint $ENDPOINT_ID"
  if gc_lookup ai endpoints describe "$ENDPOINT_ID" --region="$REGION" --format='value(deployedModels[].id)'; then
    local deployed ids
    # An endpoint with models on it cannot be deleted; undeploying stops their serving costs.
    IFS=';' read -r -a ids <<<"$LOOKUP"
    for deployed in "${ids[@]}"; do
      [[ -z $deployed ]] || gc ai endpoints undeploy-model "$ENDPOINT_ID" --region="$REGION" \
        --deployed-model-id="$deployed"
    done
    gc ai endpoints delete "$ENDPOINT_ID" --region="$REGION"
  fi
}

teardown_identities() {
  say "IAM grants, service accounts, custom role"
  revoke_project "serviceAccount:$FUNCTIONS_SA" roles/dataflow.developer
  revoke_project "serviceAccount:$FUNCTIONS_SA" roles/aiplatform.user
  revoke_project "serviceAccount:$FUNCTIONS_SA" roles/monitoring.viewer
  revoke_project "serviceAccount:$DATAFLOW_SA" roles/dataflow.worker
  revoke_project "serviceAccount:$DATAFLOW_SA" roles/bigquery.jobUser
  revoke_project "serviceAccount:$DATAFLOW_SA" roles/bigquery.readSessionUser
  revoke_project "serviceAccount:$DATAFLOW_SA" "projects/$PROJECT_ID/roles/$BQ_TEMP_ROLE"
  revoke_project "serviceAccount:$TRIGGER_SA" roles/eventarc.eventReceiver
  revoke_project "serviceAccount:$BUILD_SA" roles/logging.logWriter
  revoke_project "serviceAccount:$BUILD_SA" roles/storage.objectViewer
  local account
  # Grants on the accounts themselves, the bucket, topics, queue and repository go with those resources.
  for account in "$FUNCTIONS_SA" "$DATAFLOW_SA" "$TRAINING_SA" "$TRIGGER_SA" "$BUILD_SA" "$TASKS_SA"; do
    if gc_lookup iam service-accounts describe "$account"; then
      gc iam service-accounts delete "$account"
    fi
  done
  # A deleted custom role stays undeletable for a while; deploy.sh undeletes it when it comes back.
  if gc_lookup iam roles describe "$BQ_TEMP_ROLE" --format='value(deleted)' && [[ $LOOKUP != True ]]; then
    gc iam roles delete "$BQ_TEMP_ROLE"
  fi
}

teardown_storage() {
  say "Images and bucket"
  if gc_lookup artifacts repositories describe "$ARTIFACT_REPO" --location="$REGION"; then
    gc artifacts repositories delete "$ARTIFACT_REPO" --location="$REGION"
  fi
  if (( KEEP_BUCKET )); then
    printf 'KEEP_BUCKET=1: gs://%s and its runs are kept.\n' "$BUCKET"
  elif gc_lookup storage buckets describe "gs://$BUCKET"; then
    gc storage rm --recursive "gs://$BUCKET"
  fi
}

teardown() {
  teardown_functions
  teardown_events
  teardown_endpoint
  teardown_identities
  teardown_storage
  local heading="mlrelay is torn down in $PROJECT_ID."
  (( ! DRY_RUN )) || heading="Dry run: nothing was deleted."
  cat <<EOF

$heading Left in place: the enabled APIs, the Cloud Storage service
agent's roles/pubsub.publisher grant, and any model versions in the Vertex AI Model Registry
(gcloud ai models list --region=$REGION --project=$PROJECT_ID).
Cloud Tasks keeps the name of the deleted queue $TASKS_QUEUE for up to 3 days: to deploy again
sooner, set TASKS_QUEUE to another name.
EOF
}
