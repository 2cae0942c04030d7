"""The generative model of a natality record, as pure functions of its parameters.

One record is drawn in this order, each step a discrete or closed-form
distribution so that every conditional probability is known exactly:

1. plurality p (1..8) from fixed shares;
2. sex, independent of everything (P(male) measured);
3. mother's age (whole years 12..54) given p: a smooth singleton distribution,
   exponentially tilted towards older mothers for multiples;
4. gestation week (17..47) given p: the singleton or twin week distribution,
   with higher multiples delivered at higher weekly odds (a proportional-odds
   shift of the twin delivery hazard);
5. weight given (sex, p, age, week): with probability q(week) the week is
   misdated and the baby weighs like a term birth, otherwise it follows the
   growth curve of its week; either way the size is scaled by sex, age and
   plurality factors and drawn with log-normal noise of a known log-SD.

Because the weight's mean and variance given all four features have closed
forms (``weight_moments``), and the feature distribution is discrete and known,
the best possible prediction and its error can be computed exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import numpy as np

AGES = np.arange(12, 55)  # the range of mother_age in the real rows (12..54)
WEEKS = np.arange(17, 48)  # the range of gestation_weeks in the real rows (17..47)
PLURALITIES = np.arange(1, 9)  # singletons .. octuplets; > 8 has never been recorded alive in the US

# Centres and scales of the age terms: chosen near the mean age (27.4) so the fitted
# coefficients are well conditioned. They are design constants, not fitted.
AGE_POLY_CENTER, AGE_POLY_SCALE = 27.0, 10.0
AGE_TILT_CENTER = 27.0
AGE_EFFECT_CENTER = 30.0

# Twins grow like singletons until about 28 weeks and fall behind until about 36
# weeks, after which the gap is a fixed fraction (the size deficit). Design choice
# consistent with the real rows: twin/singleton mean ratio is ~0.8 from week 32 on.
DIVERGENCE_START, DIVERGENCE_END = 28, 36

# Misdating: a share of births reported at weeks 28..30 weigh like term births
# (the real rows are bimodal there: a 2-3 lb mode and a 6-8 lb mode). The share
# is fitted for weeks < 28 and 28..30, falls linearly to zero at week 36, and is
# zero from 36 on, where a misdated term birth cannot be told apart.
MISDATING_PEAK_END, MISDATING_END = 30, 36
LOG_SD_REFERENCE_WEEK = 38  # the spread grows linearly for each week before this one


def normalise(weights: np.ndarray) -> np.ndarray:
    """Scale non-negative weights to a probability vector."""
    return weights / weights.sum()


def scaled_age(age) -> np.ndarray:
    return (np.asarray(age, dtype=float) - AGE_POLY_CENTER) / AGE_POLY_SCALE


def age_log_pmf_single(poly_coefficients) -> np.ndarray:
    """Log-probabilities of each age in AGES for singletons' mothers (a Poisson-GLM polynomial)."""
    x = scaled_age(AGES)
    log_weight = sum(c * x**k for k, c in enumerate(poly_coefficients))
    return log_weight - np.log(np.exp(log_weight).sum())


def age_pmf(poly_coefficients, tilt: float) -> np.ndarray:
    """Age distribution of mothers of one plurality: the singleton one tilted by exp(tilt * age)."""
    return normalise(np.exp(age_log_pmf_single(poly_coefficients) + tilt * (AGES - AGE_TILT_CENTER)))


def smooth_counts(counts: np.ndarray) -> np.ndarray:
    """A probability vector from weekly counts, smoothed with a [1, 2, 1] kernel.

    Used for twins (958 real rows): it fills isolated empty weeks without moving the
    mean; the kernel is renormalised at the ends so no mass leaves WEEKS.
    """
    kernel = np.array([1.0, 2.0, 1.0])
    smoothed = np.convolve(counts, kernel, mode="same") / np.convolve(np.ones_like(counts), kernel, mode="same")
    return normalise(smoothed)


