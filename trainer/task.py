"""Entry point of the trainer: ``python -m trainer.task --data-dir DIR --job-dir DIR``.

Vertex AI runs this module in mlrelay's training image (deploy/training_image). It honours Vertex's variables
(``AIP_MODEL_DIR`` for the SavedModel, ``AIP_TENSORBOARD_LOG_DIR``, ``CLOUD_ML_JOB_ID``) and
reads and writes ``gs://`` locations through Vertex's Cloud Storage FUSE mount ``/gcs/``.
Order of work: validate arguments and input, read eval rows and training statistics (a
malformed shard stops the run here), train, export the SavedModel, score the champion (the
SavedModel of ``--champion-model-dir``, through its serving signature) on the same eval rows,
write comparison.json (the candidate's and the champion's RMSE, overall and per slice, for the
release gate), training_report.json (learning curves, per-slice RMSE, a sample of predictions
beside the truth: :mod:`trainer.report`), then metrics.json last: it marks the run complete.
While it trains it rewrites progress.json after each evaluation, and, when
``AIP_TENSORBOARD_LOG_DIR`` is set, writes epoch summaries there (:mod:`trainer.monitoring`).
A champion that cannot be loaded or scored is recorded in comparison.json as an error and does
not fail the run.
Exit status 0 on success, 1 on bad input (nothing written), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Sequence

from trainer.inputs import DataSpec, TrainerInputError, discover_data, load_manifest
from trainer.paths import resolve_output_locations, to_local_path

log = logging.getLogger("trainer")

# Defaults sized for the project's usual run (~200,000 records, ~300,000 training rows) on a
# small CPU machine: 6 passes over 300k rows in a few minutes on 2 cores.
# Without --num-train-examples the trainer makes DEFAULT_PASSES passes over the training rows, at
# most MAX_DEFAULT_TRAIN_EXAMPLES examples: 200,000 generated records (312k training rows) get the
# full 1.8M; the 31.5k real rows (53k training rows) get 318k, where 1.8M overfits (eval RMSE 1.067
# against 1.057; scripts/evaluate_on_real_rows.py).
DEFAULT_PASSES = 6
MAX_DEFAULT_TRAIN_EXAMPLES = 1_800_000
DEFAULT_NUM_EVALS = 6
DEFAULT_BATCH_SIZE = 512
DEFAULT_LEARNING_RATE = 0.003
DEFAULT_SEED = 1
# Shards may come ordered (by key, by source file), so the whole training split is shuffled
# when it fits: a million cached rows take a few hundred MB.
MAX_SHUFFLE_BUFFER = 1_000_000


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _model_uri(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must be a gs:// URI or a local path, got an empty string")
    try:
        to_local_path(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line of the original babyweight trainer, plus ``--manifest``, ``--seed`` and
    ``--champion-model-dir``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.task", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="directory of the preprocess output (gs:// or local)")
    source.add_argument("--manifest", help="path of a preprocess _MANIFEST.json (gs:// or local)")
    parser.add_argument(
        "--job-dir",
        help="output directory: metrics.json, and the model unless AIP_MODEL_DIR is set "
        "(default: the parent of AIP_MODEL_DIR)",
    )
    parser.add_argument("--num-train-examples", type=_positive_int, default=None,
                        help="training examples to run through the model in total (default: "
                        f"{DEFAULT_PASSES} passes over the training rows, at most {MAX_DEFAULT_TRAIN_EXAMPLES})")
    parser.add_argument("--num-eval-examples", type=_non_negative_int, default=0,
                        help="eval rows to use, from the start of the eval shards; 0 = all")
    parser.add_argument("--num-evals", type=_positive_int, default=DEFAULT_NUM_EVALS,
                        help="how many times to evaluate during training (default %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--learning-rate", type=_positive_float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of weight initialisation and shuffling")
    parser.add_argument("--champion-model-dir", type=_model_uri, default=None, metavar="URI",
                        help="SavedModel directory (gs:// or local) of the model to compare with, "
                        "e.g. the deployed champion: scored on the same eval rows into "
                        "comparison.json; if it cannot be loaded or scored, comparison.json "
                        "records why and the run still succeeds")
    return parser


def default_train_examples(train_rows: int, batch_size: int, num_evals: int) -> int:
    """Training length when none is asked for: a few passes over the data, bounded, and at least
    one batch per evaluation."""
    return max(min(DEFAULT_PASSES * train_rows, MAX_DEFAULT_TRAIN_EXAMPLES), batch_size * num_evals)


def steps_per_evaluation(num_train_examples: int, batch_size: int, num_evals: int) -> int:
    """Training steps between two evaluations; at least one batch per evaluation is required."""
    steps = num_train_examples // (batch_size * num_evals)
    if steps < 1:
        raise ValueError(
            f"--num-train-examples {num_train_examples} is too small for {num_evals} evaluations "
            f"of batches of {batch_size}: it needs at least {batch_size * num_evals}"
        )
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; return the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return _train(args)
    except TrainerInputError as error:
        log.error("%s", error)
        print(f"trainer: error: {error}", file=sys.stderr)
        return 1


def _load_input(args: argparse.Namespace) -> DataSpec:
    return load_manifest(args.manifest) if args.manifest else discover_data(args.data_dir)


def _train(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        if args.num_train_examples is not None:
            steps_per_evaluation(args.num_train_examples, args.batch_size, args.num_evals)
        outputs = resolve_output_locations(args.job_dir, os.environ)
    except ValueError as error:
        raise TrainerInputError(str(error)) from None
    spec = _load_input(args)
    log.info("input: %d train shard(s), %d eval shard(s), manifest %s",
             len(spec.train_files), len(spec.eval_files), spec.manifest_path)

    # TensorFlow is imported only once the arguments and the input are known to be sound.
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from trainer import data, evaluation, report  # noqa: PLC0415
    from trainer.model import build_wide_and_deep, export_for_serving  # noqa: PLC0415
    from trainer.monitoring import TrainingProgress, tensorboard_callback  # noqa: PLC0415

    if int(keras.__version__.split(".")[0]) < 3:
        raise TrainerInputError(
            f"the trainer needs Keras 3 (TensorFlow 2.16 or newer); found Keras {keras.__version__}"
        )
    keras.utils.set_random_seed(args.seed)

    eval_features, eval_labels = data.read_split(spec.eval_files, args.num_eval_examples or None)
    stats = data.summarize_split(spec.train_files)
    log.info("train rows %d (label mean %.3f); eval rows %d", stats.rows, stats.label_mean, len(eval_labels))
    if args.num_train_examples is None:
        args.num_train_examples = default_train_examples(stats.rows, args.batch_size, args.num_evals)
    steps = steps_per_evaluation(args.num_train_examples, args.batch_size, args.num_evals)

    model = build_wide_and_deep(stats, args.learning_rate, decay_steps=steps * args.num_evals)
    train_ds = data.csv_dataset(
        spec.train_files, args.batch_size, shuffle=True, repeat=True, seed=args.seed,
        shuffle_buffer=min(stats.rows, MAX_SHUFFLE_BUFFER),
    )
    eval_ds = tf.data.Dataset.from_tensor_slices((eval_features, eval_labels)).batch(4096)
    examples_per_evaluation = steps * args.batch_size
    callbacks = []
    if outputs.tensorboard_dir:
        # Vertex AI sets AIP_TENSORBOARD_LOG_DIR when the job has a TensorBoard (the local cloud
        # sets it too); what is written there is streamed into Vertex AI TensorBoard:
        # https://cloud.google.com/vertex-ai/docs/experiments/tensorboard-training
        callbacks.append(tensorboard_callback(outputs.tensorboard_dir))
    callbacks.append(TrainingProgress(outputs.progress_path, examples_per_evaluation, args.num_evals))
    fit_started = time.monotonic()
    history = model.fit(
        train_ds.prefetch(tf.data.AUTOTUNE),
        epochs=args.num_evals,
        steps_per_epoch=steps,
        validation_data=eval_ds,
        callbacks=callbacks,
        shuffle=False,  # the dataset is shuffled already
        verbose=0,  # TrainingProgress logs one line per evaluation
    )
    train_time = time.monotonic() - fit_started

    predicted = model.predict(eval_ds.map(lambda features, label: features), verbose=0)
    eval_rmse = evaluation.rmse(predicted, eval_labels)
    export_for_serving(model, outputs.model_dir)
    log.info("exported the SavedModel to %s", outputs.model_dir)
    mean_baseline_rmse = evaluation.baseline_rmse(stats.label_mean, eval_labels)
    candidate = _write_comparison(outputs.comparison_path, args.champion_model_dir, eval_features,
                                  eval_labels, predicted, mean_baseline_rmse)
    training_report = report.training_report(
        history.history, examples_per_evaluation, candidate["slices"], eval_features, eval_labels, predicted
    )
    evaluation.write_json_atomically(outputs.report_path, training_report, allow_nan=False)
    log.info("training report in %s", outputs.report_path)

    examples_seen = examples_per_evaluation * args.num_evals
    metrics = {
        "eval_rmse": eval_rmse,
        "baseline_rmse": mean_baseline_rmse,
        "bayes_floor": evaluation.bayes_floor(spec.sample, eval_features),
        "best_possible_rmse": evaluation.best_possible_rmse(spec.sample, eval_features, eval_labels),
        "train_examples_seen": examples_seen,
        "train_rows": stats.rows,
        "eval_examples": int(len(eval_labels)),
        "train_time_s": round(train_time, 3),
        "train_examples_per_s": round(examples_seen / train_time, 1) if train_time > 0 else None,
        "history": [float(value) for value in history.history["val_rmse"]],
        "args": vars(args),
        "model_dir": outputs.model_dir,
        "manifest": spec.manifest_path,
        "run_id": spec.run_id,
        "job_id": os.environ.get("CLOUD_ML_JOB_ID"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    metrics["wall_time_s"] = round(time.monotonic() - started, 3)
    evaluation.write_json_atomically(outputs.metrics_path, metrics)
    log.info("eval RMSE %.4f (baseline %.4f, Bayes floor %s, best possible on these rows %s); metrics in %s",
             eval_rmse, metrics["baseline_rmse"], metrics["bayes_floor"], metrics["best_possible_rmse"],
             outputs.metrics_path)
    return 0


def _write_comparison(path: str, champion_uri: str | None, eval_features: dict, eval_labels,
                      candidate_predicted, mean_baseline_rmse: float) -> dict:
    """Score the candidate and the champion (if any) on the eval rows; write comparison.json.

    Returns the candidate's score (overall and per slice), which training_report.json repeats.
    """
    from trainer import comparison, evaluation  # noqa: PLC0415

    masks = comparison.slice_masks(eval_features)
    champion = None
    if champion_uri is not None:
        champion = _score_champion(champion_uri, eval_features, eval_labels, masks)
    candidate = comparison.score(candidate_predicted, eval_labels, masks)
    document = comparison.comparison(eval_labels, mean_baseline_rmse, candidate, champion)
    evaluation.write_json_atomically(path, document)
    log.info("comparison in %s", path)
    return candidate


def _score_champion(uri: str, eval_features: dict, eval_labels, masks: dict) -> dict:
    from trainer import comparison  # noqa: PLC0415
    from trainer.serving_check import ServingCheckError, predict_weights  # noqa: PLC0415

    try:
        predicted = predict_weights(to_local_path(uri).rstrip("/") or "/", eval_features)
        entry = comparison.champion_score(uri, predicted, eval_labels, masks)
    except Exception as error:  # a champion that cannot be scored must not lose the candidate
        # The serving check's own messages say what failed; anything else is named by its type.
        entry = comparison.champion_error(uri, str(error) if isinstance(error, ServingCheckError) else error)
        log.warning("champion %s not scored: %s", uri, entry["error"])
        return entry
    log.info("champion %s: eval RMSE %.4f", uri, entry["rmse"])
    return entry


if __name__ == "__main__":
    sys.exit(main())
