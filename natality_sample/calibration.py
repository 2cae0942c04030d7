"""Every figure the natality sample generator uses, with where it comes from.

Three kinds of source, marked on each figure:

[README]   a fact stated in the shared data README (measured on the real rows).
[FITTED]   fitted on the 31,508 real rows by the project's own tool
           ``python -m natality_sample.fit natality_real_rows.csv``, which prints each
           fitted figure next to the value stored here and flags any difference
           (tests/natality_sample/test_natality_sample.py runs it when the real rows are present).
[DESIGN]   a choice the real rows cannot settle (too few rows, or information the
           published rows do not carry), with the reasoning beside it.

The real rows are babyweight-course samples of ``bigquery-public-data.samples.natality``,
years 2001..2008 and already filtered to valid values, so invalid-row rates are
design choices.
"""

from __future__ import annotations

# ---------------------------------------------------------------- population shares

REAL_ROWS = 31508  # [FITTED] rows in natality_real_rows.csv (README: 31,508)

P_MALE = 0.511553  # [FITTED] share of is_male == True (16,118 / 31,508)

# [FITTED] share of twins (958 rows; README: 3.0%), triplets (57; README: 0.18%) and
# quadruplets (2 rows: too few to be more than an order of magnitude).
PLURALITY_SHARE_MEASURED = {2: 0.0304050, 3: 0.00180906, 4: 6.34759e-05}

# [DESIGN] Quintuplets and more: none in the real rows. NCHS final birth data of the
# early 2000s count roughly one quintuplet-or-higher birth for every six quadruplet
# births; that 5+ share is split 85/10/4/1 % over 5, 6, 7, 8 so plurality > 5 occurs
# about once in a million rows (the pipeline must still cope with it).
HIGHER_ORDER_SHARE = PLURALITY_SHARE_MEASURED[4] / 6
HIGHER_ORDER_SPLIT = {5: 0.85, 6: 0.10, 7: 0.04, 8: 0.01}


def plurality_pmf() -> list[float]:
    """P(plurality = 1..8)."""
    shares = dict(PLURALITY_SHARE_MEASURED)
    shares.update({p: HIGHER_ORDER_SHARE * f for p, f in HIGHER_ORDER_SPLIT.items()})
    return [1.0 - sum(shares.values())] + [shares[p] for p in range(2, 9)]


# [FITTED] Births per year 2001..2008 and per month 1..12 in the real rows. The rows
# carry only hashmonth = FARM_FINGERPRINT(CONCAT(year, month)); there are just 96
# year/month pairs, so natality_sample.fit inverts the hash by enumeration (every
# row matched). Years are close to uniform; months show the usual birth seasonality
# (February lowest, July-October highest). Year and month are drawn independently.
YEAR_COUNTS = [3474, 4028, 3829, 3960, 3982, 4261, 3961, 4013]
MONTH_COUNTS = [2753, 2330, 2480, 2331, 2553, 2803, 2865, 2803, 2798, 2831, 2482, 2479]
FIRST_YEAR = 2001

# ---------------------------------------------------------------- mother's age

# [FITTED] Singleton mothers' ages 12..54: a Poisson regression of the count at each
# age on a degree-6 polynomial of (age - 27) / 10 (deviance 58 on 43 ages). Its mean
# and SD equal the data's exactly (27.3 and 6.18 for singletons; README, all rows: 27.4
# and 6.2).
SINGLETON_AGE_POLY = [7.39536, -0.0743633, -0.0879178, -0.321018, -0.744541, 0.473288, -0.0900053]

# [FITTED] Mothers of multiples are older: the singleton age distribution tilted by
# exp(tilt * (age - 27)), tilt matched to the mean age of twins' mothers (29.4) and
# triplets' (31.6).
AGE_TILT = {2: 0.0525461, 3: 0.109028}


def age_tilt(plurality: int) -> float:
    """[DESIGN] Quadruplets and more (two real rows) use the triplets' tilt."""
    return 0.0 if plurality == 1 else AGE_TILT[min(plurality, 3)]


# ---------------------------------------------------------------- gestation weeks

# [FITTED] Real counts of singletons and twins at each week 17..47. Singletons use
# their counts as they are (30,491 rows; README: mean 38.6, 12.1% preterm over all
# rows); twins' counts (958 rows) are smoothed with a [1, 2, 1] kernel.
SINGLETON_WEEK_COUNTS = [
    3, 3, 3, 6, 11, 17, 19, 26, 24, 33, 32, 58, 81, 80, 90, 141,
    244, 445, 666, 1207, 2679, 5793, 7872, 6176, 2875, 959, 470, 240, 132, 56, 50,
]
TWIN_WEEK_COUNTS = [
    0, 0, 2, 2, 1, 4, 6, 4, 10, 5, 7, 9, 11, 16, 19, 36,
    51, 91, 129, 156, 186, 105, 56, 26, 11, 7, 5, 2, 0, 1, 0,
]

