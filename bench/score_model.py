"""Score an exported model on preprocess shards, in a fresh process, for the ``train`` benchmark.

``python -m bench.score_model MODEL_DIR --out PREDICTIONS.npy SHARD...`` reads the shards as the
trainer reads its eval split (trainer.data.read_split), predicts through the SavedModel's
``serving_default`` signature as the serving container and the gate do
(trainer.serving_check.predict_weights), saves the predictions in row order and prints one JSON
line with the row count. A child process keeps TensorFlow out of the benchmark's own process.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.score_model")
    parser.add_argument("model_dir")
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--out", required=True, help="where to save the predictions (.npy)")
    args = parser.parse_args(argv)
    from trainer.data import read_split
    from trainer.serving_check import predict_weights

    features, labels = read_split(args.shards)
    predicted = np.asarray(predict_weights(args.model_dir, features), dtype=np.float64).reshape(-1)
    np.save(args.out, predicted)
    print(json.dumps({"rows": int(labels.size), "label_sum": float(labels.sum())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
