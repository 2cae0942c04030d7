"""The run request: what a user, the scheduler or a trigger file asks the chain to do.

A request is a JSON object checked against `RUN_REQUEST_SCHEMA` (JSON Schema draft 2020-12, applied
with jsonschema); every key is optional and missing ones take `DEFAULTS`. Whatever arrives (random
bytes, a huge body, NaN, duplicate keys, an array, null) ends as either a `RunRequest` or an
`InvalidRunRequest` whose text is one line a person can act on, because that line is what the run
ledger records for a rejected request.

The optional "release" object overrides the release policy's thresholds for this run only
(`ReleaseOverrides`); it cannot switch the gate off.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

MAX_REQUEST_BYTES = 64 * 1024

SOURCE_BIGQUERY = "bigquery"
# A Parquet or CSV object under data/ in the pipeline bucket: no scheme, no leading '/', no
# backslash, no '..', no empty or hidden path segment.
SOURCE_PATH_PATTERN = (
    r"^data/(?!.*\.\.)(?:[A-Za-z0-9_=-][A-Za-z0-9._=-]*/)*"
    r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*\.(?:parquet|csv)$"
)
MODEL_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"

# None: not set, so the stage that uses it decides (the trainer's own defaults, tuned in
# trainer/task.py; the platform's default source).
DEFAULTS: dict[str, Any] = {
    "limit": 200_000,
    "numTrainExamples": None,
    "numEvalExamples": None,
    "numEvals": None,
    "batchSize": None,
    "learningRate": None,
    "modelName": "babyweight",
    # None: the platform's default source (BigQuery in the cloud, the sample in the local bucket).
    "source": None,
    "seed": None,
    # None: the release policy's configured thresholds (functions.release.policy) stand.
    "release": None,
}

# jsonschema applies patterns with Python's re, where '$' also matches before a final newline;
# refusing newlines outright keeps "bw\n" from passing as "bw".
_HAS_NEWLINE = {"pattern": "\n"}

# Per-run overrides of the release policy's thresholds (functions.release.policy.ReleasePolicy):
# each optional, each bounded so that any accepted value makes a valid policy. There is no way
# to skip the gate from a request: putting an earlier model back is rollback's job, not a run's.
RELEASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # The candidate must beat predicting the mean by this fraction of the mean's RMSE.
        "minImprovementOverMean": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        # How much worse than the champion (a fraction of its RMSE) overall and per slice.
        "tolerance": {"type": "number", "minimum": 0, "maximum": 1},
        "sliceTolerance": {"type": "number", "minimum": 0, "maximum": 1},
        "minSliceRows": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "canaryPercent": {"type": "integer", "minimum": 1, "maximum": 50},
        "bakeSeconds": {"type": "integer", "minimum": 1, "maximum": 86_400},
        "dataCheck": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # Rows read may differ from the last good run's by this fraction of them.
                "rowsReadTolerance": {"type": "number", "minimum": 0, "maximum": 10},
                # Absolute bands around the last good run's shares (0.05: five points).
                "droppedShareTolerance": {"type": "number", "minimum": 0, "maximum": 1},
                "splitShareTolerance": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
    },
}

RUN_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://mlrelay.dev/schemas/run-request.json",
    "title": "mlrelay run request",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 50_000_000},
        "numTrainExamples": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
        "numEvalExamples": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "numEvals": {"type": "integer", "minimum": 1, "maximum": 100},
        "batchSize": {"type": "integer", "minimum": 1, "maximum": 65536},
        "learningRate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "modelName": {"type": "string", "pattern": MODEL_NAME_PATTERN, "not": _HAS_NEWLINE},
        "source": {
            "type": "string",
            "not": _HAS_NEWLINE,
            "anyOf": [
                {"const": SOURCE_BIGQUERY},
                {"pattern": SOURCE_PATH_PATTERN, "maxLength": 1024},
            ],
        },
        # numpy seeds must fit in 32 bits, so the trainer can use any seed it is given.
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "release": RELEASE_SCHEMA,
    },
}

# What each rule means, for messages the schema's own wording would make obscure.
_FIELD_RULES = {
    "modelName": "must be 1-63 characters of lowercase letters, digits and '-', starting with a letter",
    "source": (
        "must be \"bigquery\" or the path of a .parquet or .csv object under data/ in the bucket "
        "(no scheme, no leading '/', no '..', no backslash)"
    ),
}

_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
               int: "integer", float: "number"}
_ARTICLES = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a JSON object"}

# RunRequest field -> the trainer's command-line flag (trainer/task.py).
TRAINER_ARGS: dict[str, str] = {
    "num_train_examples": "--num-train-examples",
    "num_eval_examples": "--num-eval-examples",
    "num_evals": "--num-evals",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "seed": "--seed",
}

_CAMEL = {
    "limit": "limit",
    "num_train_examples": "numTrainExamples",
    "num_eval_examples": "numEvalExamples",
    "num_evals": "numEvals",
    "batch_size": "batchSize",
    "learning_rate": "learningRate",
    "model_name": "modelName",
    "source": "source",
    "seed": "seed",
}

# ReleaseOverrides field -> its key in the request's "release" object ("dataCheck." nests it).
RELEASE_KEYS: dict[str, str] = {
    "min_improvement_over_mean": "minImprovementOverMean",
    "tolerance": "tolerance",
    "slice_tolerance": "sliceTolerance",
    "min_slice_rows": "minSliceRows",
    "canary_percent": "canaryPercent",
    "bake_seconds": "bakeSeconds",
    "rows_read_tolerance": "dataCheck.rowsReadTolerance",
    "dropped_share_tolerance": "dataCheck.droppedShareTolerance",
    "split_share_tolerance": "dataCheck.splitShareTolerance",
}
_RELEASE_INTS = frozenset({"min_slice_rows", "canary_percent", "bake_seconds"})


class InvalidRunRequest(ValueError):
    """A run request that cannot be run; str() is a one-line reason."""


@dataclass(frozen=True)
class ReleaseOverrides:
    """The release thresholds one request sets; None leaves the configured threshold standing.

    Flat, with the names of `functions.release.policy.ReleasePolicy`'s fields, so that applying
    them is a field-by-field replace; the request's JSON nests the data check's three under
    "dataCheck" (`RELEASE_KEYS`).
    """

    min_improvement_over_mean: float | None = None
    tolerance: float | None = None
    slice_tolerance: float | None = None
    min_slice_rows: int | None = None
    canary_percent: int | None = None
    bake_seconds: int | None = None
    rows_read_tolerance: float | None = None
    dropped_share_tolerance: float | None = None
    split_share_tolerance: float | None = None

    def given(self) -> dict[str, int | float]:
        """The fields this request sets, by field name."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """The "release" object of the request (camelCase, "dataCheck" nested), set keys only."""
        document: dict[str, Any] = {}
        for field_name, value in self.given().items():
            *parents, key = RELEASE_KEYS[field_name].split(".")
            node = document
            for parent in parents:
                node = node.setdefault(parent, {})
            node[key] = value
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "ReleaseOverrides | None":
        """Overrides from a "release" object that passed the schema; None when it sets nothing."""
        values: dict[str, Any] = {}
        for field_name, path in RELEASE_KEYS.items():
            node: Any = document
            for key in path.split("."):
                node = node.get(key) if isinstance(node, Mapping) else None
            if node is not None:
                values[field_name] = int(node) if field_name in _RELEASE_INTS else float(node)
        return cls(**values) if values else None


@dataclass(frozen=True)
class RunRequest:
    """A validated run request with every default filled in."""

    limit: int
    num_train_examples: int | None
    num_eval_examples: int | None
    num_evals: int | None
    batch_size: int | None
    learning_rate: float | None
    model_name: str
    source: str | None
    seed: int | None
    # None: the request overrides no release threshold (an empty "release" object reads the same).
    release: ReleaseOverrides | None = None

    def to_dict(self) -> dict[str, Any]:
        """The request as its JSON object (camelCase keys); only the keys that are set."""
        document = {_CAMEL[key]: getattr(self, key) for key in _CAMEL if getattr(self, key) is not None}
        if self.release is not None and self.release.given():
            document["release"] = self.release.to_dict()
        return document

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, compact) that `parse_run_request` reads back equal."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def trainer_args(self) -> list[str]:
        """The trainer flags this request sets, e.g. ['--num-train-examples', '1000000', ...]."""
        args: list[str] = []
        for field_name, flag in TRAINER_ARGS.items():
            if getattr(self, field_name) is not None:
                args += [flag, _arg_text(getattr(self, field_name))]
        return args


def parse_run_request(raw: bytes | bytearray | memoryview | str | Mapping[str, Any] | None) -> RunRequest:
    """Validate a request (JSON bytes or text, or an already-decoded object) and fill defaults."""
    text = _as_text(raw)
    if not text.strip():
        raise InvalidRunRequest("empty request")
    value = _load_json(text)
    _validate(value)
    merged = {**DEFAULTS, **value}
    return RunRequest(
        limit=int(merged["limit"]),
        num_train_examples=_optional(int, merged["numTrainExamples"]),
        num_eval_examples=_optional(int, merged["numEvalExamples"]),
        num_evals=_optional(int, merged["numEvals"]),
        batch_size=_optional(int, merged["batchSize"]),
        learning_rate=_optional(float, merged["learningRate"]),
        model_name=merged["modelName"],
        source=merged["source"],
        seed=_optional(int, merged["seed"]),
        release=None if merged["release"] is None else ReleaseOverrides.from_dict(merged["release"]),
    )


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _as_text(raw: Any) -> str:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if len(data) > MAX_REQUEST_BYTES:
            raise InvalidRunRequest("request larger than 64 KiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidRunRequest(f"not UTF-8 (byte {err.start} is invalid)") from None
    elif isinstance(raw, str):
        text = raw
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidRunRequest("not UTF-8 (the text holds an unpaired surrogate)") from None
        if size > MAX_REQUEST_BYTES:
            raise InvalidRunRequest("request larger than 64 KiB")
    else:
        # An object handed over in Python (the scheduler's payload, a test): the same rules apply
        # to its JSON form, which also refuses NaN, infinities and values JSON cannot hold.
        try:
            text = json.dumps(raw, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as err:
            raise InvalidRunRequest(f"not JSON: {_one_line(str(err) or type(err).__name__)}") from None
        if len(text.encode("utf-8", "surrogatepass")) > MAX_REQUEST_BYTES:
            raise InvalidRunRequest("request larger than 64 KiB")
    return text.removeprefix("\ufeff")


class _DuplicateKey(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as dup:
        raise InvalidRunRequest(f"duplicate key {_short(dup.args[0])}") from None
    except RecursionError:
        raise InvalidRunRequest("not JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        raise InvalidRunRequest(f"not JSON: {_one_line(str(err))}") from None


@lru_cache(maxsize=1)
def _validator() -> Any:
    # Imported here so that modules importing events.run_request for its types start fast.
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(RUN_REQUEST_SCHEMA)
    return Draft202012Validator(RUN_REQUEST_SCHEMA)


def _validate(value: Any) -> None:
    if not isinstance(value, dict):
        raise InvalidRunRequest(f"request must be a JSON object, not {_json_kind(value)}")
    unknown = sorted(key for key in value if key not in RUN_REQUEST_SCHEMA["properties"])
    if unknown:
        keys = ", ".join(_short(key) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise InvalidRunRequest(f"unknown key{'s' if len(unknown) > 1 else ''} {keys}")
    errors = sorted(_validator().iter_errors(value), key=_error_order)
    if errors:
        raise InvalidRunRequest(_describe(errors[0]))


def _error_order(error: Any) -> tuple:
    """Which complaint to report first: by key in schema order (an object's own keys, e.g.
    "release", before those inside it), then a wrong type first, as it explains every other
    complaint about a value."""
    position: list[int] = []
    schema: Any = RUN_REQUEST_SCHEMA
    for key in error.path:
        order = list(schema.get("properties", {})) if isinstance(schema, dict) else []
        position.append(order.index(key) if key in order else -1)
        schema = schema["properties"][key] if key in order else {}
    return (position, error.validator != "type", str(error.validator))


def _describe(error: Any) -> str:
    """One line for one schema violation, naming the key (dotted, e.g. release.canaryPercent)
    and the rule it breaks."""
    field = ".".join(str(key) for key in error.path) if error.path else "request"
    instance = error.instance
    rule = error.validator
    if rule == "additionalProperties":  # inside an object; the request's own keys are checked first
        unknown = sorted(key for key in instance if key not in error.schema.get("properties", {}))
        keys = ", ".join(_short(key) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return f"{field}: unknown key{'s' if len(unknown) > 1 else ''} {keys}"
    if rule == "type":
        expected = _ARTICLES.get(str(error.validator_value), str(error.validator_value))
        return f"{field}: must be {expected}, got {_json_kind(instance)} {_short(instance)}"
    if rule == "minimum":
        return f"{field}: {_short(instance)} is less than the minimum of {error.validator_value}"
    if rule == "maximum":
        return f"{field}: {_short(instance)} is greater than the maximum of {error.validator_value}"
    if rule == "exclusiveMinimum":
        return f"{field}: {_short(instance)} must be greater than {error.validator_value}"
    if rule == "exclusiveMaximum":
        return f"{field}: {_short(instance)} must be less than {error.validator_value}"
    if field in _FIELD_RULES:
        return f"{field}: {_short(instance)} {_FIELD_RULES[field]}"
    return f"{field}: {_one_line(error.message)}"


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """A value as it would read in JSON, cut short so a message stays one short line."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    if isinstance(value, str):
        text = "'" + text[1:-1] + "'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _arg_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