def shift_delivery_odds(pmf: np.ndarray, shift: float) -> np.ndarray:
    """Week distribution whose weekly delivery log-odds are those of ``pmf`` plus ``shift``.

    The hazard at a week is P(born that week | not born before). Raising its
    log-odds by a constant is how higher-order multiples are delivered earlier
    than twins: the real triplets fit such a shift of the twin hazard.
    """
    survival = 1.0 - np.concatenate([[0.0], np.cumsum(pmf)[:-1]])
    hazard = np.divide(pmf, survival, out=np.ones_like(pmf), where=survival > 1e-15).clip(0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_odds = np.log(hazard[:-1]) - np.log1p(-hazard[:-1])
    shifted = np.concatenate([1.0 / (1.0 + np.exp(-(log_odds + shift))), [1.0]])  # all born by the last week
    still_unborn = np.concatenate([[1.0], np.cumprod(1.0 - shifted)[:-1]])
    return still_unborn * shifted


def misdated_share(week, share_preterm: float, share_peak: float) -> np.ndarray:
    """q(week): probability that a birth reported at this week weighs like a term birth."""
    week = np.asarray(week, dtype=float)
    falling = share_peak * (MISDATING_END - week) / (MISDATING_END - MISDATING_PEAK_END)
    return np.select(
        [week < DIVERGENCE_START, week <= MISDATING_PEAK_END, week < MISDATING_END],
        [share_preterm, share_peak, falling],
        default=0.0,
    )


def sex_factor(is_male, log_male_effect: float) -> np.ndarray:
    """Size factor by sex: males are exp(log_male_effect) times heavier than females."""
    return np.exp(np.where(np.asarray(is_male, dtype=bool), 0.5, -0.5) * log_male_effect)


def age_factor(age, log_effect) -> np.ndarray:
    """Size factor by mother's age: log-quadratic, an inverted U (peak where the log is largest)."""
    x = np.asarray(age, dtype=float) - AGE_EFFECT_CENTER
    linear, quadratic = log_effect
    return np.exp(linear * x + quadratic * x**2)


def divergence(week) -> np.ndarray:
    """0 before DIVERGENCE_START, rising linearly to 1 at DIVERGENCE_END."""
    week = np.asarray(week, dtype=float)
    return ((week - DIVERGENCE_START) / (DIVERGENCE_END - DIVERGENCE_START)).clip(0.0, 1.0)


@dataclass(frozen=True)
class WeightParams:
    """Parameters of weight given (sex, plurality, age, week); see module docstring step 5."""

    log_male_effect: float
    age_log_effect: tuple[float, float]
    term_component_mean: float
    term_component_log_sd: float
    misdated_share_preterm: float
    misdated_share_peak: float
    growth_mean_by_week: tuple[float, ...]
    log_sd_term: float
    log_sd_slope: float

    @classmethod
    def from_mapping(cls, m: Mapping) -> "WeightParams":
        return cls(
            log_male_effect=m["LOG_MALE_EFFECT"],
            age_log_effect=tuple(m["AGE_LOG_EFFECT"]),
            term_component_mean=m["TERM_COMPONENT_MEAN"],
            term_component_log_sd=m["TERM_COMPONENT_LOG_SD"],
            misdated_share_preterm=m["MISDATED_SHARE_PRETERM"],
            misdated_share_peak=m["MISDATED_SHARE_PEAK"],
            growth_mean_by_week=tuple(m["GROWTH_MEAN_BY_WEEK"]),
            log_sd_term=m["LOG_SD_TERM"],
            log_sd_slope=m["LOG_SD_SLOPE"],
        )


@dataclass(frozen=True)
class WeightComponents:
    """The two-component mixture of weight for each row (arrays of equal length)."""

    misdated_share: np.ndarray
    dated_mean: np.ndarray
    dated_log_sd: np.ndarray
    misdated_mean: np.ndarray
    misdated_log_sd: np.ndarray


def weight_components(
    is_male, plurality, age, week, params: WeightParams, deficits: Mapping[int, float]
) -> WeightComponents:
    """Mixture components of weight for rows of (sex, plurality, age, week)."""
    plurality = np.asarray(plurality, dtype=np.int64)
    week = np.asarray(week, dtype=np.int64)
    deficit_by_p = np.zeros(PLURALITIES[-1] + 1)
    for p, d in deficits.items():
        deficit_by_p[p] = d
    deficit = deficit_by_p[plurality]
    scale = sex_factor(is_male, params.log_male_effect) * age_factor(age, params.age_log_effect)
    growth = np.asarray(params.growth_mean_by_week)[week - WEEKS[0]]
    dated_mean = growth * (1.0 - deficit * divergence(week)) * scale
    misdated_mean = params.term_component_mean * (1.0 - deficit) * scale
    dated_log_sd = params.log_sd_term + params.log_sd_slope * np.maximum(0, LOG_SD_REFERENCE_WEEK - week)
    return WeightComponents(
        misdated_share=misdated_share(week, params.misdated_share_preterm, params.misdated_share_peak),
        dated_mean=dated_mean,
        dated_log_sd=dated_log_sd.astype(float),
        misdated_mean=misdated_mean,
        misdated_log_sd=np.full(dated_mean.shape, params.term_component_log_sd),
    )


def lognormal_variance(mean: np.ndarray, log_sd) -> np.ndarray:
    """Variance of a log-normal variable with this mean and log-SD."""
    return mean**2 * np.expm1(np.asarray(log_sd) ** 2)


def weight_moments(is_male, plurality, age, week, params: WeightParams, deficits: Mapping[int, float]):
    """Exact E[weight | features] and Var[weight | features] for each row."""
    c = weight_components(is_male, plurality, age, week, params, deficits)
    q = c.misdated_share
    mean = (1 - q) * c.dated_mean + q * c.misdated_mean
    variance = (
        (1 - q) * lognormal_variance(c.dated_mean, c.dated_log_sd)
        + q * lognormal_variance(c.misdated_mean, c.misdated_log_sd)
        + q * (1 - q) * (c.dated_mean - c.misdated_mean) ** 2
    )
    return mean, variance


@dataclass(frozen=True)
class GenerativeModel:
    """All distributions of the generator, as arrays indexed by plurality (row p-1)."""

    p_male: float
    plurality_pmf: np.ndarray  # over PLURALITIES
    age_pmf: np.ndarray  # [plurality-1, age index]
    week_pmf: np.ndarray  # [plurality-1, week index]
    weight: WeightParams
    deficits: Mapping[int, float]

    def moments(self, is_male, plurality, age, week):
        return weight_moments(is_male, plurality, age, week, self.weight, self.deficits)

    def components(self, is_male, plurality, age, week) -> WeightComponents:
        return weight_components(is_male, plurality, age, week, self.weight, self.deficits)


def build_model(cal) -> GenerativeModel:
    """Assemble the generative model from a calibration module (or any object with its names)."""
    age_rows = np.stack([age_pmf(cal.SINGLETON_AGE_POLY, cal.age_tilt(int(p))) for p in PLURALITIES])
    single_weeks = normalise(np.asarray(cal.SINGLETON_WEEK_COUNTS, dtype=float))
    twin_weeks = smooth_counts(np.asarray(cal.TWIN_WEEK_COUNTS, dtype=float))
    week_rows = np.stack(
        [single_weeks]
        + [shift_delivery_odds(twin_weeks, cal.delivery_log_odds(int(p))) for p in PLURALITIES[1:]]
    )
    return GenerativeModel(
        p_male=cal.P_MALE,
        plurality_pmf=np.asarray(cal.plurality_pmf(), dtype=float),
        age_pmf=age_rows,
        week_pmf=week_rows,
        weight=WeightParams.from_mapping(vars(cal)),
        deficits={int(p): cal.size_deficit(int(p)) for p in PLURALITIES},
    )


@functools.cache
def default_model() -> GenerativeModel:
    """The calibrated model every public function uses (built once per process)."""
    from natality_sample import calibration

    return build_model(calibration)
