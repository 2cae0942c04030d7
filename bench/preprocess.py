"""``preprocess``: input rows per second of the Beam pipeline (DirectRunner) against plain pyarrow.

Both run on the same generated Parquet file (1,000,000 rows; ``--quick`` 20,000), each in a
fresh process, one after the other. The figure is the rate of the transform itself (after the
imports); the process's wall time and CPU seconds (user + sys, what Dataflow bills) include
the imports. The two outputs must hold the same rows, compared per split as multisets.

The CPU target compares the whole processes (imports, start-up and exit included), as a bill
for one small job would; ``import_cpu_s`` and ``transform_cpu_s_per_million_rows`` split that
figure into the fixed cost of starting and the cost of the rows. Each implementation is also run
on a sample MARGINAL_FACTOR times larger (whose first rows are the smaller sample's: the
generator's blocks are seeded by their number), outputs compared again; the difference of the
two processes' CPU seconds over the difference of their rows is the marginal cost of a million
rows, with every fixed cost (imports, building the graph, starting the stages, exit) cancelled:
what a Dataflow worker, which starts once and then reads many millions of rows, pays per row.
The four processes run REPEATS times, alternating (one under --quick), and each figure is taken
from the run of median CPU: on a shared machine one 8-second process varies by half a second.
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
MARGINAL_FACTOR = 3
REPEATS = 3
IMPLEMENTATIONS = {"beam": "Beam, DirectRunner", "arrow": "pyarrow, no Beam"}
CPU_TARGET = 1.2


def _run_one(implementation: str, source: str, out, rows: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = run_checked(python_command("bench.preprocess_job", implementation, "--source", source, "--out", str(out)),
                       timeout_s=1800, what=f"preprocessing {rows:,} rows with {implementation}")
    report = done.json_line()
    return {
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


def _median(runs: list[dict]) -> dict:
    """The run of median CPU seconds (the lower middle one of an even count), with every CPU figure seen."""
    ordered = sorted(runs, key=lambda run: run["cpu_s"])
    return {**ordered[(len(ordered) - 1) // 2], "cpu_s_runs": [run["cpu_s"] for run in runs]}


def run(settings: BenchSettings) -> dict:
    from natality_sample import PARQUET_FILE, write_sample

    rows = settings.pick(FULL_ROWS, QUICK_ROWS)
    large_rows = rows * MARGINAL_FACTOR
    work = settings.scratch(NAME)
    sources = {}
    for size, count in (("", rows), ("-large", large_rows)):
        write_sample(work / f"sample{size}", rows=count, seed=11)
        sources[size] = str(work / f"sample{size}" / PARQUET_FILE)
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(settings.pick(REPEATS, 1)):
        for size, count in (("", rows), ("-large", large_rows)):
            for implementation in IMPLEMENTATIONS:
                runs.setdefault((implementation, size), []).append(
                    _run_one(implementation, sources[size], work / f"out{size}-{implementation}", count))
    results = {implementation: _median(runs[implementation, ""]) for implementation in IMPLEMENTATIONS}
    large = {implementation: _median(runs[implementation, "-large"]) for implementation in IMPLEMENTATIONS}
    equal = same_rows(work / "out-beam", work / "out-arrow")
    equal_large = same_rows(work / "out-large-beam", work / "out-large-arrow")
    for implementation in IMPLEMENTATIONS:
        extra_cpu = large[implementation]["cpu_s"] - results[implementation]["cpu_s"]
        results[implementation]["large"] = {"rows": large_rows, "cpu_s": large[implementation]["cpu_s"],
                                            "cpu_s_runs": large[implementation]["cpu_s_runs"],
                                            "process_wall_s": large[implementation]["process_wall_s"]}
        results[implementation]["marginal_cpu_s_per_million_rows"] = round(extra_cpu * 1e6 / (large_rows - rows), 3)
        results[implementation]["fixed_cpu_s"] = round(
            results[implementation]["cpu_s"] - extra_cpu * rows / (large_rows - rows), 3)
    cpu_ratio = ratio(results["beam"]["cpu_s_per_million_rows"], results["arrow"]["cpu_s_per_million_rows"])
    marginal_ratio = ratio(results["beam"]["marginal_cpu_s_per_million_rows"],
                           results["arrow"]["marginal_cpu_s_per_million_rows"])
    return {
        "rows": rows,
        "beam": results["beam"],
        "baseline": results["arrow"],
        "ratio": ratio(results["beam"]["rows_per_s"], results["arrow"]["rows_per_s"]),
        "process_ratio": ratio(results["beam"]["process_rows_per_s"], results["arrow"]["process_rows_per_s"]),
        "outputs_equal": all(equal.values()) and all(equal_large.values()),
        "output_rows": 2 * (results["beam"]["records"]["train"] + results["beam"]["records"]["eval"]),
        "target": "Beam rate >= 50% of the pyarrow rate",
        "target_met": (ratio(results["beam"]["rows_per_s"], results["arrow"]["rows_per_s"]) or 0) >= 0.5,
        "cpu_ratio": cpu_ratio,
        "transform_cpu_ratio": ratio(results["beam"]["transform_cpu_s_per_million_rows"],
                                     results["arrow"]["transform_cpu_s_per_million_rows"]),
        "marginal_cpu_ratio": marginal_ratio,
        "cpu_target": f"Beam CPU s per million rows <= {CPU_TARGET} x pyarrow's",
        "cpu_target_met": cpu_ratio is not None and cpu_ratio <= CPU_TARGET,
        "marginal_cpu_target_met": marginal_ratio is not None and marginal_ratio <= CPU_TARGET,
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
         f"marginal CPU s per million rows, between {result['rows']:,} and {result['beam']['large']['rows']:,} rows "
         f"(fixed costs cancelled): Beam {result['beam']['marginal_cpu_s_per_million_rows']}, pyarrow "
         f"{result['baseline']['marginal_cpu_s_per_million_rows']}, ratio {result['marginal_cpu_ratio']}; "
         f"fixed CPU s Beam {result['beam']['fixed_cpu_s']}, pyarrow {result['baseline']['fixed_cpu_s']}; "
         f"target <= {CPU_TARGET}: {'met' if result['marginal_cpu_target_met'] else 'NOT met'}",
         f"same {result['output_rows']:,} output rows in both (multisets per split), and at the larger size: "
         f"{'yes' if result['outputs_equal'] else 'NO'}"],
    )
