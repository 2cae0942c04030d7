"""mlrelay's benchmark suite: each figure measured side by side with its baseline.

``mlrelay bench [NAME ...] [--json] [--quick]`` or ``python -m bench`` runs them; see
``bench.runner`` for the options and each module for what it measures.
"""
from bench.runner import BENCHMARKS, add_arguments, main, run_benchmarks, run_from_args

__all__ = ["BENCHMARKS", "add_arguments", "main", "run_benchmarks", "run_from_args"]
