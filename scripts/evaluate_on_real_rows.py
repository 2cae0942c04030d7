"""Train and evaluate the chain's model on the real natality rows, next to a linear fit.

    .venv/bin/python scripts/evaluate_on_real_rows.py [--rows ../shared/data/natality_real_rows.csv]
                                                      [--out DIR] [-- TRAINER ARGS...]

The real rows carry FARM_FINGERPRINT(year, month) rather than the year and month; those are
recovered by enumeration (natality_sample.fit.load_real_rows), so the rows go through the very
preprocessing pipeline (filters, hashmonth split, two rows per record) and the very trainer the
chain runs. The linear baseline is least squares on the same preprocessed rows (one-hot sex and
plurality, age and gestation with their squares), fitted on train and scored on eval, plus the
in-sample linear fit on the raw records that the data's README quotes (1.067 lb).

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, default=DEFAULT_ROWS)
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("trainer_args", nargs="*", help="extra trainer arguments, after --")
    args = parser.parse_args(argv)
    if not args.rows.exists():
        print(f"no real rows at {args.rows}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="mlrelay-real-"))
    records = write_input(args.rows, out / "data")
    python = sys.executable
    started = time.perf_counter()
    subprocess.run([python, "-m", "beam_pipeline.run", "--source", str(out / "data" / "natality.parquet"),
                    "--out", str(out / "preprocess")], check=True, cwd=REPO)
    preprocess_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([python, "-m", "trainer.task", "--manifest", str(out / "preprocess" / "_MANIFEST.json"),
                    "--job-dir", str(out / "train"), *args.trainer_args], check=True, cwd=REPO)
    train_s = time.perf_counter() - started
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    summary = {
        "records": records,
        "model_eval_rmse": metrics["eval_rmse"],
        "predict_mean_rmse": metrics["baseline_rmse"],
        "linear_same_split": linear_fit(out / "preprocess"),
        "linear_in_sample_all_records": in_sample_ols(args.rows),
        "preprocess_s": round(preprocess_s, 1),
        "train_s": round(train_s, 1),
        "work_dir": str(out),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
