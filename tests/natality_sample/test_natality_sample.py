"""The natality sample generator: realism against real rows, exact Bayes floor, file formats."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import natality_sample as ns
from natality_sample import fit, writer
from natality_sample.model import default_model
from tests.conftest import SHARED

REAL_ROWS = SHARED / "data" / "natality_real_rows.csv"
needs_real_rows = pytest.mark.skipif(not REAL_ROWS.exists(), reason=f"real natality rows not present at {REAL_ROWS}")

SAMPLE_ROWS = 200_000
INTEGER_COLUMNS = ("year", "month", "mother_age", "plurality", "gestation_weeks")


# ------------------------------------------------------------------ helpers and fixtures


def valid_records(table: pa.Table) -> pd.DataFrame:
    """The rows the babyweight pipeline keeps: year > 2000 and every feature present and > 0."""
    frame = table.to_pandas()
    keep = frame.notna().all(axis=1) & (frame["year"] > 2000)
    for column in ("weight_pounds", "mother_age", "plurality", "gestation_weeks"):
        keep &= frame[column] > 0
    kept = frame[keep].copy()
    for column in INTEGER_COLUMNS:
        kept[column] = kept[column].astype(np.int64)
    return kept


def preprocess(records: pd.DataFrame) -> pd.DataFrame:
    """Each record as its two training rows: as recorded, and with sex and plurality hidden."""
    known = pd.DataFrame({
        "record": np.arange(len(records)),
        "is_male": np.where(records["is_male"], "True", "False"),
        "plurality": [ns.plurality_label(p) for p in records["plurality"]],
        "mother_age": records["mother_age"].to_numpy(),
        "gestation_weeks": records["gestation_weeks"].to_numpy(),
        "weight_pounds": records["weight_pounds"].to_numpy(),
    })
    hidden = known.assign(
        is_male=ns.UNKNOWN_SEX,
        plurality=np.where(records["plurality"].to_numpy() == 1, "Single(1)", "Multiple(2+)"),
    )
    return pd.concat([known.assign(kind="known"), hidden.assign(kind="hidden")], ignore_index=True)


def features(rows: pd.DataFrame):
    return rows["is_male"], rows["plurality"], rows["mother_age"], rows["gestation_weeks"]


@pytest.fixture(scope="module")
def generated_table() -> pa.Table:
    return ns.sample(SAMPLE_ROWS, seed=11)


@pytest.fixture(scope="module")
def generated(generated_table) -> pd.DataFrame:
    return valid_records(generated_table)


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    if not REAL_ROWS.exists():
        pytest.skip(f"real natality rows not present at {REAL_ROWS}")
    frame = pd.read_csv(REAL_ROWS)
    frame["plurality"] = frame["plurality"].str.extract(r"\((\d+)\)")[0].astype(int)
    frame["gestation_weeks"] = frame["gestation_weeks"].round().astype(int)
    return frame


@pytest.fixture(scope="module")
def preprocessed(generated) -> pd.DataFrame:
    rows = preprocess(generated)
    rows["best"] = ns.conditional_mean(*features(rows))
    return rows


def mean_and_se(values: pd.Series) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / np.sqrt(len(values)))


# ------------------------------------------------------------------ realism


@needs_real_rows
def test_marginals_match_the_real_rows(generated, real):
    def summary(frame):
        weight = frame["weight_pounds"]
        male = frame["is_male"].astype(bool)
        return {
            "weight mean": weight.mean(),
            "weight sd": weight.std(),
            "twin share": (frame["plurality"] == 2).mean(),
            "triplet share": (frame["plurality"] == 3).mean(),
            "preterm share": (frame["gestation_weeks"] < 37).mean(),
            "age mean": frame["mother_age"].mean(),
            "age sd": frame["mother_age"].std(),
            "male share": male.mean(),
            "male minus female weight": weight[male].mean() - weight[~male].mean(),
        }

    # Tolerances: about 3-4 standard errors of the real rows' estimate (31,508 rows),
    # e.g. weight mean SE 0.0075 lb, twin share SE 0.001, preterm SE 0.0018.
    tolerance = {
        "weight mean": 0.04, "weight sd": 0.04, "twin share": 0.004, "triplet share": 0.0008,
        "preterm share": 0.007, "age mean": 0.15, "age sd": 0.15, "male share": 0.012,
        "male minus female weight": 0.06,
    }
    ours, theirs = summary(generated), summary(real)
    off = {k: (round(ours[k], 4), round(theirs[k], 4)) for k in tolerance if abs(ours[k] - theirs[k]) > tolerance[k]}
    assert not off, f"generated vs real outside tolerance: {off}"


def _compare_group_means(generated, real, by, min_real_rows, sigmas=4.0):
    """Groups whose generated and real mean weights differ by more than `sigmas` combined SEs."""
    failures = {}
    for key, real_group in real.groupby(by, observed=True):
        if len(real_group) < min_real_rows:
            continue
        ours = generated.loc[generated[by] == key, "weight_pounds"]
        real_mean, real_se = mean_and_se(real_group["weight_pounds"])
        our_mean, our_se = mean_and_se(ours)
        if abs(our_mean - real_mean) > sigmas * np.hypot(real_se, our_se):
            failures[key] = (round(our_mean, 3), round(real_mean, 3), len(real_group))
    return failures


@needs_real_rows
def test_mean_weight_by_gestation_week_follows_the_real_rows(generated, real):
    # Every week with at least 100 real rows (weeks 30..47): within 4 combined standard errors.
    failures = _compare_group_means(generated, real, "gestation_weeks", min_real_rows=100)
    assert not failures, f"week: (generated, real, real rows) {failures}"
    # The shape a model must learn: preterm babies are much lighter, growth plateaus at term.
    by_week = generated.groupby("gestation_weeks")["weight_pounds"].mean()
    assert by_week[30] < 5.0 < by_week[35] < by_week[38] < by_week[40]


@needs_real_rows
def test_mean_weight_by_plurality_follows_the_real_rows(generated, real):
    failures = _compare_group_means(generated, real, "plurality", min_real_rows=50)
    assert not failures, f"plurality: (generated, real, real rows) {failures}"
    by_plurality = generated.groupby("plurality")["weight_pounds"].mean()
    assert by_plurality[1] > by_plurality[2] > by_plurality[3]
    assert 4.9 < by_plurality[2] < 5.5  # README: twins weigh 5.18 lb on average


@needs_real_rows
def test_mean_weight_by_mothers_age_is_an_inverted_u_like_the_real_rows(generated, real):
    bands = [0, 17, 19, 21, 24, 27, 30, 33, 36, 39, 42, 60]
    generated = generated.assign(band=pd.cut(generated["mother_age"], bands))
    real = real.assign(band=pd.cut(real["mother_age"], bands))
    failures = _compare_group_means(generated, real, "band", min_real_rows=100)
    assert not failures, f"age band: (generated, real, real rows) {failures}"
    by_band = generated.groupby("band", observed=True)["weight_pounds"].mean()
    peak = by_band[pd.Interval(30, 33)]
    assert by_band[pd.Interval(0, 17)] < peak - 0.3 and by_band[pd.Interval(42, 60)] < peak


@needs_real_rows
def test_calibration_figures_are_reproduced_by_the_fit_tool():
    fitted = fit.fit_calibration(REAL_ROWS)
    assert fit.compare_with_stored(fitted) == []
    assert fitted["REAL_ROWS"] == 31508


def test_years_months_and_ranges_are_those_of_the_natality_table(generated):
    assert generated["year"].between(2001, 2008).all()
    assert set(generated["month"]) == set(range(1, 13))
    month_share = generated["month"].value_counts(normalize=True)
    assert month_share[2] < 0.078 < 0.086 < month_share[8]  # births peak in late summer (real rows)
    assert generated["mother_age"].between(12, 54).all()
    assert generated["gestation_weeks"].between(17, 47).all()
    assert generated["weight_pounds"].between(0.1, 20).all()


def test_invalid_rows_are_present_at_a_few_percent_and_of_each_kind(generated_table, generated):
    frame = generated_table.to_pandas()
    invalid_share = 1 - len(generated) / len(frame)
    assert 0.02 < invalid_share < 0.045

    defects = {
        "year before 2001": frame["year"] <= 2000,
        **{f"{c} null": frame[c].isna() for c in ("weight_pounds", "mother_age", "plurality", "gestation_weeks")},
        **{f"{c} zero": frame[c] == 0 for c in ("weight_pounds", "mother_age", "plurality", "gestation_weeks")},
    }
    counts = {name: int(mask.sum()) for name, mask in defects.items()}
    assert all(count >= 100 for count in counts.values()), counts
    assert frame["year"].min() >= 1969
    # Each invalid row has exactly one defect; every other row passes the pipeline's filters.
    defect_count = sum(mask.astype(int) for mask in defects.values())
    assert defect_count.max() == 1
    assert int((defect_count == 1).sum()) == len(frame) - len(generated)


def test_same_seed_gives_the_same_data_and_different_seeds_differ():
    first, again = ns.sample(70_000, seed=3), ns.sample(70_000, seed=3)
    assert first.equals(again)
    assert not first.equals(ns.sample(70_000, seed=4))
    # A shorter sample is the start of a longer one, across the 65,536-row block boundary.
    assert ns.sample(66_000, seed=3).equals(first.slice(0, 66_000))


# ------------------------------------------------------------------ labels


def test_plurality_labels_are_the_trainers_vocabulary():
    assert [ns.plurality_label(n) for n in range(1, 8)] == [
        "Single(1)", "Twins(2)", "Triplets(3)", "Quadruplets(4)", "Quintuplets(5)", "Multiple(2+)", "Multiple(2+)",
    ]
    assert ns.PLURALITY_LABELS[5] == "Quintuplets(5)"
    assert ns.plurality_label(np.int64(2)) == ns.plurality_label(2.0) == "Twins(2)"
    assert [ns.masked_plurality_label(n) for n in (1, 2, 9)] == ["Single(1)", "Multiple(2+)", "Multiple(2+)"]
    for bad in (0, -1, 2.5, None, True, "2"):
        with pytest.raises(ValueError, match="plurality"):
            ns.plurality_label(bad)


# ------------------------------------------------------------------ Bayes floor


def _mse_and_se(rows: pd.DataFrame, prediction: np.ndarray) -> tuple[float, float]:
    """Mean squared error and its standard error, counting a record's two rows as one unit."""
    squared = pd.Series((rows["weight_pounds"].to_numpy() - prediction) ** 2)
    per_record = squared.groupby(rows["record"].to_numpy()).mean()
    return float(squared.mean()), float(per_record.std() / np.sqrt(len(per_record)))


