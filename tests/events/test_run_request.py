"""Run requests: defaults, every rule with its one-line reason, and fuzzing for stray exceptions."""
import json
import math
import random

import pytest

from events.run_request import (
    DEFAULTS,
    MAX_REQUEST_BYTES,
    RUN_REQUEST_SCHEMA,
    TRAINER_ARGS,
    InvalidRunRequest,
    ReleaseOverrides,
    RunRequest,
    parse_run_request,
)


def reason(raw) -> str:
    with pytest.raises(InvalidRunRequest) as caught:
        parse_run_request(raw)
    text = str(caught.value)
    assert "\n" not in text and 0 < len(text) <= 300
    return text


def test_empty_object_gets_every_default():
    request = parse_run_request(b"{}")
    assert request.to_dict() == {k: v for k, v in DEFAULTS.items() if v is not None}
    assert request.source is None  # the platform's default source decides
    assert parse_run_request('{"source": "bigquery"}').source == "bigquery"


def test_given_values_override_defaults_and_keep_types():
    request = parse_run_request(
        '{"limit": 5000, "batchSize": 64.0, "learningRate": 0.05, "modelName": "bw-2",'
        ' "source": "data/natality/part-0.parquet", "seed": 7}'
    )
    assert request.limit == 5000 and request.batch_size == 64 and isinstance(request.batch_size, int)
    assert request.learning_rate == 0.05 and request.model_name == "bw-2" and request.seed == 7
    assert request.source == "data/natality/part-0.parquet"
    assert request.num_evals == DEFAULTS["numEvals"]


def test_dict_and_text_forms_agree_and_to_json_round_trips():
    as_dict = parse_run_request({"numEvals": 3, "source": "data/x.csv"})
    assert as_dict == parse_run_request('{"numEvals": 3, "source": "data/x.csv"}')
    assert parse_run_request(as_dict.to_json()) == as_dict
    assert json.loads(as_dict.to_json())["numEvals"] == 3


def test_trainer_args_follow_the_trainer_flags():
    request = parse_run_request({"numTrainExamples": 1000, "learningRate": 0.01, "seed": 3})
    args = request.trainer_args()
    pairs = dict(zip(args[::2], args[1::2]))
    # Only what the request sets: the trainer's own defaults decide the rest.
    assert set(pairs) == {"--num-train-examples", "--learning-rate", "--seed"} <= set(TRAINER_ARGS.values())
    assert pairs["--num-train-examples"] == "1000"
    assert pairs["--learning-rate"] == "0.01"
    assert pairs["--seed"] == "3"
    assert all(isinstance(a, str) for a in args)
    assert parse_run_request("{}").trainer_args() == []


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"batchSize": 0}', "batchSize: 0 is less than the minimum of 1"),
        ('{"batchSize": 65537}', "batchSize: 65537 is greater than the maximum of 65536"),
        ('{"limit": 50000001}', "limit: 50000001 is greater than the maximum of 50000000"),
        ('{"numTrainExamples": 1000000001}', "numTrainExamples: 1000000001 is greater than the maximum of 1000000000"),
        ('{"numEvalExamples": 0}', "numEvalExamples: 0 is less than the minimum of 1"),
        ('{"numEvals": 101}', "numEvals: 101 is greater than the maximum of 100"),
        ('{"learningRate": 0}', "learningRate: 0 must be greater than 0"),
        ('{"learningRate": 1.5}', "learningRate: 1.5 is greater than the maximum of 1"),
        ('{"seed": -1}', "seed: -1 is less than the minimum of 0"),
        ('{"batchSize": "32"}', "batchSize: must be an integer, got string '32'"),
        ('{"batchSize": 3.5}', "batchSize: must be an integer, got number 3.5"),
        ('{"batchSize": true}', "batchSize: must be an integer, got boolean true"),
        ('{"learningRate": "fast"}', "learningRate: must be a number, got string 'fast'"),
        ('{"modelName": null}', "modelName: must be a string, got null null"),
        ('{"foo": 1}', "unknown key 'foo'"),
        ('{"foo": 1, "bar": 2}', "unknown keys 'bar', 'foo'"),
        ("", "empty request"),
        ("   \n", "empty request"),
        ("[]", "request must be a JSON object, not array"),
        ("null", "request must be a JSON object, not null"),
        ('"limit"', "request must be a JSON object, not string"),
        ("42", "request must be a JSON object, not integer"),
        ('{"limit": 5, "limit": 6}', "duplicate key 'limit'"),
    ],
)
def test_each_rule_has_a_readable_reason(raw, expected):
    assert reason(raw) == expected


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_not_json(literal):
    assert reason('{"learningRate": %s}' % literal) == f"not JSON: {literal} is not a JSON number"


