"""TensorFlow Serving's row format: instances in, predictions out.

Vertex AI's prebuilt TensorFlow container is TensorFlow Serving, so a predict request's
``instances`` (one JSON object per example, or bare values for a one-input signature) become one
batched array per signature input, and the signature's outputs become ``predictions`` written as
TensorFlow Serving writes them. A value whose JSON type does not fit its input is refused with the
instance and field it came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from model_server.errors import ApiError, invalid


@dataclass(frozen=True)
class InputSpec:
    """One input of a serving signature: its name, dtype name (as numpy/TF spell it) and shape."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None


_FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}
_MAX_DOUBLE_INT = int(np.finfo(np.float64).max)
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_SUPPORTED_DTYPES = _FLOAT_DTYPES | set(_INT_RANGES) | {"bool", "string"}


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _expected_json(dtype: str) -> str:
    if dtype in _FLOAT_DTYPES:
        return "a number"
    if dtype in _INT_RANGES:
        return "an integer"
    if dtype == "bool":
        return "true or false"
    return 'a string (or {"b64": "..."})'


def _leaf_value(value: Any, dtype: str) -> Any:
    """One JSON value as the input's dtype wants it, or None when its JSON type does not fit."""
    kind = type(value)
    if dtype in _FLOAT_DTYPES:
        if kind is int:  # an integer past a double's range would overflow the array
            return value if abs(value) <= _MAX_DOUBLE_INT else None
        return value if kind is float else None
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        return value if kind is int and low <= value <= high else None
    if dtype == "bool":
        return value if kind is bool else None
    if kind is str:
        return value
    if kind is dict and len(value) == 1 and isinstance(value.get("b64"), str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def _nested_values(value: Any, dtype: str) -> Any:
    """A nested JSON list with every leaf converted, or None when a leaf does not fit."""
    if isinstance(value, list):
        items = [_nested_values(item, dtype) for item in value]
        return None if any(item is None for item in items) else items
    return _leaf_value(value, dtype)


def _plain_scalars(values: list, dtype: str) -> bool:
    """Whether every value is a plain JSON scalar of the dtype's kind (the common, fast case)."""
    kinds = set(map(type, values))
    if dtype in _FLOAT_DTYPES:
        return kinds == {float} or (kinds <= {float, int}
                                    and all(type(v) is float or abs(v) <= _MAX_DOUBLE_INT for v in values))
    if dtype == "string":
        return kinds == {str}
    if dtype == "bool":
        return kinds == {bool}
    return False


def column_to_array(values: list, spec: InputSpec) -> np.ndarray:
    """One input's values across the batch, as an array of the signature's dtype and shape."""
    dtype = spec.dtype
    if dtype not in _SUPPORTED_DTYPES:
        raise ApiError("FAILED_PRECONDITION", f"signature input {spec.name} has dtype {dtype}, which JSON cannot carry")
    per_instance_rank = None if spec.shape is None else len(spec.shape) - 1
    if per_instance_rank == 0 and _plain_scalars(values, dtype):
        converted = values
    else:
        convert = _leaf_value if per_instance_rank == 0 else _nested_values
        converted = [convert(v, dtype) for v in values]
        for index, item in enumerate(converted):
            if item is None and type(values[index]) is int and dtype in _FLOAT_DTYPES:
                raise invalid(f"instances[{index}].{spec.name} is too large for {dtype}")
            if item is None:
                raise invalid(
                    f"instances[{index}].{spec.name} must be {_expected_json(dtype)} ({dtype}), "
                    f"got {json_type_name(values[index])} {json.dumps(values[index])[:80]}"
                )
    if dtype == "string":
        if per_instance_rank == 0:
            array = np.empty(len(converted), dtype=object)
            array[:] = converted
            return array
        return _stack_column(converted, spec, dtype=object)
    if dtype in _FLOAT_DTYPES and dtype != "float64":
        narrow = _stack_column(converted, spec, dtype=np.float16 if dtype == "float16" else np.float32)
        if np.isinf(narrow).any():
            overflow = np.isinf(narrow) & np.isfinite(np.array(converted, dtype=np.float64))
            if overflow.any():
                index = int(np.argwhere(overflow)[0][0])
                raise invalid(f"instances[{index}].{spec.name} does not fit in {dtype} without loss")
        return narrow
    return _stack_column(converted, spec, dtype=np.dtype(dtype))


def _stack_column(values: list, spec: InputSpec, *, dtype) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # overflow is checked and reported by the caller
            array = np.array(values, dtype=dtype)
    except ValueError as exc:
        raise invalid(f"instances disagree on the shape of {spec.name}: {exc}") from None
    if spec.shape is not None:
        expected = spec.shape[1:]
        actual = array.shape[1:]
        if len(actual) != len(expected) or any(e is not None and e != a for e, a in zip(expected, actual)):
            shown = ["None" if d is None else str(d) for d in expected]
            raise invalid(f"each instance's {spec.name} must have shape [{', '.join(shown)}], got {list(actual)}")
    return array


def instances_to_columns(instances: Any, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Row-format instances (one JSON object per example) as one batched array per input.

    A signature with a single input also takes bare values, as TensorFlow Serving does.
    """
    if not isinstance(instances, list) or not instances:
        raise invalid('"instances" must be a non-empty list')
    for spec in specs:
        if spec.shape is not None and len(spec.shape) == 0:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"signature input {spec.name} has no batch dimension, so it cannot take instances",
            )
    names = {spec.name for spec in specs}
    if len(specs) == 1 and not all(type(inst) is dict and inst.keys() == names for inst in instances):
        spec = specs[0]
        return {spec.name: column_to_array(instances, spec)}
    for index, instance in enumerate(instances):
        if type(instance) is not dict:
            raise invalid(
                f"instances[{index}] must be an object with the keys {sorted(names)}, got {json_type_name(instance)}"
            )
        if instance.keys() != names:
            missing = sorted(names - instance.keys())
            unknown = sorted(instance.keys() - names)
            problems = []
            if missing:
                problems.append(f"missing {missing}")
            if unknown:
                problems.append(f"unknown {unknown}")
            raise invalid(f"instances[{index}] must have the keys {sorted(names)}: {'; '.join(problems)}")
    return {spec.name: column_to_array([inst[spec.name] for inst in instances], spec) for spec in specs}


def tf_serving_float_values(array: np.ndarray) -> list:
    """Float32 values as TensorFlow Serving writes them, as (nested) Python lists.

    TensorFlow Serving writes six significant digits when they read back as the same float32,
    and nine otherwise, so 0.2f is written 0.2 rather than 0.20000000298023224.
    """
    flat32 = np.asarray(array, dtype=np.float32).ravel()
    exact_values = flat32.tolist()
    values = [float(f"{v:.6g}") for v in exact_values]
    for index in np.flatnonzero(np.array(values, dtype=np.float32) != flat32).tolist():
        value = exact_values[index]
        values[index] = float(f"{value:.9g}") if math.isfinite(value) else value
    if np.ndim(array) == 1:
        return values
    holder = np.empty(len(values), dtype=object)
    holder[:] = values
    return holder.reshape(np.shape(array)).tolist()


def _output_values(name: str, array: np.ndarray) -> list:
    """One output tensor as per-instance JSON values."""
    if array.dtype in (np.float32, np.float16):
        return tf_serving_float_values(array)
    if array.dtype == object:
        flat = [_bytes_json(name, item) for item in array.ravel().tolist()]
        holder = np.empty(len(flat), dtype=object)
        holder[:] = flat
        return holder.reshape(array.shape).tolist()
    return array.tolist()


def _bytes_json(name: str, value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    if not name.endswith("_bytes"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def predictions_from_outputs(outputs: Mapping[str, np.ndarray]) -> list:
    """Signature outputs in TensorFlow Serving's row format.

    One output: a list with one value per instance. Several: a list of one object per instance,
    keyed by output name. Every output must be batched the same way.
    """
    if not outputs:
        raise ApiError("FAILED_PRECONDITION", "the serving signature returned no outputs")
    sizes = {}
    for name, array in outputs.items():
        if np.ndim(array) == 0:
            raise ApiError("FAILED_PRECONDITION", f"output {name} has no batch dimension")
        sizes[name] = np.shape(array)[0]
    if len(set(sizes.values())) > 1:
        raise ApiError("FAILED_PRECONDITION", f"outputs disagree on the batch size: {sizes}")
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return _output_values(name, array)
    columns = {name: _output_values(name, array) for name, array in sorted(outputs.items())}
    batch = next(iter(sizes.values()))
    return [{name: values[i] for name, values in columns.items()} for i in range(batch)]


def check_prediction_count(predictions: Any, instances: int) -> list:
    """The predictions, if there is one per instance; a model that answers otherwise is refused."""
    if not isinstance(predictions, list) or len(predictions) != instances:
        count = len(predictions) if isinstance(predictions, list) else type(predictions).__name__
        raise ApiError("FAILED_PRECONDITION", f"the model answered {count} predictions for {instances} instances")
    return predictions