# [FITTED] Triplets' weekly delivery log-odds exceed the twins' by this constant
# (maximum likelihood on the 57 triplets; mean week 33.1 vs 33.0 real).
TRIPLET_DELIVERY_LOG_ODDS = 0.905485


def delivery_log_odds(plurality: int) -> float:
    """Shift of the twin delivery log-odds for this plurality (0 for twins).

    [DESIGN] Each extra baby adds the triplets' shift again (quadruplets: mean
    week 30.5), up to quintuplets (27.5 weeks); larger multiples keep the
    quintuplets' value rather than being born implausibly early.
    """
    if plurality < 2:
        raise ValueError(f"delivery_log_odds is defined relative to twins; got plurality {plurality}")
    return TRIPLET_DELIVERY_LOG_ODDS * min(plurality - 2, 3)


# ---------------------------------------------------------------- weight

# [FITTED] log(weight / mean weight of its week) on singleton term weeks 37..42, by OLS
# on a male indicator, (age - 30) and (age - 30)^2:
# males are exp(0.0356) = 1.036 times heavier (README: +0.24 lb);
# the age effect is an inverted U peaking at 37 (up 7% from age 15 to the peak).
LOG_MALE_EFFECT = 0.0356295
AGE_LOG_EFFECT = [0.00214649, -0.000150629]

# [FITTED] Weight of a misdated birth (reported preterm, born at term): a log-normal
# with the mean and coefficient of variation of singleton weeks 39..41, after dividing
# out sex and age. (Spreads are matched on the variance, not on the SD of log weight,
# which the real rows' long low tail inflates; the Bayes floor is about variance.)
TERM_COMPONENT_MEAN = 7.73512
TERM_COMPONENT_LOG_SD = 0.127073

# [FITTED] Share of misdated births by EM (the two-component mixture at each week):
# pooled over weeks 20..27 and over 28..30; see model.misdated_share for the shape.
MISDATED_SHARE_PRETERM = 0.00630707
MISDATED_SHARE_PEAK = 0.264147

# [FITTED] Mean weight (lb) of correctly dated singletons at weeks 17..47 for a female
# baby of a 30-year-old mother. Weeks 30..35 (80 to 666 rows each): the dated
# component's mean from EM at that week; weeks 17..29 (3 to 81 rows): those EM means
# smoothed by a weighted quadratic in log; weeks >= 36 (no misdating): the week's mean.
GROWTH_MEAN_BY_WEEK = [
    0.937696, 0.989652, 1.05247, 1.12782, 1.2178, 1.325, 1.45266, 1.60478,
    1.78638, 2.00371, 2.26466, 2.57914, 2.95974, 3.6319, 3.92373, 4.70409,
    4.98497, 5.85359, 6.19959, 6.52413, 6.97622, 7.33824, 7.61867, 7.81492,
    7.88255, 7.77993, 7.712, 7.8838, 7.80756, 7.65693, 7.65385,
]

# [FITTED] Log-SD of dated births: LOG_SD_TERM from week 38 on (pooled, matched to
# each week's coefficient of variation), growing by LOG_SD_SLOPE for each week before
# 38 (weighted least squares on weeks 20..37), so the spread is ~0.29 at 30 weeks and
# ~0.45 at 22 weeks, as in the real rows.
LOG_SD_TERM = 0.129657
LOG_SD_SLOPE = 0.0202318

# [FITTED] Multiples are lighter than singletons of the same week once past 28 weeks,
# by this fraction from 36 weeks on (least squares on twins and on triplets; twins
# weigh 5.18 lb on average, README).
SIZE_DEFICIT = {2: 0.186, 3: 0.359}


def size_deficit(plurality: int) -> float:
    """[DESIGN] Beyond triplets the deficit keeps growing by the twin-to-triplet step, capped at 0.5."""
    if plurality == 1:
        return 0.0
    if plurality in SIZE_DEFICIT:
        return SIZE_DEFICIT[plurality]
    step = SIZE_DEFICIT[3] - SIZE_DEFICIT[2]
    return min(SIZE_DEFICIT[3] + step * (plurality - 3), 0.5)


# ---------------------------------------------------------------- invalid rows

# [DESIGN] The full natality table holds records the babyweight pipeline must drop:
# missing or zero values, and years before 2001. The real rows were filtered before
# publication, so these rates cannot be measured there; they add up to 3.1% of rows,
# each invalid row carrying exactly one defect. Year-defective rows get a year in
# 1969..2000 (the table starts in 1969) and otherwise valid values.
INVALID_ROW_SHARES = {
    ("year", "before_2001"): 0.010,
    ("gestation_weeks", "null"): 0.008,
    ("gestation_weeks", "zero"): 0.002,
    ("weight_pounds", "null"): 0.003,
    ("weight_pounds", "zero"): 0.001,
    ("mother_age", "null"): 0.002,
    ("mother_age", "zero"): 0.001,
    ("plurality", "null"): 0.002,
    ("plurality", "zero"): 0.002,
}
EARLIEST_YEAR = 1969
