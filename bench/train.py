"""``train``: the trainer's default settings on 200,000 generated records, against its peers and its own seeds.

The generated records go through the real Beam pipeline (its manifest carries the sample's
description, so the trainer reports the Bayes floor of its eval rows), then the trainer runs as
Vertex AI would run it, in its own process. Its figures come from its metrics.json: examples
per second of the fit, and eval RMSE over the Bayes floor. Its peers are fitted on the same
train split and scored on the same eval rows, each timed (wall clock of the fit): a closed-form
linear fit on the model's one-hot buckets (bench.linear_baseline), and gradient-boosted trees
on the four raw inputs (bench.boosted_baseline, LightGBM: learning rate 0.05, up to 500 trees
of 31 leaves, early stopping on a tenth of the training split held out, never on eval).

Seeds: at full size the trainer is run with seeds 1..5 on the same preprocess output (seed 1 is
the default run above; ``run(settings, seeds=N)`` asks for another count, quick runs one), and
the eval RMSE of each, their spread (max - min) and standard deviation are reported in lb
(bench.seeds): the noise a release gate comparing two trainings has to tolerate.
"""
from __future__ import annotations

import json
import shutil

from bench import boosted_baseline, linear_baseline, seeds as seed_spread
from bench.processes import python_command, run_checked
from bench.report import format_table, per_second, ratio
from bench.settings import BenchSettings
from trainer.task import DEFAULT_SEED

NAME = "train"
FULL_RECORDS = 200_000
QUICK_RECORDS = 5_000
# --quick: a few batches, enough to export a model the serve benchmark can load.
QUICK_TRAINER_ARGS = ["--num-train-examples", "6000", "--num-evals", "1", "--batch-size", "250"]
TARGET_RATIO = 1.02
FULL_SEEDS = 5
QUICK_SEEDS = 1


def run(settings: BenchSettings, seeds: int | None = None) -> dict:
    """The benchmark; ``seeds`` is how many seeds the trainer runs with (default 5, or 1 under --quick)."""
    seed_count = seeds if seeds is not None else settings.pick(FULL_SEEDS, QUICK_SEEDS)
    if seed_count < 1:
        raise ValueError(f"seeds must be at least 1, got {seed_count}")
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
    boosted = boosted_baseline.fit(train_rows)
    boosted_rmse = linear_baseline.rmse(boosted.predict(eval_rows), eval_rows.label)

    floor = metrics.get("bayes_floor")
    seed_list = list(range(DEFAULT_SEED, DEFAULT_SEED + seed_count))
    seed_rmses, seed_walls = [metrics["eval_rmse"]], [trained.wall_s]
    for seed in seed_list[1:]:
        seed_dir = work / f"job-seed-{seed}"
        shutil.rmtree(seed_dir, ignore_errors=True)
        done = run_checked(python_command("trainer.task", "--manifest", str(manifest_path), "--job-dir", str(seed_dir),
                                          "--seed", str(seed), *trainer_args), timeout_s=1800,
                           what=f"the trainer with seed {seed}")
        seed_rmses.append(json.loads((seed_dir / "metrics.json").read_text())["eval_rmse"])
        seed_walls.append(done.wall_s)
    seed_figures = {**seed_spread.spread(seed_list, seed_rmses, floor),
                    "process_wall_s": [round(wall, 2) for wall in seed_walls]}
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
        "boosted": {
            "library": boosted_baseline.library(),
            "settings": boosted.settings,
            "trees": boosted.trees,
            "examples_per_s": per_second(len(train_rows), boosted.fit_s),
            "fit_s": round(boosted.fit_s, 3),
            "eval_rmse": round(boosted_rmse, 5),
            "rmse_over_floor": ratio(boosted_rmse, floor, 4),
        },
        "seeds": seed_figures,
        "target": f"trainer eval RMSE <= {TARGET_RATIO} x Bayes floor with the defaults",
        "target_met": (ratio(metrics["eval_rmse"], floor, 4) or float("inf")) <= TARGET_RATIO,
    }


def _scores(figures: dict) -> list[str]:
    """Eval RMSE and RMSE / floor to the digits that tell the models apart (they differ in the third)."""
    ratio_text = "-" if figures["rmse_over_floor"] is None else f"{figures['rmse_over_floor']:.4f}"
    return [f"{figures['eval_rmse']:.5f}", ratio_text]


def table(result: dict) -> str:
    t, lin, gbt, sd = result["trainer"], result["linear"], result["boosted"], result["seeds"]
    std_text = "n/a (one seed)" if sd["std_lb"] is None else f"{sd['std_lb']} lb"
    return format_table(
        f"train: {result['records']:,} generated records -> {result['train_rows']:,} train / "
        f"{result['eval_rows']:,} eval rows; Bayes floor {result['bayes_floor']:.4f} lb",
        ["model", "examples/s", "fit s (wall)", "eval RMSE", "RMSE / floor"],
        [[f"wide & deep, trainer ({t['settings']})", t["examples_per_s"], t["fit_s"], *_scores(t)],
         ["linear least squares (one-hot, buckets)", lin["examples_per_s"], lin["fit_s"], *_scores(lin)],
         [f"boosted trees ({gbt['library']}, {gbt['trees']} trees)", gbt["examples_per_s"], gbt["fit_s"],
          *_scores(gbt)]],
        [f"trainer: {t['examples_seen']:,} examples seen; process {t['process_wall_s']} s wall, {t['cpu_s']} s CPU; "
         f"predict-the-mean RMSE {t['baseline_rmse']}",
         f"seeds {sd['seeds'][0]}..{sd['seeds'][-1]}: eval RMSE {', '.join(f'{v:.5f}' for v in sd['eval_rmse'])}; "
         f"spread {sd['spread_lb']} lb, std {std_text}",
         f"target RMSE / floor <= {TARGET_RATIO}: {'met' if result['target_met'] else 'NOT met'}"],
    )