@pytest.mark.parametrize("kind", ["known", "hidden", "both"])
def test_rmse_of_the_conditional_mean_equals_the_bayes_floor(preprocessed, kind):
    rows = preprocessed if kind == "both" else preprocessed[preprocessed["kind"] == kind]
    floor = ns.bayes_floor(*features(rows))
    mse, se = _mse_and_se(rows, rows["best"].to_numpy())
    assert abs(mse - floor**2) < 4 * se, f"empirical RMSE {np.sqrt(mse):.4f} vs floor {floor:.4f}"
    assert 0.95 < floor < 1.1  # the real rows' OLS RMSE is 1.067; good models reach ~1.03


def test_simple_predictors_stay_above_the_bayes_floor(preprocessed):
    design = pd.get_dummies(preprocessed[["is_male", "plurality"]], dtype=float)
    design["mother_age"] = preprocessed["mother_age"]
    design["gestation_weeks"] = preprocessed["gestation_weeks"]
    design["intercept"] = 1.0
    x, y = design.to_numpy(), preprocessed["weight_pounds"].to_numpy()
    ols = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    # Paired comparison on the same rows: OLS's squared errors exceed the best predictor's.
    gap = pd.Series((y - ols) ** 2 - (y - preprocessed["best"].to_numpy()) ** 2)
    per_record = gap.groupby(preprocessed["record"].to_numpy()).mean()
    assert gap.mean() > 6 * per_record.std() / np.sqrt(len(per_record))
    floor = ns.bayes_floor(*features(preprocessed))
    assert np.sqrt(np.mean((y - ols) ** 2)) > floor + 0.02
    assert np.sqrt(np.mean((y - y.mean()) ** 2)) > floor + 0.2


