"""The run request: what a user, the scheduler or a trigger file asks the chain to do.

A request is a JSON object checked against `RUN_REQUEST_SCHEMA` (JSON Schema draft 2020-12, applied
with jsonschema); every key is optional and missing ones take `DEFAULTS`. Whatever arrives (random
bytes, a huge body, NaN, duplicate keys, an array, null) ends as either a `RunRequest` or an
`InvalidRunRequest` whose text is one line a person can act on, because that line is what the run
ledger records for a rejected request.
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
}

# jsonschema applies patterns with Python's re, where '$' also matches before a final newline;
# refusing newlines outright keeps "bw\n" from passing as "bw".
_HAS_NEWLINE = {"pattern": "\n"}

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


class InvalidRunRequest(ValueError):
    """A run request that cannot be run; str() is a one-line reason."""


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

    def to_dict(self) -> dict[str, Any]:
        """The request as its JSON object (camelCase keys); every key present but an unset source."""
        return {_CAMEL[key]: value for key, value in asdict(self).items() if value is not None}

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
    order = list(RUN_REQUEST_SCHEMA["properties"])
    errors = sorted(
        _validator().iter_errors(value),
        key=lambda e: (
            order.index(e.path[0]) if e.path and e.path[0] in order else -1,
            e.validator != "type",  # a wrong type explains every other complaint about a value
            str(e.validator),
        ),
    )
    if errors:
        raise InvalidRunRequest(_describe(errors[0]))


def _describe(error: Any) -> str:
    """One line for one schema violation, naming the key and the rule it breaks."""
    field = str(error.path[0]) if error.path else "request"
    instance = error.instance
    rule = error.validator
    if rule == "type":
        expected = _ARTICLES.get(str(error.validator_value), str(error.validator_value))
        return f"{field}: must be {expected}, got {_json_kind(instance)} {_short(instance)}"
    if rule == "minimum":
        return f"{field}: {_short(instance)} is less than the minimum of {error.validator_value}"
    if rule == "maximum":
        return f"{field}: {_short(instance)} is greater than the maximum of {error.validator_value}"
    if rule == "exclusiveMinimum":
        return f"{field}: {_short(instance)} must be greater than {error.validator_value}"
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
