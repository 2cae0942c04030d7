"""The feature strings the preprocessing gives the trainer, shared with the pipeline.

Each valid record becomes two training rows: one with the sex and plurality as
recorded, one as if they were unknown (sex "Unknown", plurality collapsed to
single or multiple), so the model can also serve requests where an ultrasound
has not told them apart. The Bayes floor must see the same strings the pipeline
writes, so the mapping is defined once, here.
"""

from __future__ import annotations

import numbers

import numpy as np

PLURALITY_LABELS = {
    1: "Single(1)",
    2: "Twins(2)",
    3: "Triplets(3)",
    4: "Quadruplets(4)",
    5: "Quintuplets(5)",
}
MULTIPLE_LABEL = "Multiple(2+)"
UNKNOWN_SEX = "Unknown"
SEX_LABELS = {True: "True", False: "False"}


def _plurality_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        if isinstance(n, numbers.Real) and not isinstance(n, bool) and float(n).is_integer():
            n = int(n)
        else:
            raise ValueError(f"plurality must be a whole number of babies, got {n!r}")
    if n < 1:
        raise ValueError(f"plurality must be at least 1, got {n}")
    return int(n)


def plurality_label(n) -> str:
    """Label of a recorded plurality: "Single(1)" .. "Quintuplets(5)".

    Plurality above 5 (sextuplets and more, about one record in a million) has no
    label of its own in the trainer's vocabulary; it is labelled "Multiple(2+)",
    a string the trainer already knows from the unknown-plurality rows.
    """
    return PLURALITY_LABELS.get(_plurality_count(n), MULTIPLE_LABEL)


def masked_plurality_label(n) -> str:
    """Label of the same record on its sex-unknown row: "Single(1)" or "Multiple(2+)"."""
    return PLURALITY_LABELS[1] if _plurality_count(n) == 1 else MULTIPLE_LABEL


def sex_label(is_male) -> str:
    """Label of a recorded sex: "True" or "False" (the strings the course's CSVs use)."""
    if not isinstance(is_male, (bool, np.bool_)):
        raise ValueError(f"is_male must be a boolean, got {is_male!r}")
    return SEX_LABELS[bool(is_male)]
