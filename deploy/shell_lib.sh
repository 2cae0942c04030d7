# shellcheck shell=bash
# How deploy.sh talks to gcloud: every command is shown before it runs, a dry run only shows it,
# and every create is preceded by a look-up that tells "absent" from "could not look".
#
# Sourced by deploy.sh, which sets DRY_RUN and DRY_RUN_ASSUMES_PRESENT (0/1), PROJECT_ID, WORK (a
# scratch directory), PYTHON and ROOT before calling anything here.

# What gcloud says when a describe finds nothing (any other failure stops the deployment).
NOT_FOUND_PATTERN='NOT_FOUND|not found|404|does not exist'

die() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 1
}

say() {
  if (( DRY_RUN )); then
    printf '\n# --- %s\n' "$*"
  else
    printf '\n==> %s\n' "$*"
  fi
}

# The command as one line a shell reads back the same: plain words as they are, others quoted.
quoted() {
  local out="" arg
  for arg in "$@"; do
    if [[ ! $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      arg="'${arg//\'/\'\\\'\'}'"
    fi
    out+="${out:+ }$arg"
  done
  printf '%s' "$out"
}

# run COMMAND...: a command that changes something; a dry run prints it instead.
run() {
  if (( DRY_RUN )); then
    printf '%s\n' "$(quoted "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quoted "$@")"
  "$@"
}

# query VAR PLACEHOLDER COMMAND...: set VAR to what a read-only command prints (PLACEHOLDER in a
# dry run, where nothing is asked).
query() {
  local var=$1 placeholder=$2 answer
  shift 2
  if (( DRY_RUN )); then
    printf '%s  # -> %s\n' "$(quoted "$@")" "$var"
    printf -v "$var" '%s' "$placeholder"
    return 0
  fi
  answer=$("$@") || die "failed: $(quoted "$@")"
  [[ -n $answer ]] || die "no answer from: $(quoted "$@")"
  printf -v "$var" '%s' "$answer"
}

# list_json VAR COMMAND...: set VAR to a JSON listing ('[]' when there is nothing, or in a dry run).
list_json() {
  local var=$1 answer
  shift
  if (( DRY_RUN )); then
    printf '%s  # -> %s\n' "$(quoted "$@")" "$var"
    printf -v "$var" '%s' '[]'
    return 0
  fi
  answer=$("$@") || die "failed: $(quoted "$@")"
  printf -v "$var" '%s' "${answer:-[]}"
}

# lookup COMMAND...: run a describe; status 0 (its output in LOOKUP) when the resource exists,
# 1 when gcloud says it does not; any other failure (permissions, a name taken elsewhere) stops.
# A dry run asks nothing: it assumes the resource is absent, or present if DRY_RUN_ASSUMES_PRESENT=1.
LOOKUP=""
lookup() {
  LOOKUP=""
  if (( DRY_RUN )); then
    if (( DRY_RUN_ASSUMES_PRESENT )); then
      printf '%s  # look-up (a dry run assumes present)\n' "$(quoted "$@")"
      return 0
    fi
    printf '%s  # look-up (a dry run assumes absent)\n' "$(quoted "$@")"
    return 1
  fi
  local errors="$WORK/lookup.err"
  # shellcheck disable=SC2034  # LOOKUP is read by the callers
  if LOOKUP=$("$@" 2>"$errors"); then
    return 0
  fi
  if grep -qiE "$NOT_FOUND_PATTERN" "$errors"; then
    return 1
  fi
  cat "$errors" >&2
  die "could not look up: $(quoted "$@")"
}

# retry COMMAND...: for deploys that can fail for a minute while new IAM grants propagate; the
# command must be safe to repeat.
retry() {
  local attempt=1
  until "$@"; do
    (( attempt < DEPLOY_ATTEMPTS )) || die "failed $DEPLOY_ATTEMPTS times: $(quoted "$@")"
    printf 'retrying in %ss (new permissions can take a minute to apply)\n' "$RETRY_DELAY"
    sleep "$RETRY_DELAY"
    attempt=$((attempt + 1))
  done
}

# What IAM answers a grant naming an account it has not seen yet. IAM reads are eventually
# consistent ("your application can retry the request with truncated exponential backoff",
# https://cloud.google.com/iam/docs/reference/rest), so an account created moments ago may not be
# grantable for a while.
IAM_PROPAGATION_PATTERN='[Ss]ervice account .*does not exist'

# iam COMMAND...: an IAM grant, retried with truncated exponential backoff (IAM_RETRY_DELAY
# doubling up to 32 s, IAM_ATTEMPTS tries) while IAM has not seen an account yet; any other
# failure stops at once.
iam() {
  if (( DRY_RUN )); then
    run "$@"
    return 0
  fi
  local attempt=1 delay=$IAM_RETRY_DELAY errors="$WORK/iam.err"
  printf '+ %s\n' "$(quoted "$@")"
  until "$@" 2>"$errors"; do
    if ! grep -qE "$IAM_PROPAGATION_PATTERN" "$errors" || (( attempt >= IAM_ATTEMPTS )); then
      cat "$errors" >&2
      die "failed after $attempt attempt(s): $(quoted "$@")"
    fi
    printf 'IAM has not seen the account yet; retrying in %ss\n' "$delay"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$(( delay * 2 > 32 ? 32 : delay * 2 ))
  done
  cat "$errors" >&2
}

# gcloud against the deployment's project, never the one gcloud happens to be configured with,
# and without prompts (a script cannot answer them).
gc() { run gcloud "$@" --project="$PROJECT_ID" --quiet; }
gc_query() { local var=$1 placeholder=$2; shift 2; query "$var" "$placeholder" gcloud "$@" --project="$PROJECT_ID"; }
gc_lookup() { lookup gcloud "$@" --project="$PROJECT_ID"; }
gc_list() { local var=$1; shift; list_json "$var" gcloud "$@" --project="$PROJECT_ID" --format=json; }
gc_iam() { iam gcloud "$@" --project="$PROJECT_ID" --quiet; }

# The project's Python helpers (deploy/deploy_helpers.py).
helper() { "$PYTHON" "$ROOT/deploy/deploy_helpers.py" "$@"; }

# IAM grants, each on the narrowest resource that works. add-iam-policy-binding changes nothing
# when the binding exists, so a second run repeats them harmlessly.
grant_project() {
  gc_iam projects add-iam-policy-binding "$PROJECT_ID" --member="$1" --role="$2" --condition=None --format=none
}
grant_bucket() { gc_iam storage buckets add-iam-policy-binding "gs://$BUCKET" --member="$1" --role="$2" --format=none; }
grant_topic() { gc_iam pubsub topics add-iam-policy-binding "$1" --member="$2" --role="$3" --format=none; }
grant_subscription() { gc_iam pubsub subscriptions add-iam-policy-binding "$1" --member="$2" --role="$3" --format=none; }
grant_on_account() { gc_iam iam service-accounts add-iam-policy-binding "$1" --member="$2" --role="$3" --format=none; }
grant_queue() {
  gc_iam tasks queues add-iam-policy-binding "$TASKS_QUEUE" --location="$REGION" --member="$1" --role="$2" --format=none
}
grant_repository() {
  gc_iam artifacts repositories add-iam-policy-binding "$ARTIFACT_REPO" --location="$REGION" \
    --member="$1" --role="$2" --format=none
}
