"""TensorFlow Serving's row format: typed columns from instances, predictions from outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_server.errors import ApiError
from model_server.row_format import (
    InputSpec,
    instances_to_columns,
    predictions_from_outputs,
    tf_serving_float_values,
)
from tests.local_cloud.vertex.conftest import BABY, TWIN_GIRL

SIGNATURE = [
    InputSpec("gestation_weeks", "float32", (None,)),
    InputSpec("is_male", "string", (None,)),
    InputSpec("mother_age", "float32", (None,)),
    InputSpec("plurality", "string", (None,)),
]


def test_floats_are_written_as_tensorflow_serving_writes_them():
    just_above = np.nextafter(np.float32(7.185), np.float32(8))  # six digits would not read back
    values = np.array([0.2, 7.185, just_above, 1e-7, 3.0], dtype=np.float32)
    assert tf_serving_float_values(values) == [0.2, 7.185, 7.18500042, 1e-07, 3.0]
    assert json.dumps(tf_serving_float_values(np.array([[0.2], [float("nan")]], dtype=np.float32))) == "[[0.2], [NaN]]"


def test_instances_become_typed_columns():
    columns = instances_to_columns([BABY, TWIN_GIRL], SIGNATURE)
    assert columns["mother_age"].dtype == np.float32 and columns["mother_age"].tolist() == [26.0, 31.0]
    assert columns["is_male"].tolist() == ["True", "False"]
    with pytest.raises(ApiError, match="does not fit in float32"):
        instances_to_columns([{**BABY, "mother_age": 1e300}], SIGNATURE)
    b64 = instances_to_columns([{**BABY, "is_male": {"b64": "VHJ1ZQ=="}}], SIGNATURE)
    assert b64["is_male"].tolist() == [b"True"]


def test_predictions_take_the_row_format():
    one_output = {"weight": np.array([7.5, 6.25], dtype=np.float32)}
    assert predictions_from_outputs(one_output) == [7.5, 6.25]
    two_outputs = {
        "weight": np.array([7.5, 6.25], dtype=np.float32),
        "label": np.array([b"big", b"small"], dtype=object),
    }
    assert predictions_from_outputs(two_outputs) == [
        {"label": "big", "weight": 7.5},
        {"label": "small", "weight": 6.25},
    ]
    with pytest.raises(ApiError, match="batch size"):
        predictions_from_outputs({"a": np.zeros(2), "b": np.zeros(3)})
