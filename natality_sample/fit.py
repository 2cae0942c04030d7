"""Refit the generator's calibration figures from real natality rows.

The generator never reads real data at run time: its figures live in
``natality_sample.calibration`` as literals. This module is the development tool
that produced them, so that every figure there can be reproduced and audited:

    python -m natality_sample.fit /path/to/natality_real_rows.csv

prints each figure next to the value stored in ``calibration``. The input is the
CSV described in the shared data README (columns weight_pounds, is_male,
mother_age, plurality as "Twins(2)"-style strings, gestation_weeks, hashmonth).

The fitting is deliberately plain numpy (least squares, a one-dimensional
likelihood search and a small EM), so it needs nothing beyond the generator's own
dependencies plus pandas and pyfarmhash, which the project already pins.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from natality_sample import calibration as cal
from natality_sample import model

REAL_COLUMNS = ("weight_pounds", "is_male", "mother_age", "plurality", "gestation_weeks", "hashmonth")


def _hashmonth_lookup() -> dict[int, tuple[int, int]]:
    """Map BigQuery's FARM_FINGERPRINT(CONCAT(year, month)) back to (year, month).

    Only 96 year-month pairs exist in 2001..2008, so the hash is inverted by
    enumeration. Both the signed value and its absolute value are keys because
    part of the real rows store the absolute value (see the data README).
    """
    import farmhash  # pyfarmhash: the same FarmHash Fingerprint64 BigQuery uses

    lookup: dict[int, tuple[int, int]] = {}
    for year in range(1969, 2009):
        for month in range(1, 13):
            unsigned = farmhash.fingerprint64(f"{year}{month}")
            signed = unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned
            lookup[signed] = (year, month)
            lookup[abs(signed)] = (year, month)
    return lookup


def load_real_rows(path: str | Path) -> pd.DataFrame:
    """Read the real rows and add integer plurality, week, year and month columns."""
    frame = pd.read_csv(path)
    missing = [c for c in REAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(REAL_COLUMNS)}")
    counts = frame["plurality"].astype(str).map(lambda s: re.search(r"\((\d+)\)", s))
    if counts.isna().any():
        bad = frame.loc[counts.isna(), "plurality"].iloc[0]
        raise ValueError(f"{path}: plurality {bad!r} has no '(n)' count")
    frame["p"] = counts.map(lambda m: int(m.group(1)))
    frame["g"] = frame["gestation_weeks"].round().astype(int)
    year_month = frame["hashmonth"].map(_hashmonth_lookup())
    if year_month.isna().any():
        bad = frame.loc[year_month.isna(), "hashmonth"].iloc[0]
        raise ValueError(f"{path}: hashmonth {bad} is not the fingerprint of any year/month 1969..2008")
    frame["year"] = year_month.map(lambda ym: ym[0])
    frame["month"] = year_month.map(lambda ym: ym[1])
    return frame


def _counts(values: pd.Series, support: np.ndarray) -> list[int]:
    return [int(c) for c in values.value_counts().reindex(support, fill_value=0)]


def fit_age_polynomial(ages: pd.Series, degree: int = 6) -> list[float]:
    """Poisson regression of the count at each age on a polynomial of the scaled age.

    With an intercept and the first two powers, the fitted distribution has exactly
    the data's mean and variance; the higher powers shape the skew and the tails.
    """
    counts = np.array(_counts(ages, model.AGES), dtype=float)
    x = model.scaled_age(model.AGES)
    design = np.column_stack([x**k for k in range(degree + 1)])
    coef = np.zeros(degree + 1)
    coef[0] = np.log(counts.mean())
    for _ in range(100):  # iteratively reweighted least squares
        mu = np.exp(design @ coef)
        z = design @ coef + (counts - mu) / mu
        new = np.linalg.solve(design.T @ (mu[:, None] * design), design.T @ (mu * z))
        if np.max(np.abs(new - coef)) < 1e-12:
            coef = new
            break
        coef = new
    return [float(c) for c in coef]


def fit_age_tilt(ages: pd.Series, base_log_pmf: np.ndarray) -> float:
    """Exponential tilt of the singleton age distribution that matches a group's mean age.

    For an exponential family this moment match is also the maximum-likelihood fit.
    """
    target = float(ages.mean())
    lo, hi = -1.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        pmf = model.normalise(np.exp(base_log_pmf + mid * (model.AGES - model.AGE_TILT_CENTER)))
        if float(pmf @ model.AGES) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit_hazard_shift(weeks: pd.Series, base_pmf: np.ndarray) -> float:
    """Maximum-likelihood shift of the weekly delivery log-odds relative to base_pmf."""
    counts = np.array(_counts(weeks, model.WEEKS), dtype=float)

    def log_likelihood(shift: float) -> float:
        return float(counts @ np.log(model.shift_delivery_odds(base_pmf, shift) + 1e-300))

    lo, hi = 0.0, 8.0
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(200):  # golden-section search; the log-likelihood is unimodal here
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if log_likelihood(a) < log_likelihood(b):
            lo = a
        else:
            hi = b
    return float((lo + hi) / 2)


def _normal_density(y: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((y - mean) / sd) ** 2) / sd


def em_week(log_w: np.ndarray, term_mean: float, term_log_sd: float, share: float | None):
    """Two-component fit of one week's log weights: dated births plus misdated term births.

    The misdated component is fixed (fitted on term weeks); the dated component's
    log-mean and log-SD are estimated, and so is the misdated share unless given.
    Returns (arithmetic mean of the dated component, its log-SD, misdated share,
    responsibilities of the misdated component).
    """
    b_log_mean = np.log(term_mean) - term_log_sd**2 / 2
    mean, sd = float(np.quantile(log_w, 0.3)), 0.3
    q = 0.2 if share is None else share
    resp = np.zeros_like(log_w)
    for _ in range(2000):
        dated = (1 - q) * _normal_density(log_w, mean, sd)
        misdated = q * _normal_density(log_w, b_log_mean, term_log_sd)
        resp = misdated / (dated + misdated)
        weight = 1 - resp
        new_mean = float(weight @ log_w / weight.sum())
        new_sd = float(np.sqrt(max(weight @ (log_w - new_mean) ** 2 / weight.sum(), 1e-6)))
        new_q = float(resp.mean()) if share is None else share
        done = abs(new_mean - mean) + abs(new_sd - sd) + abs(new_q - q) < 1e-10
        mean, sd, q = new_mean, new_sd, new_q
        if done:
            break
    return float(np.exp(mean + sd**2 / 2)), sd, q, resp


SMOOTHED_BEFORE_WEEK = 30


def lognormal_log_sd(weights: np.ndarray) -> float:
    """Log-SD of the log-normal with the same coefficient of variation as ``weights``.

    Matching the variance itself (rather than the SD of log weight, which the real
    rows' long low tail inflates) keeps the generated variance, and so the Bayes
    floor, true to the real rows.
    """
    return float(np.sqrt(np.log1p(weights.var() / weights.mean() ** 2)))


def fit_weight(singles: pd.DataFrame) -> dict:
    """Fit the singleton weight model: sex and age factors, growth by week, spread, misdating."""
    # Sex and age: log weight relative to its week's mean, on term weeks where misdating
    # does not blur the week (OLS on male indicator, age-30 and its square).
    term = singles[singles["g"].between(37, 42)]
    rel = np.log(term["weight_pounds"]) - np.log(term.groupby("g")["weight_pounds"].transform("mean"))
    x = term["mother_age"] - model.AGE_EFFECT_CENTER
    design = np.column_stack([np.ones(len(term)), term["is_male"].astype(float), x, x**2])
    coef, *_ = np.linalg.lstsq(design, rel.to_numpy(), rcond=None)
    log_male_effect, age_linear, age_quadratic = float(coef[1]), float(coef[2]), float(coef[3])

    factor = model.sex_factor(singles["is_male"].to_numpy(), log_male_effect) * model.age_factor(
        singles["mother_age"].to_numpy(), (age_linear, age_quadratic)
    )
    norm = singles.assign(wn=singles["weight_pounds"].to_numpy() / factor)
    log_wn = np.log(norm["wn"])

    # The misdated component: births reported early that weigh like term births.
    on_term = norm["g"].between(39, 41)
    term_mean = float(norm.loc[on_term, "wn"].mean())
    term_log_sd = lognormal_log_sd(norm.loc[on_term, "wn"].to_numpy())

    def pooled_share(weeks: range) -> float:
        """Misdated share shared by a band of weeks (each week keeps its own dated component)."""
        q = 0.1
        for _ in range(200):
            resp = np.concatenate(
                [em_week(log_wn[norm["g"] == g].to_numpy(), term_mean, term_log_sd, q)[3] for g in weeks]
            )
            if abs(resp.mean() - q) < 1e-9:
                break
            q = float(resp.mean())
        return q

    share_preterm = pooled_share(range(20, 28))
    share_peak = pooled_share(range(28, 31))

    growth, log_sds, sizes = {}, {}, {}
    for week in model.WEEKS:
        y = log_wn[norm["g"] == week].to_numpy()
        sizes[week] = len(y)
        q = model.misdated_share(week, share_preterm, share_peak)
        if q > 0:
            growth[week], log_sds[week], _, _ = em_week(y, term_mean, term_log_sd, q)
        else:
            growth[week] = float(np.exp(y).mean())
            log_sds[week] = lognormal_log_sd(np.exp(y))

    # Growth of dated births: each week from SMOOTHED_BEFORE_WEEK on (80 or more rows)
    # keeps its own estimate; the sparse earlier weeks take a weighted quadratic in log.
    early = [w for w in model.WEEKS if w < SMOOTHED_BEFORE_WEEK]
    wts = np.sqrt(np.array([sizes[w] for w in early], dtype=float))
    x = np.array(early) - 36.0
    design = np.column_stack([np.ones_like(x), x, x**2])
    sol = np.linalg.lstsq(design * wts[:, None], np.log([growth[w] for w in early]) * wts, rcond=None)[0]
    growth_by_week = [
        float(np.exp(sol @ [1.0, w - 36.0, (w - 36.0) ** 2])) if w < SMOOTHED_BEFORE_WEEK else growth[w]
        for w in model.WEEKS
    ]

    # Spread: log-SD at term, growing linearly for each week before 38.
    late = [w for w in model.WEEKS if w >= 38]
    log_sd_term = float(np.sqrt(np.average([log_sds[w] ** 2 for w in late], weights=[sizes[w] for w in late])))
    pre = [w for w in model.WEEKS if 20 <= w < 38]
    gap = np.array([38 - w for w in pre], dtype=float)
    resid = np.array([log_sds[w] for w in pre]) - log_sd_term
    wts = np.array([sizes[w] for w in pre], dtype=float)
    log_sd_slope = float((wts * gap) @ resid / ((wts * gap) @ gap))

    return {
        "LOG_MALE_EFFECT": log_male_effect,
        "AGE_LOG_EFFECT": [age_linear, age_quadratic],
        "TERM_COMPONENT_MEAN": term_mean,
        "TERM_COMPONENT_LOG_SD": term_log_sd,
        "MISDATED_SHARE_PRETERM": share_preterm,
        "MISDATED_SHARE_PEAK": share_peak,
        "GROWTH_MEAN_BY_WEEK": growth_by_week,
        "LOG_SD_TERM": log_sd_term,
        "LOG_SD_SLOPE": log_sd_slope,
    }


def fit_size_deficit(group: pd.DataFrame, plurality: int, weight_fit: dict) -> float:
    """Least-squares size deficit of one plurality (twins, triplets) relative to singletons of the same week."""
    params = model.WeightParams.from_mapping(weight_fit)
    y = group["weight_pounds"].to_numpy()

    def sse(deficit: float) -> float:
        mean, _ = model.weight_moments(
            group["is_male"].to_numpy(), np.full(len(group), plurality), group["mother_age"].to_numpy(),
            group["g"].to_numpy(), params, deficits={plurality: deficit},
        )
        return float(((y - mean) ** 2).sum())

    grid = np.linspace(0.0, 0.8, 801)
    return float(grid[int(np.argmin([sse(d) for d in grid]))])


def fit_calibration(path: str | Path) -> dict:
    """Every fitted figure of ``natality_sample.calibration``, recomputed from the real rows."""
    rows = load_real_rows(path)
    n = len(rows)
    singles, twins, triplets = (rows[rows["p"] == k] for k in (1, 2, 3))
    fitted: dict = {
        "REAL_ROWS": n,
        "P_MALE": float(rows["is_male"].mean()),
        "PLURALITY_SHARE_MEASURED": {k: float((rows["p"] == k).mean()) for k in (2, 3, 4)},
        "YEAR_COUNTS": _counts(rows["year"], np.arange(2001, 2009)),
        "MONTH_COUNTS": _counts(rows["month"], np.arange(1, 13)),
        "SINGLETON_AGE_POLY": fit_age_polynomial(singles["mother_age"]),
        "SINGLETON_WEEK_COUNTS": _counts(singles["g"], model.WEEKS),
        "TWIN_WEEK_COUNTS": _counts(twins["g"], model.WEEKS),
    }
    base_age = model.age_log_pmf_single(fitted["SINGLETON_AGE_POLY"])
    fitted["AGE_TILT"] = {
        2: fit_age_tilt(twins["mother_age"], base_age),
        3: fit_age_tilt(triplets["mother_age"], base_age),
    }
    twin_pmf = model.smooth_counts(np.array(fitted["TWIN_WEEK_COUNTS"], dtype=float))
    fitted["TRIPLET_DELIVERY_LOG_ODDS"] = fit_hazard_shift(triplets["g"], twin_pmf)
    weight_fit = fit_weight(singles)
    fitted.update(weight_fit)
    fitted["SIZE_DEFICIT"] = {
        2: fit_size_deficit(twins, 2, weight_fit),
        3: fit_size_deficit(triplets, 3, weight_fit),
    }
    return fitted


def _close(a, b, rel: float) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    return bool(np.isclose(a, b, rtol=rel, atol=1e-9))


def compare_with_stored(fitted: dict, rel: float = 1e-3) -> list[str]:
    """Names of fitted figures that differ from ``calibration`` by more than ``rel``."""
    return [name for name, value in fitted.items() if not _close(value, getattr(cal, name), rel)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real_rows_csv", type=Path)
    args = parser.parse_args(argv)
    fitted = fit_calibration(args.real_rows_csv)
    for name, value in fitted.items():
        stored = getattr(cal, name, None)
        flag = "" if stored is not None and _close(value, stored, 1e-3) else "   <-- differs from calibration"
        print(f"{name} = {value!r}{flag}")
    return 1 if compare_with_stored(fitted) else 0


if __name__ == "__main__":
    sys.exit(main())