def test_hidden_sex_mixes_the_known_rows_by_the_sex_ratio():
    ages, weeks = np.array([17, 27, 41, 27]), np.array([39, 30, 40, 22])
    n = len(ages)
    male_mean, male_var = ns.posterior_moments(["True"] * n, ["Single(1)"] * n, ages, weeks)
    female_mean, female_var = ns.posterior_moments(["False"] * n, ["Single(1)"] * n, ages, weeks)
    hidden_mean, hidden_var = ns.posterior_moments(["Unknown"] * n, ["Single(1)"] * n, ages, weeks)
    p = default_model().p_male
    # Sex is independent of age and week, so the posterior of sex is its prior.
    np.testing.assert_allclose(hidden_mean, p * male_mean + (1 - p) * female_mean, rtol=1e-12)
    np.testing.assert_allclose(
        hidden_var, p * male_var + (1 - p) * female_var + p * (1 - p) * (male_mean - female_mean) ** 2, rtol=1e-12
    )
    assert np.all(male_mean > female_mean)


def test_hidden_plurality_is_weighted_towards_twins_and_by_the_week():
    twin = ns.conditional_mean(["True"] * 2, ["Twins(2)"] * 2, [30, 30], [38, 31])
    triplet = ns.conditional_mean(["True"] * 2, ["Triplets(3)"] * 2, [30, 30], [38, 31])
    multiple = ns.conditional_mean(["True", "Unknown"], ["Multiple(2+)", "Multiple(2+)"], [30, 30], [38, 38])
    hidden = ns.conditional_mean(["Unknown"] * 2, ["Multiple(2+)"] * 2, [30, 30], [38, 31])
    assert np.all((triplet < hidden) & (hidden < twin))
    assert (twin[0] - hidden[0]) < (twin[1] - hidden[1])  # triplets are likelier at 31 weeks than at 38
    assert multiple[0] < hidden[0]  # a known-sex "Multiple(2+)" row is a sextuplet or more


