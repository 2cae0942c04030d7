"""Train and evaluate the chain's model on the real natality rows, next to its peers.

    .venv/bin/python scripts/evaluate_on_real_rows.py [--rows ../shared/data/natality_real_rows.csv]
                                                      [--seeds N] [--out DIR] [-- TRAINER ARGS...]

The real rows carry FARM_FINGERPRINT(year, month) rather than the year and month; those are
recovered by enumeration (natality_sample.fit.load_real_rows), so the rows go through the very
preprocessing pipeline (filters, hashmonth split, two rows per record) and the very trainer the
chain runs, with its defaults, once per seed (1..N, default 5: the eval split is small, about
10,000 rows, so one seed's figure alone says little). Its peers are fitted on the same train
split and scored on the same eval rows:
- least squares on one-hot sex and plurality with age and gestation and their squares (the
  figure this script has always printed);
- least squares on the model's one-hot buckets, and LightGBM, as the ``train`` benchmark fits
  them (bench.linear_baseline, bench.boosted_baseline);
plus the in-sample linear fit on the raw records that the data's README quotes (1.067 lb).

This is for development only: the product never needs the real rows.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file: the repository's packages (bench, trainer) on the path
DEFAULT_ROWS = REPO.parent / "shared" / "data" / "natality_real_rows.csv"
COLUMNS = ["weight_pounds", "is_male", "mother_age", "plurality", "gestation_weeks", "key"]


def write_input(rows_csv: Path, out_dir: Path) -> int:
    from natality_sample.fit import load_real_rows

    frame = load_real_rows(rows_csv)
    table = pa.table({
        "year": pa.array(frame["year"], pa.int64()),
        "month": pa.array(frame["month"], pa.int64()),
        "weight_pounds": pa.array(frame["weight_pounds"], pa.float64()),
        "is_male": pa.array(frame["is_male"].astype(str) == "True", pa.bool_()),
        "mother_age": pa.array(frame["mother_age"], pa.int64()),
        "plurality": pa.array(frame["p"], pa.int64()),
        "gestation_weeks": pa.array(frame["g"], pa.int64()),
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "natality.parquet")
    return table.num_rows


def design(frame: pd.DataFrame, squares: bool = True) -> np.ndarray:
    age, weeks = frame["mother_age"].to_numpy(float), frame["gestation_weeks"].to_numpy(float)
    parts = [np.ones(len(frame)), age, weeks] + ([age ** 2, weeks ** 2] if squares else [])
    for column in ("is_male", "plurality"):
        dummies = pd.get_dummies(frame[column].astype("category"), drop_first=True, dtype=float)
        parts.extend(dummies.to_numpy().T)
    return np.column_stack(parts)


def read_split(pre_dir: Path, split: str) -> pd.DataFrame:
    files = sorted(pre_dir.glob(f"{split}.csv-*"))
    return pd.concat([pd.read_csv(f, names=COLUMNS) for f in files], ignore_index=True)


def linear_fit(pre_dir: Path) -> dict:
    train, evals = read_split(pre_dir, "train"), read_split(pre_dir, "eval")
    for frame in (train, evals):
        for column in ("is_male", "plurality"):
            frame[column] = pd.Categorical(frame[column], categories=sorted(set(train[column]) | set(evals[column])))
    started = time.perf_counter()
    coef, *_ = np.linalg.lstsq(design(train), train["weight_pounds"].to_numpy(), rcond=None)
    seconds = time.perf_counter() - started
    residual = evals["weight_pounds"].to_numpy() - design(evals) @ coef
    return {"eval_rmse": float(np.sqrt(np.mean(residual ** 2))), "fit_s": round(seconds, 3),
            "train_rows": len(train), "eval_rows": len(evals)}


def in_sample_ols(rows_csv: Path) -> float:
    """The README's figure: OLS on the four features over all real records, in sample."""
    frame = pd.read_csv(rows_csv)
    frame["is_male"] = frame["is_male"].astype(str)
    x = design(frame.assign(plurality=frame["plurality"].astype(str)), squares=False)
    coef, *_ = np.linalg.lstsq(x, frame["weight_pounds"].to_numpy(), rcond=None)
    return float(np.sqrt(np.mean((frame["weight_pounds"].to_numpy() - x @ coef) ** 2)))


def bench_peers(pre_dir: Path) -> dict:
    """The train benchmark's two peers on this split: one-hot least squares and LightGBM."""
    from bench import boosted_baseline, linear_baseline

    train = linear_baseline.read_split([str(f) for f in sorted(pre_dir.glob("train.csv-*"))])
    evals = linear_baseline.read_split([str(f) for f in sorted(pre_dir.glob("eval.csv-*"))])
    linear = linear_baseline.fit(train)
    boosted = boosted_baseline.fit(train)
    return {
        "linear_one_hot_buckets": {"eval_rmse": linear_baseline.rmse(linear.predict(evals), evals.label),
                                   "fit_s": round(linear.fit_s, 3)},
        "boosted_trees": {"library": boosted_baseline.library(), "trees": boosted.trees,
                          "eval_rmse": linear_baseline.rmse(boosted.predict(evals), evals.label),
                          "fit_s": round(boosted.fit_s, 3)},
    }


def train_seeds(out: Path, seeds: int, trainer_args: list[str]) -> list[dict]:
    """metrics.json of one training per seed on the same preprocess output, with its wall time."""
    runs = []
    for seed in range(1, seeds + 1):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trainer.task", "--manifest", str(out / "preprocess" / "_MANIFEST.json"),
                        "--job-dir", str(out / f"train-seed-{seed}"), "--seed", str(seed), *trainer_args],
                       check=True, cwd=REPO)
        metrics = json.loads((out / f"train-seed-{seed}" / "metrics.json").read_text())
        runs.append({**metrics, "wall_s": round(time.perf_counter() - started, 1)})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, default=DEFAULT_ROWS)
    parser.add_argument("--seeds", type=int, default=5, help="trainings, with seeds 1..N (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("trainer_args", nargs="*", help="extra trainer arguments, after --")
    args = parser.parse_args(argv)
    if not args.rows.exists():
        print(f"no real rows at {args.rows}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print(f"--seeds must be at least 1, got {args.seeds}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="mlrelay-real-"))
    records = write_input(args.rows, out / "data")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_pipeline.run", "--source", str(out / "data" / "natality.parquet"),
                    "--out", str(out / "preprocess")], check=True, cwd=REPO)
    preprocess_s = time.perf_counter() - started
    runs = train_seeds(out, args.seeds, args.trainer_args)
    rmses = [run["eval_rmse"] for run in runs]
    summary = {
        "records": records,
        "model_eval_rmse": rmses[0],
        "model_eval_rmse_per_seed": [round(value, 5) for value in rmses],
        "model_eval_rmse_mean": round(float(np.mean(rmses)), 5),
        "model_seed_spread": round(max(rmses) - min(rmses), 5),
        "predict_mean_rmse": runs[0]["baseline_rmse"],
        "linear_same_split": linear_fit(out / "preprocess"),
        **bench_peers(out / "preprocess"),
        "linear_in_sample_all_records": in_sample_ols(args.rows),
        "preprocess_s": round(preprocess_s, 1),
        "train_s_per_seed": [run["wall_s"] for run in runs],
        "work_dir": str(out),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