def test_overflowing_numbers_fail_their_bounds():
    assert reason('{"learningRate": 1e400}') == "learningRate: Infinity is greater than the maximum of 1"
    assert reason('{"limit": 1e400}').startswith("limit: must be an integer, got number")


def test_python_objects_with_nan_or_odd_types_are_refused():
    assert reason({"learningRate": math.nan}).startswith("not JSON:")
    assert reason({"limit": {1, 2}}).startswith("not JSON:")
    assert reason(None) == "request must be a JSON object, not null"
    assert reason([1]) == "request must be a JSON object, not array"


@pytest.mark.parametrize(
    "name", ["Babyweight", "1model", "-x", "", "a" * 64, "bw_2", "bw.2", "bw 2", "bw\n"]
)
def test_model_names_follow_the_label_rules(name):
    assert reason({"modelName": name}).startswith("modelName: ")


def test_longest_model_name_is_accepted():
    assert parse_run_request({"modelName": "a" + "b" * 62}).model_name == "a" + "b" * 62


@pytest.mark.parametrize(
    "source",
    ["data/natality.parquet", "data/a/b/c.csv", "data/year=2005/part-0.parquet", "bigquery"],
)
def test_sources_under_data_are_accepted(source):
    assert parse_run_request({"source": source}).source == source


@pytest.mark.parametrize(
    "source",
    [
        "/data/x.parquet", "gs://bucket/data/x.parquet", "data/../secrets.csv", "data/a/../../x.csv",
        "data\\x.csv", "runs/x.parquet", "data/x.json", "data/", "data//x.csv", "data/.hidden.csv",
        "BigQuery", "data/x.parquet ", "data/x.csv\n", "s3://data/x.csv", "data/x.PARQUET", "d" * 2000 + ".csv",
    ],
)
def test_sources_outside_data_or_not_tables_are_refused(source):
    text = reason({"source": source})
    assert text.startswith("source: ") and "under data/" in text


def test_size_and_encoding_limits():
    padding = " " * MAX_REQUEST_BYTES
    assert reason(b"{}" + padding.encode()) == "request larger than 64 KiB"
    assert reason("{}" + padding) == "request larger than 64 KiB"
    assert reason({"modelName": "a" * MAX_REQUEST_BYTES}) == "request larger than 64 KiB"
    assert reason(b'{"modelName": "\xff"}') == "not UTF-8 (byte 15 is invalid)"
    assert reason('{"modelName": "\ud800"}').startswith("not UTF-8")
    assert reason("[" * 60000) == "not JSON: nested too deeply"


def test_a_utf8_byte_order_mark_is_tolerated():
    assert parse_run_request("\ufeff{}".encode()) == parse_run_request(b"{}")


def test_schema_is_draft_2020_12_and_closed():
    assert RUN_REQUEST_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert RUN_REQUEST_SCHEMA["additionalProperties"] is False
    assert set(RUN_REQUEST_SCHEMA["properties"]) == set(DEFAULTS)


def _random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(10 if depth < 3 else 7)
    if choice == 0:
        return rng.randint(-10**12, 10**12)
    if choice == 1:
        return rng.choice([0, 1, -1, 2**31, 2**32, 2**63, 65536, 65537, 50_000_000])
    if choice == 2:
        return rng.uniform(-2, 2)
    if choice == 3:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if choice == 4:
        return rng.choice(["bigquery", "data/x.csv", "data/../x.csv", "babyweight", "", "gs://b/x"])
    if choice == 5:
        return rng.choice([True, False, None])
    if choice == 6:
        return rng.choice([1e308, -0.0, 0.5, 1.0])
    if choice == 7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {str(rng.randrange(5)): _random_value(rng, depth + 1) for _ in range(rng.randrange(3))}


