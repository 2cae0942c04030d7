"""The Keras callbacks that report a run while it trains: progress.json, a log line, TensorBoard.

Each is cheap by design: the trainer runs one Keras epoch per evaluation, and the callbacks act at
the end of an epoch only (never per batch), with one small file write each.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from trainer import report
from trainer.evaluation import write_json_atomically

log = logging.getLogger("trainer")


class TrainingProgress(keras.callbacks.Callback):
    """Rewrites progress.json when training starts and after each evaluation, and logs one line
    per evaluation (the job's log shows progress without Keras's per-epoch progress bar).

    The file is only for watching: a write that fails (a hiccup of the Cloud Storage FUSE mount)
    is logged and the next evaluation's write replaces it, rather than failing the training.
    """

    def __init__(self, path: str, examples_per_evaluation: int, evaluations_total: int) -> None:
        super().__init__()
        self.path = path
        self.examples_per_evaluation = int(examples_per_evaluation)
        self.evaluations_total = int(evaluations_total)

    def _write(self, evaluations_done: int, last_eval_rmse: float | None) -> None:
        document = report.progress(
            examples_seen=evaluations_done * self.examples_per_evaluation,
            examples_total=self.evaluations_total * self.examples_per_evaluation,
            evaluations_done=evaluations_done,
            evaluations_total=self.evaluations_total,
            last_eval_rmse=last_eval_rmse,
        )
        try:
            write_json_atomically(self.path, document, allow_nan=False)
        except OSError as error:
            log.warning("progress not written to %s: %s", self.path, error)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._write(0, None)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        done = epoch + 1
        self._write(done, logs.get("val_rmse"))
        log.info("evaluation %d/%d: %d of %d examples; train loss %.4f, eval loss %.4f, eval RMSE %.4f",
                 done, self.evaluations_total, done * self.examples_per_evaluation,
                 self.evaluations_total * self.examples_per_evaluation,
                 logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_rmse", float("nan")))


class EpochScalars(keras.callbacks.Callback):
    """The epoch scalars of Keras's TensorBoard callback (``epoch_<metric>`` under ``train/`` and
    ``validation/``, step = epoch), written with TensorFlow's own ``tf.summary.write``.

    Since TensorFlow 2.21 the ``tensorflow`` wheels no longer depend on ``tensorboard``
    (tensorflow/tensorflow#110709), and without it ``tf.summary.scalar``, which Keras's callback
    calls, raises; the training image installs only the trainer's pins. ``tf.summary.write`` with the scalars plugin's metadata is what
    ``tf.summary.scalar`` itself does, so TensorBoard and Vertex AI TensorBoard read these events
    as scalars all the same.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict[str, Any] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._writers = {
            name: tf.summary.create_file_writer(os.path.join(self.log_dir, name))
            for name in ("train", "validation")
        }

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )
        for name, value in (logs or {}).items():
            writer = self._writers["validation" if name.startswith("val_") else "train"]
            tag = "epoch_" + name.removeprefix("val_")
            with writer.as_default():
                tf.summary.write(tag, tf.constant(float(value), dtype=tf.float32), step=epoch,
                                 metadata=metadata)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package, which Keras's TensorBoard callback needs, is importable."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_callback(log_dir: str) -> keras.callbacks.Callback:
    """Epoch summaries into ``log_dir``, the job's ``AIP_TENSORBOARD_LOG_DIR``.

    Vertex AI streams what a job writes there into the experiment's TensorBoard, and asks for
    Keras's TensorBoard callback with that directory as its ``log_dir``:
    https://cloud.google.com/vertex-ai/docs/experiments/tensorboard-training
    Epoch summaries only (no per-batch scalars, histograms, graph or profile), so the cost is a few
    scalars per evaluation. Where the ``tensorboard`` package is missing, :class:`EpochScalars`
    writes the same scalars.
    """
    if tensorboard_installed():
        return keras.callbacks.TensorBoard(
            log_dir=log_dir, update_freq="epoch", histogram_freq=0, write_graph=False, profile_batch=0,
        )
    return EpochScalars(log_dir)
