"""One preprocessing run in a fresh process, for the ``preprocess`` benchmark.

``python -m bench.preprocess_job beam|arrow --source FILE --out DIR`` prints one JSON line:
the seconds spent importing and transforming, the CPU seconds of each (``import_cpu_s``
counts from the interpreter's start), and the counts. Run as a child so that each
implementation's CPU time (``os.wait4``) and imports are its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import time


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_job")
    parser.add_argument("implementation", choices=["beam", "arrow"])
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    if args.implementation == "beam":
        from beam_pipeline.options import PreprocessConfig
        from beam_pipeline.run import run_pipeline
    else:
        from bench.preprocess_baseline import preprocess
    imported = time.perf_counter()
    cpu_before = _cpu_s()
    if args.implementation == "beam":
        document = run_pipeline(PreprocessConfig(source=args.source, out=args.out))
        counts = {"rows_read": document["input"]["rows_read"], "rows_valid": document["input"]["rows_valid"],
                  "train_records": document["splits"]["train"]["records"],
                  "eval_records": document["splits"]["eval"]["records"]}
    else:
        counts = preprocess(args.source, args.out)
    finished = time.perf_counter()
    print(json.dumps({"import_s": round(imported - began, 4), "import_cpu_s": round(cpu_before, 4),
                      "transform_s": round(finished - imported, 4),
                      "transform_cpu_s": round(_cpu_s() - cpu_before, 4), **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