def test_fuzzed_requests_end_in_a_request_or_a_one_line_reason():
    rng = random.Random(20261127)
    keys = list(DEFAULTS) + ["foo", "Limit", ""]
    outcomes = {"valid": 0, "invalid": 0}
    for _ in range(3000):
        kind = rng.randrange(4)
        if kind == 0:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        elif kind == 1:
            request = {rng.choice(keys): _random_value(rng) for _ in range(rng.randrange(4))}
            raw = json.dumps(request)
            if rng.random() < 0.3 and len(raw) > 2:  # damage the text
                cut = rng.randrange(len(raw))
                raw = raw[:cut] + rng.choice(['"', "{", ",", "\\", "NaN", "]", ""]) + raw[cut + 1:]
        elif kind == 2:
            raw = {rng.choice(keys): _random_value(rng) for _ in range(rng.randrange(4))}
        else:
            given = {k: v for k, v in DEFAULTS.items() if v is not None}
            valid = {k: given[k] for k in rng.sample(list(given), rng.randrange(len(given)))}
            raw = json.dumps(valid).encode()
        try:
            result = parse_run_request(raw)
        except InvalidRunRequest as err:
            text = str(err)
            assert text and "\n" not in text and len(text) <= 300, text
            outcomes["invalid"] += 1
        else:
            assert isinstance(result, RunRequest)
            assert parse_run_request(result.to_json()) == result
            outcomes["valid"] += 1
    assert outcomes["valid"] > 300 and outcomes["invalid"] > 1000


# --- release: per-run overrides of the release policy's thresholds ------------------------------


def test_release_overrides_are_parsed_flat_and_written_back_nested():
    request = parse_run_request(
        '{"release": {"minImprovementOverMean": 0.1, "tolerance": 0, "sliceTolerance": 0.05,'
        ' "minSliceRows": 50.0, "canaryPercent": 25, "bakeSeconds": 3600,'
        ' "dataCheck": {"rowsReadTolerance": 2, "droppedShareTolerance": 0.1, "splitShareTolerance": 0.02}}}'
    )
    assert request.release == ReleaseOverrides(
        min_improvement_over_mean=0.1, tolerance=0.0, slice_tolerance=0.05, min_slice_rows=50,
        canary_percent=25, bake_seconds=3600, rows_read_tolerance=2.0, dropped_share_tolerance=0.1,
        split_share_tolerance=0.02)
    assert isinstance(request.release.min_slice_rows, int) and isinstance(request.release.tolerance, float)
    assert request.to_dict()["release"] == {
        "minImprovementOverMean": 0.1, "tolerance": 0.0, "sliceTolerance": 0.05, "minSliceRows": 50,
        "canaryPercent": 25, "bakeSeconds": 3600,
        "dataCheck": {"rowsReadTolerance": 2.0, "droppedShareTolerance": 0.1, "splitShareTolerance": 0.02}}
    assert parse_run_request(request.to_json()) == request


def test_a_partial_release_sets_only_its_keys():
    request = parse_run_request({"release": {"dataCheck": {"splitShareTolerance": 0.1}}})
    assert request.release == ReleaseOverrides(split_share_tolerance=0.1)
    assert request.release.given() == {"split_share_tolerance": 0.1}
    assert request.to_dict()["release"] == {"dataCheck": {"splitShareTolerance": 0.1}}


@pytest.mark.parametrize("raw", ['{}', '{"release": {}}', '{"release": {"dataCheck": {}}}'])
def test_no_release_or_an_empty_one_overrides_nothing(raw):
    request = parse_run_request(raw)
    assert request.release is None
    assert "release" not in request.to_dict()
    assert parse_run_request(request.to_json()) == request == parse_run_request("{}")


