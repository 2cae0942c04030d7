"""Cloud Monitoring's timeSeries.list, locally: the filter and parameters it takes (and refuses), the
ListTimeSeriesResponse it answers (held against the monitoring v3 discovery document), and the
figures it serves from the local endpoint's own counting of real predictions.

The test that stops a deployed model's container uses ModelService's private ``_servers``; a
public way to stop one is being added to the registry.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest

from functions.platform import TransientError
from functions.serving_metrics import MonitoringServingMetrics, ServingMetricsRequestError
from local_cloud import discovery
from local_cloud.monitoring import (
    ERROR_COUNT,
    LIST_METHOD_ID,
    PREDICTION_COUNT,
    PREDICTION_LATENCIES,
    SeriesFilter,
    list_time_series,
    parse_filter,
    parse_list_request,
)
from local_cloud.monitoring.time_series import parse_timestamp
from local_cloud.vertex.serving_figures import ServingFigures
from model_server.errors import ApiError
from tests.local_cloud.vertex.conftest import BABY, LOCATION, PARENT, PROJECT, deployed_version

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z
ENDPOINT_TERMS = 'resource.type = "aiplatform.googleapis.com/Endpoint" AND resource.labels.endpoint_id = "e1"'


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def query(metric: str = PREDICTION_COUNT, *, terms: str = ENDPOINT_TERMS, start: float = T0, end: float = T0 + 10,
          period: str = "10s", aligner: str | None = None, **more) -> dict[str, list[str]]:
    aligner = aligner or ("ALIGN_PERCENTILE_99" if metric == PREDICTION_LATENCIES else "ALIGN_SUM")
    params = {"filter": f'metric.type = "{metric}"' + (f" AND {terms}" if terms else ""),
              "interval.startTime": rfc3339(start), "interval.endTime": rfc3339(end),
              "aggregation.alignmentPeriod": period, "aggregation.perSeriesAligner": aligner, "view": "FULL"}
    params.update(more)
    return {key: [value] for key, value in params.items() if value is not None}


def refused(call) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == "INVALID_ARGUMENT"
    return caught.value.message


# --- the request --------------------------------------------------------------------------------------


def test_filters_of_the_supported_terms_are_read():
    assert parse_filter(f'metric.type = "{ERROR_COUNT}"') == SeriesFilter(ERROR_COUNT)
    assert parse_filter(f'metric.type="{PREDICTION_LATENCIES}" AND {ENDPOINT_TERMS} AND '
                        'metric.labels.deployed_model_id = "42"  AND metric.labels.latency_type = "total"') == (
        SeriesFilter(PREDICTION_LATENCIES, "aiplatform.googleapis.com/Endpoint", "e1", "42", "total"))


@pytest.mark.parametrize("text, phrase", [
    ("", "filter is required"),
    ('resource.labels.endpoint_id = "e1"', "single metric type"),
    (f'metric.type = "{PREDICTION_COUNT}" OR metric.type = "{ERROR_COUNT}"', "joined by AND"),
    (f'metric.type = "{PREDICTION_COUNT}" AND NOT resource.labels.endpoint_id = "e1"', "field = \"value\""),
    (f'metric.type = "{PREDICTION_COUNT}" AND resource.labels.endpoint_id = e1', "field = \"value\""),
    (f'metric.type = "{PREDICTION_COUNT}" AND resource.labels.endpoint_id : "e"', "field = \"value\""),
    ('metric.type = starts_with("aiplatform.googleapis.com/")', "field = \"value\""),
    (f'metric.type = "{PREDICTION_COUNT}" AND resource.labels.location = "us-central1"', "unsupported filter field"),
    (f'metric.type = "{PREDICTION_COUNT}" AND metric.type = "{ERROR_COUNT}"', "twice"),
    ('metric.type = "aiplatform.googleapis.com/prediction/online/replicas"', "serves only the metric types"),
    (f'metric.type = "{PREDICTION_COUNT}" AND resource.type = "gce_instance"', "serves only the resource type"),
])
def test_filters_outside_what_is_supported_are_refused(text, phrase):
    assert phrase in refused(lambda: parse_filter(text))


def test_the_request_parameters_are_read_in_whole_seconds():
    request = parse_list_request(query(start=T0 + 0.25, end=T0 + 9.5, period="5s", alt="json", prettyPrint="false"))
    assert (request.start_s, request.end_s, request.period_s, request.aligner) == (T0, T0 + 10, 5, "ALIGN_SUM")
    assert parse_list_request(query(ERROR_COUNT, aligner="ALIGN_DELTA")).aligner == "ALIGN_DELTA"
    assert parse_timestamp("2027-01-15T09:00:00.123456789+01:00", "x") == pytest.approx(T0 + 0.123456789)
    assert parse_timestamp("2027-01-15T08:00:00Z", "x") == T0


@pytest.mark.parametrize("changes, phrase", [
    ({"aggregation.crossSeriesReducer": "REDUCE_SUM"}, "not supported by the local Cloud Monitoring"),
    ({"pageSize": "10"}, "not supported by the local Cloud Monitoring"),
    ({"interval.start": "x"}, 'Unknown name "interval.start"'),
    ({"aggregation.perSeriesAligner": "ALIGN_P99"}, "not one of"),
    ({"view": "HEADERS"}, "HEADERS is not supported"),
    ({"view": None}, "view is required"),
    ({"interval.startTime": None}, "interval.startTime is required"),
    ({"interval.endTime": "yesterday"}, "RFC 3339"),
    ({"interval.endTime": rfc3339(T0)}, "earlier than its end"),
    ({"aggregation.alignmentPeriod": "1.5s"}, "whole seconds"),
    ({"aggregation.alignmentPeriod": "0s"}, "at least 1 second"),
    ({"aggregation.alignmentPeriod": "60"}, "not a duration"),
    ({"aggregation.alignmentPeriod": None}, "alignmentPeriod is required"),
    ({"aggregation.perSeriesAligner": None}, "ALIGN_NONE is not supported"),
    ({"aggregation.perSeriesAligner": "ALIGN_PERCENTILE_99"}, "use ALIGN_DELTA or ALIGN_SUM"),
    ({"aggregation.perSeriesAligner": "ALIGN_RATE"}, "use ALIGN_DELTA or ALIGN_SUM"),
])
def test_request_parameters_outside_what_is_supported_are_refused(changes, phrase):
    params = query()
    for key, value in changes.items():
        params.pop(key, None)
        if value is not None:
            params[key] = [value]
    assert phrase in refused(lambda: parse_list_request(params))


def test_repeated_parameters_and_latency_aligners_on_counts_or_sums_on_latencies_are_refused():
    params = query()
    params["filter"] = params["filter"] * 2
    assert "given 2 times" in refused(lambda: parse_list_request(params))
    assert "use ALIGN_PERCENTILE_99" in refused(lambda: parse_list_request(query(PREDICTION_LATENCIES,
                                                                                 aligner="ALIGN_SUM")))


def test_every_parameter_taken_is_one_of_the_discovery_documents():
    from googleapiclient.discovery_cache import get_static_doc

    document = json.loads(get_static_doc("monitoring", "v3"))
    method = document["resources"]["projects"]["resources"]["timeSeries"]["methods"]["list"]
    assert method["id"] == LIST_METHOD_ID
    for name, [value] in query().items():
        assert method["parameters"][name]["location"] == "query", name
        if "enum" in method["parameters"][name]:
            assert value in method["parameters"][name]["enum"], name


# --- the answer ---------------------------------------------------------------------------------------


def filled_figures() -> ServingFigures:
    figures = ServingFigures(clock=lambda: T0 + 60)
    for second in range(10):  # m1: one predict a second, 10 ms; an error in seconds 0 and 7
        figures.record("e1", "m1", T0 + second + 0.5, 10.0, second in (0, 7))
    for latency in (1.0, 2.0, 3.0, 4.0):  # m2: four predicts in second 8
        figures.record("e1", "m2", T0 + 8.5, latency, False)
    figures.record("e2", "m3", T0 + 5.5, 1.0, True)  # another endpoint
    return figures


def answer(figures: ServingFigures, params: dict, name: str = f"projects/{PROJECT}") -> dict:
    body = list_time_series(figures, PROJECT, LOCATION, name, parse_list_request(params))
    assert discovery.response_errors(LIST_METHOD_ID, body) == [], body
    return body


def test_counts_are_delta_int64_series_per_deployed_model_newest_point_first():
    body = answer(filled_figures(), query(period="5s"))
    resource = {"type": "aiplatform.googleapis.com/Endpoint",
                "labels": {"resource_container": PROJECT, "location": LOCATION, "endpoint_id": "e1"}}
    assert body == {"timeSeries": [
        {"metric": {"type": PREDICTION_COUNT, "labels": {"deployed_model_id": "m1"}}, "resource": resource,
         "metricKind": "DELTA", "valueType": "INT64", "points": [
             {"interval": {"startTime": rfc3339(T0 + 5), "endTime": rfc3339(T0 + 10)}, "value": {"int64Value": "5"}},
             {"interval": {"startTime": rfc3339(T0), "endTime": rfc3339(T0 + 5)}, "value": {"int64Value": "5"}}]},
        {"metric": {"type": PREDICTION_COUNT, "labels": {"deployed_model_id": "m2"}}, "resource": resource,
         "metricKind": "DELTA", "valueType": "INT64", "points": [
             {"interval": {"startTime": rfc3339(T0 + 5), "endTime": rfc3339(T0 + 10)}, "value": {"int64Value": "4"}}]},
    ]}
    errors = answer(filled_figures(), query(ERROR_COUNT, aligner="ALIGN_DELTA"))["timeSeries"]
    assert [(s["metric"]["labels"]["deployed_model_id"], [p["value"] for p in s["points"]]) for s in errors] == [
        ("m1", [{"int64Value": "2"}])]  # m2 had no error: no series


def test_latencies_are_gauge_double_p99_series_of_latency_type_total():
    body = answer(filled_figures(), query(PREDICTION_LATENCIES))
    assert [(s["metric"], s["metricKind"], s["valueType"], s["points"]) for s in body["timeSeries"]] == [
        ({"type": PREDICTION_LATENCIES, "labels": {"deployed_model_id": "m1", "latency_type": "total"}}, "GAUGE",
         "DOUBLE", [{"interval": {"startTime": rfc3339(T0 + 10), "endTime": rfc3339(T0 + 10)},
                     "value": {"doubleValue": 10.0}}]),
        ({"type": PREDICTION_LATENCIES, "labels": {"deployed_model_id": "m2", "latency_type": "total"}}, "GAUGE",
         "DOUBLE", [{"interval": {"startTime": rfc3339(T0 + 10), "endTime": rfc3339(T0 + 10)},
                     "value": {"doubleValue": 4.0}}]),
    ]


def test_label_filters_narrow_the_series_and_what_matches_nothing_answers_empty():
    figures = filled_figures()
    one = answer(figures, query(terms=ENDPOINT_TERMS + ' AND metric.labels.deployed_model_id = "m2"'))
    assert [s["metric"]["labels"]["deployed_model_id"] for s in one["timeSeries"]] == ["m2"]
    everywhere = answer(figures, query(ERROR_COUNT, terms=""))
    assert [s["resource"]["labels"]["endpoint_id"] for s in everywhere["timeSeries"]] == ["e1", "e2"]
    assert answer(figures, query(PREDICTION_LATENCIES, terms='metric.labels.latency_type = "model"')) == {}
    assert answer(figures, query(PREDICTION_COUNT, terms='metric.labels.latency_type = "total"')) == {}
    assert answer(figures, query(start=T0 - 100, end=T0 - 50)) == {}
    assert answer(ServingFigures(), query()) == {}
    with pytest.raises(ApiError) as caught:
        answer(figures, query(), name="projects/someone-else")
    assert caught.value.status == "NOT_FOUND"


# --- over HTTP, from real predictions -----------------------------------------------------------------


def list_over_http(port: int, params: dict, project: str = PROJECT) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        flat = {key: values[0] for key, values in params.items()}
        connection.request("GET", f"/v3/projects/{project}/timeSeries?{urlencode(flat)}")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def per_model(body: dict) -> dict[str, int]:
    return {s["metric"]["labels"]["deployed_model_id"]: sum(int(p["value"]["int64Value"]) for p in s["points"])
            for s in body.get("timeSeries", ())}


def test_the_endpoint_counts_its_predictions_and_serves_them_as_time_series(service_factory, saved_models):
    service, rest = service_factory()
    port = rest.connection.port
    service.create_endpoint("babyweight", "babyweight")
    rest.upload(saved_models["v1"], modelId="babyweight")
    rest.upload(saved_models["v2"], parentModel=f"{PARENT}/models/babyweight")
    champion = deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight@1", {"0": 100})
    started = time.time()
    status, body = rest.predict("babyweight", [{**BABY, "mother_age": "old"}])  # the model refuses it: a 400
    assert status == 400, body
    canary = deployed_version(rest, "babyweight", f"{PARENT}/models/babyweight@2", {"0": 50, champion: 50})

    served: Counter = Counter()
    for index in range(40):
        status, body = rest.predict("babyweight", [BABY] * (1 + index % 3))
        assert status == 200, body
        served[body["deployedModelId"]] += 1
    assert served[champion] and served[canary]
    service._servers[canary].stop()  # the canary's container is gone: its share now answers 503
    outage: Counter = Counter()
    for _ in range(20):
        status, body = rest.predict("babyweight", [BABY])
        if status == 200:
            outage[body["deployedModelId"]] += 1
        else:
            assert status == 503 and body["error"]["status"] == "UNAVAILABLE", body
            outage["failed"] += 1
    assert outage["failed"] > 0 and outage[canary] == 0
    ended = time.time()
    window = dict(start=started, end=ended, period=f"{math.ceil(ended - started) + 1}s",
                  terms='resource.labels.endpoint_id = "babyweight"')

    status, counts = list_over_http(port, query(**window))
    assert status == 200 and discovery.response_errors(LIST_METHOD_ID, counts) == [], counts
    assert per_model(counts) == {champion: 1 + served[champion] + outage[champion],  # the 400 is a request
                                 canary: served[canary] + outage["failed"]}
    status, errors = list_over_http(port, query(ERROR_COUNT, **window))
    assert status == 200 and per_model(errors) == {canary: outage["failed"]}  # the 503s; the 400 is no error
    status, latencies = list_over_http(port, query(PREDICTION_LATENCIES, **window))
    assert status == 200 and discovery.response_errors(LIST_METHOD_ID, latencies) == []
    p99 = {s["metric"]["labels"]["deployed_model_id"]: s["points"][0]["value"]["doubleValue"]
           for s in latencies["timeSeries"]}
    assert set(p99) == {champion, canary} and all(0 < value < 5000 for value in p99.values())

    # the adapter the release stage uses reads the same figures, end to end
    metrics = MonitoringServingMetrics.local(PROJECT, f"http://127.0.0.1:{port}")
    bake = (datetime.fromtimestamp(started, tz=timezone.utc), datetime.fromtimestamp(ended, tz=timezone.utc))
    figures = metrics.figures("babyweight", [champion, canary, "999"], *bake)
    assert figures == {
        champion: {"requests": 1 + served[champion] + outage[champion], "errors": 0, "latency_p99_ms": p99[champion]},
        canary: {"requests": served[canary] + outage["failed"], "errors": outage["failed"],
                 "latency_p99_ms": p99[canary]},
        "999": {"requests": 0, "errors": 0, "latency_p99_ms": None},
    }
    assert metrics.figures("babyweight", [canary], *bake) == {canary: figures[canary]}

    # refusals over HTTP: Google's error JSON, and the adapter's kinds of error
    for params, phrase in [
        (query(terms='resource.labels.endpoint_id = "babyweight" OR resource.labels.endpoint_id = "x"'), "AND"),
        (query(aligner="ALIGN_MAX"), "not supported"),
        (query(**{"secondaryAggregation.alignmentPeriod": "60s"}), "not supported"),
    ]:
        status, body = list_over_http(port, params)
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT" and phrase in body["error"]["message"]
    assert list_over_http(port, query(), project="elsewhere")[0] == 404
    wrong = MonitoringServingMetrics.local("elsewhere", f"http://127.0.0.1:{port}")
    with pytest.raises(ServingMetricsRequestError) as caught:
        wrong.figures("babyweight", [canary], *bake)
    assert caught.value.status_code == 404 and "projects/elsewhere" in caught.value.message
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/v3/projects/{PROJECT}/metricDescriptors")
    assert connection.getresponse().status == 404
    connection.close()
    gone = MonitoringServingMetrics.local(PROJECT, "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TransientError):
        gone.figures("babyweight", [canary], *bake)