def test_bayes_functions_reject_rows_the_generator_cannot_produce():
    good = (["True"], ["Single(1)"], [30], [39])
    assert ns.conditional_mean(*good).shape == (1,)
    bad_inputs = {
        "is_male has values": (["yes"], ["Single(1)"], [30], [39]),
        "plurality has values": (["True"], ["Twin(2)"], [30], [39]),
        "mother_age 70": (["True"], ["Single(1)"], [70], [39]),
        "gestation_weeks must be whole": (["True"], ["Single(1)"], [30], [38.5]),
        "mother_age must be whole": (["True"], ["Single(1)"], [np.nan], [39]),
        "differ in length": (["True", "False"], ["Single(1)"], [30], [39]),
        "no rows": ([], [], [], []),
    }
    for message, row in bad_inputs.items():
        with pytest.raises(ValueError, match=message):
            ns.bayes_floor(*row)


# ------------------------------------------------------------------ files


def test_write_sample_parquet_has_bigquery_types_nulls_and_row_groups(tmp_path):
    info = ns.write_sample(tmp_path / "out", 70_000, seed=5)
    path = tmp_path / "out" / "natality.parquet"
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [65_536, 4_464]
    table = pq.read_table(path)
    assert table.schema.equals(pa.schema([
        ("year", pa.int64()), ("month", pa.int64()), ("weight_pounds", pa.float64()), ("is_male", pa.bool_()),
        ("mother_age", pa.int64()), ("plurality", pa.int64()), ("gestation_weeks", pa.int64()),
    ]))
    assert all(table.column(c).null_count > 0 for c in ("weight_pounds", "mother_age", "plurality", "gestation_weeks"))
    assert table.equals(ns.sample(70_000, seed=5))
    assert info["files"] == ["natality.parquet"] and not (tmp_path / "out" / "natality.csv").exists()


