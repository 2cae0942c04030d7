"""hashmonth and the train/eval split are bit-exact with BigQuery's FARM_FINGERPRINT."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pytest

from beam_pipeline import records
from tests.conftest import SHARED

REAL_ROWS = SHARED / "data" / "natality_real_rows.csv"


@pytest.mark.parametrize(
    "text, expected",
    [
        # The examples of FARM_FINGERPRINT in BigQuery's documentation.
        ("1footrue", -1541654101129638711),
        ("2applefalse", 2794438866806483259),
        ("3true", -4880158226897771312),
    ],
)
def test_fingerprint64_matches_bigquery_documentation(text, expected):
    assert records.fingerprint64(text) == expected


def test_fingerprints_of_an_array_match_the_scalar_function():
    texts = ["1footrue", "2applefalse", "3true", "", "é"]
    got = records.fingerprints(pa.array(texts))
    assert got.dtype == np.int64
    assert got.tolist() == [records.fingerprint64(text) for text in texts]


def test_hashmonth_hashes_year_and_month_without_padding():
    got = records.hashmonth(pa.array([2001, 2001, 2008]), pa.array([1, 10, 12]))
    assert got.tolist() == [
        records.fingerprint64("20011"),
        records.fingerprint64("200110"),
        records.fingerprint64("200812"),
    ]
    assert got[0] != records.fingerprint64("200101")


def test_hashmonth_of_a_chunked_batch_equals_the_per_row_value():
    years = pa.chunked_array([[2001, 2002], [2003, 2001]])
    months = pa.chunked_array([[5, 6], [7, 5]])
    got = records.hashmonth(years, months)
    assert got.tolist() == [records.fingerprint64(f"{y}{m}") for y, m in
                            [(2001, 5), (2002, 6), (2003, 7), (2001, 5)]]


def test_split_uses_the_absolute_value_of_a_negative_hashmonth():
    # January 2001 hashes to a negative number whose absolute value is 3 mod 4 (eval),
    # while Python's modulo of the signed number gives 1 (it would wrongly say train).
    h = records.fingerprint64("20011")
    assert h == -7146494315947640619
    assert h % 4 == 1 and abs(h) % 4 == 3
    assert records.split_of(h) == records.EVAL


@pytest.mark.parametrize(
    "year, month, split",
    [
        (2001, 1, "eval"),
        (2001, 4, "eval"),
        (2001, 5, "eval"),
        (2001, 8, "eval"),
        (2002, 10, "eval"),
        (2001, 2, "train"),
        (2001, 3, "train"),
        (2002, 1, "train"),
    ],
)
def test_known_year_months_land_in_their_split(year, month, split):
    assert records.split_of(records.fingerprint64(f"{year}{month}")) == split


def test_eval_mask_agrees_with_split_of_for_extreme_values():
    values = np.array(
        [-(2**63), -(2**63) + 1, -5, -4, -3, -1, 0, 1, 3, 7, 2**63 - 1], dtype=np.int64
    )
    expected = [records.split_of(int(v)) == records.EVAL for v in values]
    assert records.eval_mask(values).tolist() == expected


def test_about_a_quarter_of_the_year_months_are_eval():
    splits = [records.split_of(records.fingerprint64(f"{y}{m}"))
              for y in range(2001, 2009) for m in range(1, 13)]
    assert 12 <= splits.count(records.EVAL) <= 36


@pytest.mark.skipif(not REAL_ROWS.exists(), reason="shared real natality rows are not available")
def test_every_hashmonth_in_the_real_rows_is_a_year_month_of_2001_to_2008():
    # The course's train/eval files hold abs(FARM_FINGERPRINT(CONCAT(year, month))) as
    # computed by BigQuery; every value must be one of ours.
    with REAL_ROWS.open(newline="") as handle:
        observed = {abs(int(row["hashmonth"])) for row in csv.DictReader(handle)}
    ours = {
        abs(records.fingerprint64(f"{y}{m}")): (y, m)
        for y in range(2001, 2009)
        for m in range(1, 13)
    }
    assert len(observed) > 50
    unmatched = observed - set(ours)
    assert not unmatched, f"{len(unmatched)} hashmonth values match no year-month"
