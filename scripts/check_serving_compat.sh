#!/usr/bin/env bash
# Can Vertex AI's prebuilt TensorFlow prediction image serve our exported model?
#
# The newest of those images (tf2-cpu.2-15) runs TensorFlow 2.15, while the project trains with
# a newer TensorFlow. This loads a SavedModel with plain tf.saved_model.load under
# tensorflow-cpu 2.15, predicts a batch through serving_default (trainer/serving_check.py), and
# checks that the predictions equal those of the project's TensorFlow.
#
# Usage: scripts/check_serving_compat.sh [SAVED_MODEL_DIR]
#   Without a directory it first trains a tiny model with the project's .venv.
# Environment:
#   TF215_VENV      virtualenv with tensorflow-cpu 2.15 (default .venv-tf215; created once, reused)
#   PYTHON          interpreter that creates it (default python3; TF 2.15 supports Python 3.9-3.11)
#   PROJECT_PYTHON  the project's interpreter (default .venv/bin/python)
# Exit status: 0 when the model passes under both versions, non-zero otherwise.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TF215_VENV:-$repo/.venv-tf215}"
python="${PYTHON:-python3}"
project_python="${PROJECT_PYTHON:-$repo/.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
started=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

has_tf215() {
  "$venv/bin/python" -c 'import sys, tensorflow as tf; sys.exit(not tf.__version__.startswith("2.15."))' \
    >/dev/null 2>&1
}
if ! has_tf215; then
  echo "check_serving_compat: creating $venv with tensorflow-cpu==2.15.*" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "tensorflow-cpu==2.15.*"
  has_tf215 || { echo "check_serving_compat: $venv has no TensorFlow 2.15" >&2; exit 1; }
fi

if [ $# -ge 1 ]; then
  model_dir="$(cd "$1" && pwd)"
else
  echo "check_serving_compat: training a tiny model with $project_python" >&2
  (cd "$repo" && "$project_python" -c "
from trainer import contract_data as c
c.write_dataset('$work/data', c.split_records(c.synthetic_records(2000, seed=1)), num_shards=2)")
  (cd "$repo" && "$project_python" -m trainer.task --data-dir "$work/data" --job-dir "$work/job" \
    --num-train-examples 30000 --num-evals 1 --batch-size 256 >"$work/train.log" 2>&1) \
    || { cat "$work/train.log" >&2; echo "check_serving_compat: training failed" >&2; exit 1; }
  model_dir="$work/job/model"
fi

# Both checks run from the repository so that `-m trainer.serving_check` resolves without install.
(cd "$repo" && "$venv/bin/python" -m trainer.serving_check "$model_dir") >"$work/tf215.json" \
  || { cat "$work/tf215.json"; echo "check_serving_compat: FAILED under TensorFlow 2.15" >&2; exit 1; }
(cd "$repo" && "$project_python" -m trainer.serving_check "$model_dir") >"$work/project.json" \
  || { cat "$work/project.json"; echo "check_serving_compat: FAILED under the project's TensorFlow" >&2; exit 1; }

"$project_python" - "$work/tf215.json" "$work/project.json" <<'PY'
import json, sys
old, new = (json.load(open(path)) for path in sys.argv[1:3])
gap = max(abs(a - b) for a, b in zip(old["predictions"], new["predictions"]))
print(f"TensorFlow {old['tensorflow']}: {old['predictions']}")
print(f"TensorFlow {new['tensorflow']}: {new['predictions']}")
if gap > 1e-3:
    sys.exit(f"check_serving_compat: predictions differ by up to {gap:.2e} lb between versions")
print(f"largest difference {gap:.1e} lb")
PY
echo "check_serving_compat: OK ($model_dir serves under TensorFlow 2.15) in $((SECONDS - started)) s"
