"""A local stand-in for the natality table: realistic rows with a known Bayes floor.

A newcomer has no BigQuery; ``write_sample`` writes the table's relevant columns
to a directory that the preprocessing pipeline reads directly. The rows follow a
generative model calibrated on real natality records (see ``calibration``), and
because that model is known, ``bayes_floor`` gives the lowest RMSE any model
trained on the data could reach.
"""

import importlib

# Names are loaded on first use: the trainer needs only the numpy-only Bayes floor on Vertex AI,
# whose images need not have pyarrow, which the generator and writer use.
_HOMES = {
    "bayes": ("bayes_floor", "conditional_mean", "conditional_variance", "posterior_moments"),
    "generate": ("BIGQUERY_COLUMNS", "ROW_GROUP_ROWS", "SCHEMA", "iter_blocks", "sample"),
    "labels": ("MULTIPLE_LABEL", "PLURALITY_LABELS", "UNKNOWN_SEX", "masked_plurality_label",
               "plurality_label", "sex_label"),
    "writer": ("CSV_FILE", "GENERATOR", "PARQUET_FILE", "SIDECAR_FILE", "VERSION",
               "describes_this_generator", "write_sample"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'natality_sample' has no attribute {name!r}")
    return getattr(importlib.import_module(f"natality_sample.{module}"), name)


__all__ = [
    "BIGQUERY_COLUMNS", "CSV_FILE", "GENERATOR", "MULTIPLE_LABEL", "PARQUET_FILE", "PLURALITY_LABELS",
    "ROW_GROUP_ROWS", "SCHEMA", "SIDECAR_FILE", "UNKNOWN_SEX", "VERSION", "bayes_floor",
    "conditional_mean", "conditional_variance", "describes_this_generator", "iter_blocks",
    "masked_plurality_label", "plurality_label", "posterior_moments", "sample", "sex_label", "write_sample",
]