@pytest.mark.parametrize(
    "release, expected",
    [
        ({"skipGate": True}, "release: unknown key 'skipGate'"),
        ({"skipGate": True, "force": 1}, "release: unknown keys 'force', 'skipGate'"),
        ({"dataCheck": {"rowsRead": 1}}, "release.dataCheck: unknown key 'rowsRead'"),
        ({"canaryPercent": 0}, "release.canaryPercent: 0 is less than the minimum of 1"),
        ({"canaryPercent": 51}, "release.canaryPercent: 51 is greater than the maximum of 50"),
        ({"canaryPercent": 10.5}, "release.canaryPercent: must be an integer, got number 10.5"),
        ({"canaryPercent": "10"}, "release.canaryPercent: must be an integer, got string '10'"),
        ({"bakeSeconds": 0}, "release.bakeSeconds: 0 is less than the minimum of 1"),
        ({"bakeSeconds": 86401}, "release.bakeSeconds: 86401 is greater than the maximum of 86400"),
        ({"minImprovementOverMean": 1}, "release.minImprovementOverMean: 1 must be less than 1"),
        ({"minImprovementOverMean": -0.01}, "release.minImprovementOverMean: -0.01 is less than the minimum of 0"),
        ({"tolerance": -0.001}, "release.tolerance: -0.001 is less than the minimum of 0"),
        ({"tolerance": 1.5}, "release.tolerance: 1.5 is greater than the maximum of 1"),
        ({"tolerance": True}, "release.tolerance: must be a number, got boolean true"),
        ({"sliceTolerance": None}, "release.sliceTolerance: must be a number, got null null"),
        ({"minSliceRows": 0}, "release.minSliceRows: 0 is less than the minimum of 1"),
        ({"dataCheck": {"rowsReadTolerance": 11}},
         "release.dataCheck.rowsReadTolerance: 11 is greater than the maximum of 10"),
        ({"dataCheck": {"droppedShareTolerance": -1}},
         "release.dataCheck.droppedShareTolerance: -1 is less than the minimum of 0"),
        ({"dataCheck": {"splitShareTolerance": "wide"}},
         "release.dataCheck.splitShareTolerance: must be a number, got string 'wide'"),
        ({"dataCheck": []}, "release.dataCheck: must be a JSON object, got array []"),
        ([], "release: must be a JSON object, got array []"),
        ("strict", "release: must be a JSON object, got string 'strict'"),
        # Several faults: the release object's own keys in schema order, a wrong type first.
        ({"bakeSeconds": 0, "canaryPercent": 99}, "release.canaryPercent: 99 is greater than the maximum of 50"),
        ({"dataCheck": {"x": 1}, "tolerance": "a"}, "release.tolerance: must be a number, got string 'a'"),
    ],
)
def test_each_release_rule_has_a_readable_reason(release, expected):
    assert reason({"release": release}) == expected


def test_release_faults_come_after_those_of_earlier_keys():
    assert reason({"release": {"canaryPercent": 0}, "limit": 0}) == "limit: 0 is less than the minimum of 1"


def test_nan_in_release_is_not_json():
    assert reason('{"release": {"tolerance": NaN}}') == "not JSON: NaN is not a JSON number"
    assert reason('{"release": {"tolerance": 1e400}}') == "release.tolerance: Infinity is greater than the maximum of 1"


def test_release_keys_cover_the_schema_exactly():
    from events.run_request import RELEASE_KEYS, RELEASE_SCHEMA

    def leaves(schema, prefix=""):
        for key, sub in schema["properties"].items():
            if sub.get("type") == "object":
                assert sub["additionalProperties"] is False
                yield from leaves(sub, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert RELEASE_SCHEMA["additionalProperties"] is False
    assert sorted(leaves(RELEASE_SCHEMA)) == sorted(RELEASE_KEYS.values())
    assert set(RELEASE_KEYS) == set(ReleaseOverrides.__dataclass_fields__)


def test_fuzzed_release_objects_round_trip_or_give_one_line():
    rng = random.Random(31337)
    keys = ["minImprovementOverMean", "tolerance", "sliceTolerance", "minSliceRows", "canaryPercent",
            "bakeSeconds", "dataCheck", "skipGate"]
    inner = ["rowsReadTolerance", "droppedShareTolerance", "splitShareTolerance", "other"]
    valid = 0
    for _ in range(2000):
        release = {}
        for key in rng.sample(keys, rng.randrange(len(keys))):
            if key == "dataCheck" and rng.random() < 0.8:
                release[key] = {k: rng.choice([0, 0.05, 1, 11, -1, "x", None]) for k in rng.sample(inner, 2)}
            else:
                release[key] = rng.choice([0, 1, 0.5, 0.999, 10, 50, 51, 900, 86400, 86401, -1, True, "1", None, []])
        try:
            request = parse_run_request({"release": release})
        except InvalidRunRequest as err:
            assert "\n" not in str(err) and len(str(err)) <= 300
        else:
            valid += 1
            assert parse_run_request(request.to_json()) == request
    assert valid > 50
