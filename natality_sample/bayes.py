"""The best possible prediction of weight, and its error, for preprocessed feature rows.

The trainer sees each record twice: with its sex and plurality, and with them
hidden ("Unknown", plurality collapsed to single or multiple). For a row where
they are visible, the weight's conditional mean and variance come straight from
the generative model. For a row where they are hidden, the weight is a mixture
over the (sex, plurality) pairs consistent with the row, weighted by

    P(sex, p | age, week, visible labels) ∝ P(sex) P(p) P(age | p) P(week | p)

(Bayes' rule on the generator's own discrete distributions), so its mean and
variance are exact as well. No model can beat an RMSE of
sqrt(mean over rows of Var(weight | visible features)): that is the Bayes floor.
"""

from __future__ import annotations

import numpy as np

from natality_sample.labels import (
    MULTIPLE_LABEL, PLURALITY_LABELS, UNKNOWN_SEX, masked_plurality_label, plurality_label, sex_label,
)
from natality_sample.model import AGES, PLURALITIES, WEEKS, GenerativeModel, default_model

SEX_STRINGS = ("False", "True", UNKNOWN_SEX)
PLURALITY_STRINGS = tuple(PLURALITY_LABELS.values()) + (MULTIPLE_LABEL,)
# Every (sex, plurality) pair the generator can produce, as parallel arrays.
_PAIR_MALE = np.repeat([False, True], len(PLURALITIES))
_PAIR_PLURALITY = np.tile(PLURALITIES, 2)


def _consistent_pairs() -> np.ndarray:
    """[visible sex, visible plurality, pair] -> can this pair produce these labels?

    Derived from the label functions the pipeline uses, so the two cannot disagree.
    """
    table = np.zeros((len(SEX_STRINGS), len(PLURALITY_STRINGS), len(_PAIR_MALE)), dtype=bool)
    for k, (male, p) in enumerate(zip(_PAIR_MALE, _PAIR_PLURALITY)):
        table[SEX_STRINGS.index(sex_label(bool(male))), PLURALITY_STRINGS.index(plurality_label(int(p))), k] = True
        table[SEX_STRINGS.index(UNKNOWN_SEX), PLURALITY_STRINGS.index(masked_plurality_label(int(p))), k] = True
    return table


_CONSISTENT = _consistent_pairs()


def _codes(values, allowed: tuple[str, ...], name: str) -> np.ndarray:
    strings = np.asarray(values).astype(str)
    unique, inverse = np.unique(strings, return_inverse=True)
    lookup = {s: i for i, s in enumerate(allowed)}
    unknown = [s for s in unique if s not in lookup]
    if unknown:
        raise ValueError(f"{name} has values {unknown[:5]} outside {list(allowed)}")
    return np.array([lookup[s] for s in unique], dtype=np.int64)[inverse].reshape(-1)


def _whole_numbers(values, name: str, support: np.ndarray) -> np.ndarray:
    numbers = np.asarray(values, dtype=float).reshape(-1)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be whole numbers; row {i} has {numbers[i]!r}")
    outside = (numbers < support[0]) | (numbers > support[-1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{name} {numbers[i]:g} (row {i}) is outside the generator's range {support[0]}..{support[-1]}"
        )
    return numbers.astype(np.int64)


def posterior_moments(is_male, plurality, mother_age, gestation_weeks, model: GenerativeModel | None = None):
    """E[weight | visible features] and Var[weight | visible features] for each row."""
    model = model or default_model()
    sex = _codes(is_male, SEX_STRINGS, "is_male")
    label = _codes(plurality, PLURALITY_STRINGS, "plurality")
    age = _whole_numbers(mother_age, "mother_age", AGES)
    week = _whole_numbers(gestation_weeks, "gestation_weeks", WEEKS)
    lengths = {len(sex), len(label), len(age), len(week)}
    if len(lengths) != 1:
        raise ValueError(
            f"feature columns differ in length: is_male {len(sex)}, plurality {len(label)}, "
            f"mother_age {len(age)}, gestation_weeks {len(week)}"
        )
    if len(sex) == 0:
        raise ValueError("no rows given")
    # The features are discrete: work on each distinct row once and broadcast back.
    key = ((sex * len(PLURALITY_STRINGS) + label) * len(AGES) + (age - AGES[0])) * len(WEEKS) + (week - WEEKS[0])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    mean, variance = _distinct_row_moments(sex[first], label[first], age[first], week[first], model)
    return mean[inverse], variance[inverse]


def _distinct_row_moments(sex, label, age, week, model: GenerativeModel):
    n, pairs = len(sex), len(_PAIR_MALE)
    means, variances, weights = (np.empty((n, pairs)) for _ in range(3))
    prior = np.where(_PAIR_MALE, model.p_male, 1 - model.p_male) * model.plurality_pmf[_PAIR_PLURALITY - 1]
    for k in range(pairs):
        p = _PAIR_PLURALITY[k]
        means[:, k], variances[:, k] = model.moments(
            np.full(n, _PAIR_MALE[k]), np.full(n, p), age, week
        )
        likelihood = model.age_pmf[p - 1, age - AGES[0]] * model.week_pmf[p - 1, week - WEEKS[0]]
        weights[:, k] = _CONSISTENT[sex, label, k] * prior[k] * likelihood
    total = weights.sum(axis=1)
    impossible = total <= 0
    if impossible.any():
        i = int(np.flatnonzero(impossible)[0])
        raise ValueError(
            f"row {i} (is_male={SEX_STRINGS[sex[i]]}, plurality={PLURALITY_STRINGS[label[i]]}, "
            f"mother_age={age[i]}, gestation_weeks={week[i]}) cannot come from the generator"
        )
    weights /= total[:, None]
    mean = (weights * means).sum(axis=1)
    variance = (weights * (variances + (means - mean[:, None]) ** 2)).sum(axis=1)
    return mean, variance


def conditional_mean(is_male, plurality, mother_age, gestation_weeks) -> np.ndarray:
    """The Bayes-optimal prediction of weight_pounds for each preprocessed row."""
    return posterior_moments(is_male, plurality, mother_age, gestation_weeks)[0]


def conditional_variance(is_male, plurality, mother_age, gestation_weeks) -> np.ndarray:
    """Var(weight_pounds | the row's visible features): the error no model can remove."""
    return posterior_moments(is_male, plurality, mother_age, gestation_weeks)[1]


def bayes_floor(is_male, plurality, mother_age, gestation_weeks) -> float:
    """Lowest expected RMSE any model can reach on these rows: sqrt(mean_i Var(weight | row i))."""
    return float(np.sqrt(conditional_variance(is_male, plurality, mother_age, gestation_weeks).mean()))
