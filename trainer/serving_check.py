"""Load an exported model the way a TensorFlow Serving container does, and predict a batch.

Run as ``python -m trainer.serving_check MODEL_DIR`` with any TensorFlow 2.x: it uses plain
``tf.saved_model.load`` and the ``serving_default`` signature, never Keras, so it shows whether
the SavedModel is servable by Vertex AI's prebuilt TensorFlow prediction image (TF 2.15) on its
own. It prints a JSON report and exits 0 only when the signature and predictions are right.

The trainer scores a champion model the same way (:func:`predict_weights`): through its
``serving_default`` signature alone, so a model exported by any earlier trainer is scored
without our Python code.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Mapping, Sequence

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


def _load_signature(model_dir: str):
    """Load ``model_dir`` with plain TensorFlow; return it and its checked ``serving_default``.

    The caller holds on to the loaded object while it calls the signature: the model's variables
    belong to that object, and a signature called after it is freed may find them gone.
    """
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
    return loaded, signature


def _predict_batch(signature, columns: Mapping[str, Sequence]):
    """Call the signature on one batch of raw feature columns; check and return ``weight``."""
    import tensorflow as tf  # noqa: PLC0415

    batch = {name: tf.constant(columns[name], dtype=getattr(tf, dtype))
             for name, dtype in EXPECTED_INPUTS.items()}
    outputs = signature(**batch)
    if set(outputs) != {"weight"}:
        raise ServingCheckError(f"serving_default returns {sorted(outputs)}, expected ['weight']")
    weight = outputs["weight"]
    batch_size = len(columns["is_male"])
    if weight.dtype != tf.float32 or weight.shape.as_list() != [batch_size]:
        raise ServingCheckError(
            f"weight is {weight.dtype.name} of shape {weight.shape}, expected float32 [{batch_size}]"
        )
    return weight.numpy()


def check_saved_model(model_dir: str) -> dict:
    """Load ``model_dir``, check ``serving_default`` and predict :data:`SAMPLE_BATCH`."""
    import tensorflow as tf  # noqa: PLC0415

    _loaded, signature = _load_signature(model_dir)
    predictions = [float(x) for x in _predict_batch(signature, SAMPLE_BATCH)]
    low, high = PLAUSIBLE_POUNDS
    if not all(math.isfinite(x) and low < x < high for x in predictions):
        raise ServingCheckError(f"implausible predictions (pounds): {predictions}")
    return {
        "tensorflow": tf.__version__,
        "model_dir": model_dir,
        "predictions": predictions,
    }


def predict_weights(model_dir: str, features: Mapping[str, Sequence], batch_size: int = 8192):
    """Predictions (a float32 numpy array) of the SavedModel in ``model_dir`` for raw feature
    columns, in row order.

    Only the ``serving_default`` signature is used, as the serving container uses it; a model
    that does not load or whose signature is not the serving contract is a ServingCheckError.
    """
    import numpy as np  # noqa: PLC0415 (TensorFlow's own dependency)

    _loaded, signature = _load_signature(model_dir)
    rows = len(features["is_male"])
    batches = []
    for start in range(0, rows, batch_size):
        columns = {name: features[name][start:start + batch_size] for name in EXPECTED_INPUTS}
        batches.append(_predict_batch(signature, columns))
    return np.concatenate(batches) if batches else np.zeros(0, dtype=np.float32)


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
