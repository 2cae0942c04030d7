"""``train``: the trainer's default settings on 200,000 generated records, against least squares.

The generated records go through the real Beam pipeline (its manifest carries the sample's
description, so the trainer reports the Bayes floor of its eval rows), then the trainer runs as
Vertex AI would run it, in its own process. Its figures come from its metrics.json: examples
per second of the fit, and eval RMSE over the Bayes floor. The baseline is a closed-form linear
fit (bench.linear_baseline) on the same rows, timed and scored on the same eval rows.
"""
from __future__ import annotations

import json
import shutil

from bench import linear_baseline
from bench.processes import python_command, run_checked
from bench.report import format_table, per_second, ratio
from bench.settings import BenchSettings

NAME = "train"
FULL_RECORDS = 200_000
QUICK_RECORDS = 5_000
# --quick: a few batches, enough to export a model the serve benchmark can load.
QUICK_TRAINER_ARGS = ["--num-train-examples", "6000", "--num-evals", "1", "--batch-size", "250"]
TARGET_RATIO = 1.02


def run(settings: BenchSettings) -> dict:
    from natality_sample import PARQUET_FILE, write_sample

    records = settings.pick(FULL_RECORDS, QUICK_RECORDS)
    work = settings.scratch(NAME)
    write_sample(work / "sample", rows=records, seed=13)
    data_dir = work / "preprocess"
    shutil.rmtree(data_dir, ignore_errors=True)
    run_checked(python_command("beam_pipeline.run", "--source", str(work / "sample" / PARQUET_FILE),
                               "--out", str(data_dir)), timeout_s=600, what="preprocessing the training data")
    manifest_path = data_dir / "_MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    job_dir = work / "job"
    shutil.rmtree(job_dir, ignore_errors=True)
    trainer_args = [] if not settings.quick else QUICK_TRAINER_ARGS
    trained = run_checked(python_command("trainer.task", "--manifest", str(manifest_path), "--job-dir", str(job_dir),
                                         *trainer_args), timeout_s=1800, what="the trainer")
    metrics = json.loads((job_dir / "metrics.json").read_text())
    settings.artifacts["model_dir"] = str(job_dir / "model")

    shards = {split: [str(data_dir / name) for name in manifest["splits"][split]["shards"]] for split in ("train", "eval")}
    train_rows = linear_baseline.read_split(shards["train"])
    eval_rows = linear_baseline.read_split(shards["eval"])
    linear = linear_baseline.fit(train_rows)
    linear_rmse = linear_baseline.rmse(linear.predict(eval_rows), eval_rows.label)

    floor = metrics.get("bayes_floor")
    return {
        "records": records,
        "train_rows": metrics["train_rows"],
        "eval_rows": metrics["eval_examples"],
        "bayes_floor": floor,
        "trainer": {
            "settings": "defaults" if not settings.quick else " ".join(QUICK_TRAINER_ARGS),
            "examples_per_s": metrics["train_examples_per_s"],
            "examples_seen": metrics["train_examples_seen"],
            "fit_s": metrics["train_time_s"],
            "process_wall_s": round(trained.wall_s, 2),
            "cpu_s": round(trained.cpu_s, 2),
            "eval_rmse": round(metrics["eval_rmse"], 5),
            "rmse_over_floor": ratio(metrics["eval_rmse"], floor, 4),
            "baseline_rmse": round(metrics["baseline_rmse"], 5),
        },
        "linear": {
            "examples_per_s": per_second(len(train_rows), linear.fit_s),
            "fit_s": round(linear.fit_s, 4),
            "eval_rmse": round(linear_rmse, 5),
            "rmse_over_floor": ratio(linear_rmse, floor, 4),
        },
        "target": f"trainer eval RMSE <= {TARGET_RATIO} x Bayes floor with the defaults",
        "target_met": (ratio(metrics["eval_rmse"], floor, 4) or float("inf")) <= TARGET_RATIO,
    }


def table(result: dict) -> str:
    t, lin = result["trainer"], result["linear"]
    return format_table(
        f"train: {result['records']:,} generated records -> {result['train_rows']:,} train / "
        f"{result['eval_rows']:,} eval rows; Bayes floor {result['bayes_floor']:.4f} lb",
        ["model", "examples/s", "fit s", "eval RMSE", "RMSE / floor"],
        [[f"wide & deep, trainer ({t['settings']})", t["examples_per_s"], t["fit_s"], t["eval_rmse"],
          t["rmse_over_floor"]],
         ["linear least squares (one-hot, buckets)", lin["examples_per_s"], lin["fit_s"], lin["eval_rmse"],
          lin["rmse_over_floor"]]],
        [f"trainer: {t['examples_seen']:,} examples seen; process {t['process_wall_s']} s wall, {t['cpu_s']} s CPU; "
         f"predict-the-mean RMSE {t['baseline_rmse']}",
         f"target RMSE / floor <= {TARGET_RATIO}: {'met' if result['target_met'] else 'NOT met'}"],
    )