def test_write_sample_csv_has_the_bigquery_export_form(tmp_path):
    ns.write_sample(tmp_path, 5_000, seed=2, csv=True)
    text = (tmp_path / "natality.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "year,month,weight_pounds,is_male,mother_age,plurality,gestation_weeks"
    fields = [line.split(",") for line in lines[1:]]
    assert len(fields) == 5_000 and all(len(f) == 7 for f in fields)
    assert {f[3] for f in fields} == {"true", "false"}
    for index in (0, 1, 4, 5, 6):  # integer columns: digits or empty, never "39.0"
        assert all(re.fullmatch(r"\d*", f[index]) for f in fields)
    assert any(f[2] == "" for f in fields) and '"' not in text
    # Reading it back with BigQuery's types gives exactly the Parquet table (nulls, floats included).
    back = pacsv.read_csv(tmp_path / "natality.csv", convert_options=pacsv.ConvertOptions(column_types=ns.SCHEMA))
    assert back.equals(pq.read_table(tmp_path / "natality.parquet"))


def test_write_sample_sidecar_describes_the_sample(tmp_path):
    info = ns.write_sample(tmp_path, 1_000, seed=9, csv=True)
    assert json.loads((tmp_path / "_SAMPLE.json").read_text()) == info
    assert info == {
        "generator": "natality_sample", "version": 1, "seed": 9, "rows": 1_000,
        "files": ["natality.parquet", "natality.csv"],
        "columns": [
            {"name": "year", "type": "INTEGER"}, {"name": "month", "type": "INTEGER"},
            {"name": "weight_pounds", "type": "FLOAT"}, {"name": "is_male", "type": "BOOLEAN"},
            {"name": "mother_age", "type": "INTEGER"}, {"name": "plurality", "type": "INTEGER"},
            {"name": "gestation_weeks", "type": "INTEGER"},
        ],
    }
    assert ns.describes_this_generator(info)
    assert not ns.describes_this_generator({**info, "version": 0})
    assert not ns.describes_this_generator({"generator": "bigquery"})


def test_write_sample_is_byte_for_byte_deterministic(tmp_path):
    digests = []
    for name in ("a", "b"):
        ns.write_sample(tmp_path / name, 3_000, seed=1, csv=True)
        files = ("natality.parquet", "natality.csv")
        digests.append([hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest() for f in files])
    assert digests[0] == digests[1]


def test_write_sample_rejects_bad_arguments(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    cases = [
        ({"out_dir": tmp_path, "rows": 0}, "rows must be at least 1"),
        ({"out_dir": tmp_path, "rows": -3}, "rows must be at least 1"),
        ({"out_dir": tmp_path, "rows": 2.5}, "rows must be a whole number"),
        ({"out_dir": tmp_path, "rows": "10"}, "rows must be a whole number"),
        ({"out_dir": tmp_path, "rows": True}, "rows must be a whole number"),
        ({"out_dir": tmp_path, "rows": 10, "seed": -1}, "seed must be at least 0"),
        ({"out_dir": tmp_path, "rows": 10, "csv": "yes"}, "csv must be True or False"),
        ({"out_dir": a_file, "rows": 10}, "exists and is not a directory"),
        ({"out_dir": a_file / "sub", "rows": 10}, "parent is not a directory"),
        ({"out_dir": "", "rows": 10}, "out_dir must be a directory path"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ns.write_sample(**kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_failed_write_leaves_no_partial_file_and_no_sidecar(tmp_path, monkeypatch):
    ns.write_sample(tmp_path, 1_000, seed=1)
    before = (tmp_path / "natality.parquet").read_bytes()

    def failing_blocks(rows, seed):
        yield from ns.iter_blocks(rows, seed)
        raise OSError("disk full")

    monkeypatch.setattr(writer, "iter_blocks", failing_blocks)
    with pytest.raises(OSError, match="disk full"):
        ns.write_sample(tmp_path, 2_000, seed=2, csv=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["natality.parquet"]  # no temp, CSV or sidecar
    assert (tmp_path / "natality.parquet").read_bytes() == before
