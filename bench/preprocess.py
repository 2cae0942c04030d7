"""``preprocess``: input rows per second of the Beam pipeline (DirectRunner) against plain pyarrow.

Both run on the same generated Parquet file (1,000,000 rows; ``--quick`` 20,000), each in a
fresh process, one after the other. The figure is the rate of the transform itself (after the
imports); the process's wall time and CPU seconds (user + sys, what Dataflow bills) include
the imports. The two outputs must hold the same rows, compared per split as multisets.

The CPU target compares the whole processes (imports, start-up and exit included), as a bill
would; ``import_cpu_s`` and ``transform_cpu_s_per_million_rows`` split that figure into the
fixed cost of starting and the cost of the rows.
"""
from __future__ import annotations

import shutil

from bench.preprocess_baseline import same_rows
from bench.processes import python_command, run_checked
from bench.report import format_table, per_second, ratio
from bench.settings import BenchSettings

NAME = "preprocess"
FULL_ROWS = 1_000_000
QUICK_ROWS = 20_000
IMPLEMENTATIONS = {"beam": "Beam, DirectRunner", "arrow": "pyarrow, no Beam"}
CPU_TARGET = 1.2


def run(settings: BenchSettings) -> dict:
    from natality_sample import PARQUET_FILE, write_sample

    rows = settings.pick(FULL_ROWS, QUICK_ROWS)
    work = settings.scratch(NAME)
    sample_dir = work / "sample"
    write_sample(sample_dir, rows=rows, seed=11)
    source = str(sample_dir / PARQUET_FILE)
    results = {}
    for implementation in IMPLEMENTATIONS:
        out = work / f"out-{implementation}"
        shutil.rmtree(out, ignore_errors=True)
        done = run_checked(python_command("bench.preprocess_job", implementation, "--source", source, "--out", str(out)),
                           timeout_s=900, what=f"preprocessing with {implementation}")
        report = done.json_line()
        results[implementation] = {
            "rows_per_s": per_second(rows, report["transform_s"]),
            "transform_s": report["transform_s"],
            "import_s": report["import_s"],
            "import_cpu_s": report["import_cpu_s"],
            "process_wall_s": round(done.wall_s, 3),
            "process_rows_per_s": per_second(rows, done.wall_s),
            "cpu_s": round(done.cpu_s, 3),
            "cpu_s_per_million_rows": round(done.cpu_s * 1e6 / rows, 3),
            "transform_cpu_s_per_million_rows": round(report["transform_cpu_s"] * 1e6 / rows, 3),
            "records": {"train": report["train_records"], "eval": report["eval_records"]},
            "rows_valid": report["rows_valid"],
        }
    equal = same_rows(work / "out-beam", work / "out-arrow")
    cpu_ratio = ratio(results["beam"]["cpu_s_per_million_rows"], results["arrow"]["cpu_s_per_million_rows"])
    return {
        "rows": rows,
        "beam": results["beam"],
        "baseline": results["arrow"],
        "ratio": ratio(results["beam"]["rows_per_s"], results["arrow"]["rows_per_s"]),
        "process_ratio": ratio(results["beam"]["process_rows_per_s"], results["arrow"]["process_rows_per_s"]),
        "outputs_equal": all(equal.values()),
        "output_rows": 2 * (results["beam"]["records"]["train"] + results["beam"]["records"]["eval"]),
        "target": "Beam rate >= 50% of the pyarrow rate",
        "target_met": (ratio(results["beam"]["rows_per_s"], results["arrow"]["rows_per_s"]) or 0) >= 0.5,
        "cpu_ratio": cpu_ratio,
        "transform_cpu_ratio": ratio(results["beam"]["transform_cpu_s_per_million_rows"],
                                     results["arrow"]["transform_cpu_s_per_million_rows"]),
        "cpu_target": f"Beam CPU s per million rows <= {CPU_TARGET} x pyarrow's",
        "cpu_target_met": cpu_ratio is not None and cpu_ratio <= CPU_TARGET,
    }


def table(result: dict) -> str:
    rows = []
    for key, label in (("beam", IMPLEMENTATIONS["beam"]), ("baseline", IMPLEMENTATIONS["arrow"])):
        r = result[key]
        rows.append([label, r["rows_per_s"], r["transform_s"], r["process_wall_s"], r["cpu_s"],
                     r["cpu_s_per_million_rows"]])
    return format_table(
        f"preprocess: {result['rows']:,} generated rows, Parquet in, train/eval CSV out",
        ["implementation", "rows/s", "transform s", "process s", "CPU s", "CPU s / M rows"],
        rows,
        [f"Beam / pyarrow rate: {result['ratio']} (whole process, imports included: {result['process_ratio']}); "
         f"target >= 0.5: {'met' if result['target_met'] else 'NOT met'}",
         f"Beam / pyarrow CPU s per million rows: {result['cpu_ratio']} (rows only, imports and exit "
         f"left out: {result['transform_cpu_ratio']}); target <= {CPU_TARGET}: "
         f"{'met' if result['cpu_target_met'] else 'NOT met'}",
         f"same {result['output_rows']:,} output rows in both (multisets per split): "
         f"{'yes' if result['outputs_equal'] else 'NO'}"],
    )
