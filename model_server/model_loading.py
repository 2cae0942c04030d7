"""SavedModels loaded as TensorFlow Serving loads them.

TensorFlow is imported on the first model load, so a server that imports this module starts
listening (and answers liveness checks) before the model is loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from typing import Any, Callable, Mapping
from urllib.parse import unquote, urlsplit

import numpy as np

from model_server.errors import invalid
from model_server.row_format import (
    InputSpec,
    check_prediction_count,
    instances_to_columns,
    predictions_from_outputs,
)

SERVING_SIGNATURE = "serving_default"


def local_artifact_path(artifact_uri: str) -> str:
    """Where a model's artifacts are read from: ``file://`` URIs become paths; others pass through."""
    if artifact_uri.startswith("file://"):
        return unquote(urlsplit(artifact_uri).path)
    return artifact_uri


class LoadedModel:
    """A SavedModel's ``serving_default`` signature, ready to predict.

    Loaded the way TensorFlow Serving (Vertex AI's prebuilt prediction container) loads it: the
    MetaGraph tagged "serve" in a Session, run through its SignatureDef. A prediction is one
    Session call that holds the interpreter lock only to hand over the arrays, so the HTTP front
    keeps reading requests while the model runs; the eager ``tf.saved_model.load`` signature
    spends much of each call in Python, holding the lock.
    """

    def __init__(self, artifact_uri: str, path: str):
        import tensorflow as tf  # imported here so that starting the service stays fast

        if not os.path.isdir(path) and "://" not in path:
            raise FileNotFoundError(f"no SavedModel directory at {path} (artifactUri {artifact_uri})")
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default(), _tensorflow_log_level(logging.ERROR):  # the v1 loader's deprecation notice
                meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
            signatures = meta_graph.signature_def
            if SERVING_SIGNATURE not in signatures:
                raise ValueError(
                    f"the SavedModel at {artifact_uri} has no {SERVING_SIGNATURE!r} signature "
                    f"(it has {sorted(signatures.keys())})"
                )
            signature = signatures[SERVING_SIGNATURE]
            self.input_specs = tuple(
                _input_spec(name, tensor_info, tf) for name, tensor_info in sorted(signature.inputs.items())
            )
            self._output_names = tuple(sorted(signature.outputs))
            self._run = _session_callable(
                session,
                feeds=[signature.inputs[spec.name].name for spec in self.input_specs],
                fetches=[signature.outputs[name].name for name in self._output_names],
            )
        except BaseException:
            session.close()
            raise
        self._refusals = (tf.errors.InvalidArgumentError, ValueError, TypeError)
        weakref.finalize(self, session.close)

    def predict_instances(self, instances: Any) -> list:
        """Predictions in TensorFlow Serving's row format for row-format instances (thread-safe)."""
        columns = instances_to_columns(instances, self.input_specs)
        return check_prediction_count(predictions_from_outputs(self.predict(columns)), len(instances))

    def predict(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature's outputs for a batch of inputs (thread-safe)."""
        try:
            values = self._run(*(columns[spec.name] for spec in self.input_specs))
        except self._refusals as exc:
            raise invalid(f"the model refused the instances: {getattr(exc, 'message', exc)}") from None
        return dict(zip(self._output_names, values))


def _session_callable(session: Any, feeds: list[str], fetches: list[str]) -> Callable[..., list[np.ndarray]]:
    """A function running the Session from ``feeds`` (arrays, in order) to ``fetches``.

    ``Session._make_callable_from_options`` prepares the pruned graph once and runs it straight
    from the arrays, where ``make_callable`` goes through ``Session.run`` and its feed and
    fetch handling on every call. It is the call Keras' graph-mode backend made for years, but
    private, so the public path stays as a fallback.
    """
    from tensorflow.core.protobuf import config_pb2

    prepare = getattr(session, "_make_callable_from_options", None)
    if prepare is None:
        return session.make_callable(fetches, feeds)
    return prepare(config_pb2.CallableOptions(feed=feeds, fetch=fetches))


def _input_spec(name: str, tensor_info: Any, tf: Any) -> InputSpec:
    """A SignatureDef input (a TensorInfo proto) as an InputSpec."""
    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size if d.size >= 0 else None for d in shape.dim)
    return InputSpec(name=name, dtype=tf.dtypes.as_dtype(tensor_info.dtype).name, shape=dims)


@contextlib.contextmanager
def _tensorflow_log_level(level: int):
    logger = logging.getLogger("tensorflow")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def load_saved_model(artifact_uri: str, resolve_path: Callable[[str], str]) -> LoadedModel:
    return LoadedModel(artifact_uri, resolve_path(artifact_uri))
