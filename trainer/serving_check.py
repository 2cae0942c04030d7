"""Load an exported model the way a TensorFlow Serving container does, and predict a batch.

Run as ``python -m trainer.serving_check MODEL_DIR`` with any TensorFlow 2.x: it uses plain
``tf.saved_model.load`` and the ``serving_default`` signature, never Keras, so it shows whether
the SavedModel is servable by Vertex AI's prebuilt TensorFlow prediction image (TF 2.15) on its
own. It prints a JSON report and exits 0 only when the signature and predictions are right.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Sequence

# A batch a client could send: every sex value and the pluralities only the "Unknown" rows use.
SAMPLE_BATCH = {
    "is_male": ["True", "False", "Unknown", "Unknown", "True"],
    "plurality": ["Single(1)", "Twins(2)", "Multiple(2+)", "Single(1)", "Triplets(3)"],
    "mother_age": [26.0, 32.0, 41.0, 19.0, 35.0],
    "gestation_weeks": [39.0, 36.0, 34.0, 40.0, 32.0],
}
EXPECTED_INPUTS = {"is_male": "string", "plurality": "string", "mother_age": "float32",
                   "gestation_weeks": "float32"}
# Newborns weigh between about 0.5 and 15 pounds; a prediction outside (0, 20) is a broken model.
PLAUSIBLE_POUNDS = (0.0, 20.0)


class ServingCheckError(RuntimeError):
    """The SavedModel does not load, or its signature or predictions are wrong."""


def check_saved_model(model_dir: str) -> dict:
    """Load ``model_dir``, check ``serving_default`` and predict :data:`SAMPLE_BATCH`."""
    import tensorflow as tf  # noqa: PLC0415 (the caller's TensorFlow, whichever version)

    try:
        loaded = tf.saved_model.load(model_dir)
    except Exception as error:  # any load failure is the finding
        raise ServingCheckError(f"tf.saved_model.load({model_dir!r}) failed: {error}") from error
    if "serving_default" not in loaded.signatures:
        raise ServingCheckError(f"no serving_default signature; found {list(loaded.signatures)}")
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    found = {name: spec.dtype.name for name, spec in inputs.items()}
    if found != EXPECTED_INPUTS:
        raise ServingCheckError(f"serving_default inputs are {found}, expected {EXPECTED_INPUTS}")
    for name, spec in inputs.items():
        if spec.shape.rank != 1:
            raise ServingCheckError(f"input {name} has shape {spec.shape}, expected [batch]")

    batch = {
        name: tf.constant(values, dtype=getattr(tf, EXPECTED_INPUTS[name]))
        for name, values in SAMPLE_BATCH.items()
    }
    outputs = signature(**batch)
    if set(outputs) != {"weight"}:
        raise ServingCheckError(f"serving_default returns {sorted(outputs)}, expected ['weight']")
    weight = outputs["weight"]
    batch_size = len(SAMPLE_BATCH["is_male"])
    if weight.dtype != tf.float32 or weight.shape.as_list() != [batch_size]:
        raise ServingCheckError(
            f"weight is {weight.dtype.name} of shape {weight.shape}, expected float32 [{batch_size}]"
        )
    predictions = [float(x) for x in weight.numpy()]
    low, high = PLAUSIBLE_POUNDS
    if not all(math.isfinite(x) and low < x < high for x in predictions):
        raise ServingCheckError(f"implausible predictions (pounds): {predictions}")
    return {
        "tensorflow": tf.__version__,
        "model_dir": model_dir,
        "predictions": predictions,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the check's JSON report; exit status 0 when the model passes, 1 otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m trainer.serving_check MODEL_DIR", file=sys.stderr)
        return 2
    try:
        report = check_saved_model(args[0])
    except ServingCheckError as error:
        print(json.dumps({"ok": False, "model_dir": args[0], "error": str(error)}))
        return 1
    print(json.dumps({"ok": True, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
