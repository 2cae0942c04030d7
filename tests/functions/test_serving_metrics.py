"""MonitoringServingMetrics: the requests it sends Cloud Monitoring, how it reads ListTimeSeriesResponse
(pages, int64 values as JSON strings, several series or points of one model, an empty answer),
its errors (429/5xx and no answer are transient, other 4xx are Google's refusal), and the local
stand-in end to end."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from functions.platform import TransientError
from functions.serving_metrics import (
    ERROR_COUNT,
    PREDICTION_COUNT,
    PREDICTION_LATENCIES,
    MonitoringServingMetrics,
    ServingMetricsRequestError,
    alignment_period_s,
)

START = datetime(2027, 1, 15, 8, 0, 0, tzinfo=timezone.utc)
END = START + timedelta(minutes=10, seconds=30)
ENDPOINT = "1234567890"
RESOURCE = {"type": "aiplatform.googleapis.com/Endpoint",
            "labels": {"resource_container": "my-project", "location": "us-central1", "endpoint_id": ENDPOINT}}


class Response:
    def __init__(self, status_code: int, body):
        self.status_code = status_code
        self._body = body
        self.text = body if isinstance(body, str) else ""

    def json(self):
        if isinstance(self._body, str):
            raise ValueError("not JSON")
        return self._body


class FakeSession:
    """Answers each GET from `answers` ({metric type: [answer, ...]} taken in turn, or a callable)."""

    def __init__(self, answers):
        if isinstance(answers, dict):
            answers = {metric: list(pages) for metric, pages in answers.items()}
        self.answers = answers
        self.calls: list[tuple[str, dict, float]] = []

    def get(self, url, params=None, timeout=None):
        self.calls.append((url, dict(params), timeout))
        if callable(self.answers):
            return self.answers(url, params)
        metric = params["filter"].split('"')[1]
        pages = self.answers.get(metric) or [Response(200, {})]
        return pages.pop(0) if len(pages) > 1 else pages[0]


def series(metric: str, deployed_model_id: str, points: list, **labels) -> dict:
    kind, value_type = ("GAUGE", "DOUBLE") if metric == PREDICTION_LATENCIES else ("DELTA", "INT64")
    return {"metric": {"type": metric, "labels": {"deployed_model_id": deployed_model_id, **labels}},
            "resource": RESOURCE, "metricKind": kind, "valueType": value_type, "points": points}


def count(value: int, end: str = "2027-01-15T08:11:00Z") -> dict:
    return {"interval": {"startTime": "2027-01-15T08:00:00Z", "endTime": end}, "value": {"int64Value": str(value)}}


def p99(value: float) -> dict:
    return {"interval": {"startTime": "2027-01-15T08:11:00Z", "endTime": "2027-01-15T08:11:00Z"},
            "value": {"doubleValue": value}}


def test_one_aligned_request_per_metric_with_the_documented_parameters():
    session = FakeSession({})
    metrics = MonitoringServingMetrics("my-project", session=session)
    assert metrics.figures(ENDPOINT, ["111", "222"], START, END) == {
        "111": {"requests": 0, "errors": 0, "latency_p99_ms": None},
        "222": {"requests": 0, "errors": 0, "latency_p99_ms": None}}
    endpoint_terms = ('resource.type = "aiplatform.googleapis.com/Endpoint" AND '
                      f'resource.labels.endpoint_id = "{ENDPOINT}"')
    common = {"interval.startTime": "2027-01-15T08:00:00.000000Z", "interval.endTime": "2027-01-15T08:10:30.000000Z",
              "aggregation.alignmentPeriod": "660s", "view": "FULL"}  # 10.5 minutes, rounded up to 11
    url = "https://monitoring.googleapis.com/v3/projects/my-project/timeSeries"
    assert session.calls == [
        (url, {"filter": f'metric.type = "{PREDICTION_COUNT}" AND {endpoint_terms}',
               "aggregation.perSeriesAligner": "ALIGN_SUM", **common}, 30.0),
        (url, {"filter": f'metric.type = "{ERROR_COUNT}" AND {endpoint_terms}',
               "aggregation.perSeriesAligner": "ALIGN_SUM", **common}, 30.0),
        (url, {"filter": f'metric.type = "{PREDICTION_LATENCIES}" AND {endpoint_terms} AND '
                         'metric.labels.latency_type = "total"',
               "aggregation.perSeriesAligner": "ALIGN_PERCENTILE_99", **common}, 30.0),
    ]

    one = FakeSession({})
    MonitoringServingMetrics("my-project", session=one).figures(ENDPOINT, ["111"], START, START + timedelta(seconds=5))
    assert all(params["filter"].endswith('metric.labels.deployed_model_id = "111"')
               or 'metric.labels.deployed_model_id = "111" AND metric.labels.latency_type' in params["filter"]
               for _, params, _ in one.calls)
    assert {params["aggregation.alignmentPeriod"] for _, params, _ in one.calls} == {"60s"}  # Monitoring's least


def test_alignment_periods_cover_the_window_in_whole_minutes_in_the_cloud_and_seconds_locally():
    assert alignment_period_s(START, START + timedelta(seconds=1), 60) == 60
    assert alignment_period_s(START, START + timedelta(seconds=60), 60) == 60
    assert alignment_period_s(START, START + timedelta(seconds=60.5), 60) == 120
    assert alignment_period_s(START, START + timedelta(milliseconds=300), 1) == 1
    assert alignment_period_s(START, START + timedelta(seconds=7.2), 1) == 8
    assert alignment_period_s(START, START + timedelta(hours=1), 1) == 3600


def test_pages_are_followed_and_series_of_one_model_are_added_up():
    counts = [
        Response(200, {"timeSeries": [series(PREDICTION_COUNT, "111", [count(7), count(3, "2027-01-15T08:05:00Z")],
                                             spot="false")],
                       "nextPageToken": "page-2"}),
        Response(200, {"timeSeries": [series(PREDICTION_COUNT, "111", [count(5)], spot="true"),
                                      series(PREDICTION_COUNT, "222", [count(40)]),
                                      series(PREDICTION_COUNT, "333", [count(99)])],  # not asked for
                       "unit": "1"}),
    ]
    errors = [Response(200, {"timeSeries": [series(ERROR_COUNT, "111", [count(2)])]})]
    latencies = [Response(200, {"timeSeries": [series(PREDICTION_LATENCIES, "111", [p99(12.5)], latency_type="total"),
                                               series(PREDICTION_LATENCIES, "111", [p99(30.25)], latency_type="total",
                                                      spot="true"),
                                               series(PREDICTION_LATENCIES, "222", [p99(8.0)], latency_type="total")]})]
    session = FakeSession({PREDICTION_COUNT: counts, ERROR_COUNT: errors, PREDICTION_LATENCIES: latencies})
    figures = MonitoringServingMetrics("my-project", session=session).figures(ENDPOINT, ["111", "222", "111"],
                                                                              START, END)
    assert figures == {"111": {"requests": 15, "errors": 2, "latency_p99_ms": 30.25},  # the larger p99: a bound
                       "222": {"requests": 40, "errors": 0, "latency_p99_ms": 8.0}}
    pages = [params.get("pageToken") for _, params, _ in session.calls]
    assert pages == [None, "page-2", None, None]


def test_an_empty_answer_means_no_traffic():
    session = FakeSession({PREDICTION_COUNT: [Response(200, {})], ERROR_COUNT: [Response(200, {"timeSeries": []})],
                           PREDICTION_LATENCIES: [Response(200, {"unit": "ms"})]})
    assert MonitoringServingMetrics("p", session=session).figures(ENDPOINT, ["111"], START, END) == {
        "111": {"requests": 0, "errors": 0, "latency_p99_ms": None}}
    assert MonitoringServingMetrics("p", session=session).figures(ENDPOINT, [], START, END) == {}


def google_error(code: int, status: str, message: str) -> Response:
    return Response(code, {"error": {"code": code, "message": message, "status": status}})


@pytest.mark.parametrize("answer", [
    google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
    google_error(500, "INTERNAL", "Internal error encountered."),
    google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Time series queries'."),
    Response(502, "<html>Bad Gateway</html>"),
])
def test_server_errors_and_throttling_are_transient(answer):
    metrics = MonitoringServingMetrics("p", session=FakeSession(lambda url, params: answer))
    with pytest.raises(TransientError) as caught:
        metrics.figures(ENDPOINT, ["111"], START, END)
    assert str(answer.status_code) in str(caught.value)


def test_no_answer_is_transient():
    def refuse(url, params):
        raise requests.exceptions.ConnectionError("Connection refused")

    with pytest.raises(TransientError):
        MonitoringServingMetrics("p", session=FakeSession(refuse)).figures(ENDPOINT, ["111"], START, END)

    def slow(url, params):
        raise requests.exceptions.ReadTimeout("read timed out")

    with pytest.raises(TransientError):
        MonitoringServingMetrics("p", session=FakeSession(slow)).figures(ENDPOINT, ["111"], START, END)


def test_a_refused_request_raises_with_googles_message():
    message = ("Field aggregation.alignmentPeriod had an invalid value of \"30s\": The alignment period must be "
               "at least 60 seconds.")
    metrics = MonitoringServingMetrics("p", session=FakeSession(lambda url, params: google_error(
        400, "INVALID_ARGUMENT", message)))
    with pytest.raises(ServingMetricsRequestError) as caught:
        metrics.figures(ENDPOINT, ["111"], START, END)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.status_code, caught.value.status, caught.value.message) == (400, "INVALID_ARGUMENT", message)
    assert message in str(caught.value)
    denied = MonitoringServingMetrics("p", session=FakeSession(lambda url, params: google_error(
        403, "PERMISSION_DENIED", "Permission monitoring.timeSeries.list denied (or the resource may not exist).")))
    with pytest.raises(ServingMetricsRequestError, match="monitoring.timeSeries.list denied"):
        denied.figures(ENDPOINT, ["111"], START, END)


def test_windows_must_be_timezone_aware_and_not_empty():
    metrics = MonitoringServingMetrics("p", session=FakeSession({}))
    with pytest.raises(ValueError, match="timezone-aware"):
        metrics.figures(ENDPOINT, ["111"], START.replace(tzinfo=None), END)
    with pytest.raises(ValueError, match="end after it starts"):
        metrics.figures(ENDPOINT, ["111"], END, START)
    with pytest.raises(ValueError):
        MonitoringServingMetrics("")


def test_importing_the_adapter_imports_neither_google_auth_nor_requests():
    code = ("import sys, functions.serving_metrics as m; "
            "bad = [n for n in ('google.auth', 'requests') if n in sys.modules]; "
            "assert not bad, bad; m.MonitoringServingMetrics('p'); assert 'google.auth' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_the_local_stand_in_end_to_end(tmp_path):
    from local_cloud.vertex.http import ModelServiceServer
    from local_cloud.vertex.registry import ModelService

    service = ModelService(tmp_path / "state", "local-project", "us-central1")
    server = ModelServiceServer(service)
    try:
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
        moment = start.timestamp()
        # what the endpoint records as predicts end: 6 requests to m1 (2 failed), 3 to m2, 1 elsewhere
        for offset, model, latency, failed in [
                (1.5, "m1", 4.0, False), (2.5, "m1", 6.0, True), (2.6, "m1", 5.0, False), (9.1, "m1", 2.0, False),
                (12.0, "m1", 3.0, True), (29.9, "m1", 1.0, False),
                (3.0, "m2", 10.0, False), (4.0, "m2", 20.0, False), (5.0, "m2", 30.0, False)]:
            server.serving_figures.record("babyweight", model, moment + offset, latency, failed)
        server.serving_figures.record("other", "m1", moment + 3.0, 1.0, True)
        server.serving_figures.record("babyweight", "m1", moment + 45.0, 1.0, True)  # after the window
        metrics = MonitoringServingMetrics.local("local-project", f"http://127.0.0.1:{server.port}")
        assert metrics.figures("babyweight", ["m1", "m2", "m3"], start, start + timedelta(seconds=30)) == {
            "m1": {"requests": 6, "errors": 2, "latency_p99_ms": 6.0},
            "m2": {"requests": 3, "errors": 0, "latency_p99_ms": 30.0},
            "m3": {"requests": 0, "errors": 0, "latency_p99_ms": None},
        }
        assert metrics.figures("babyweight", ["m1"], start + timedelta(seconds=2), start + timedelta(seconds=10)) == {
            "m1": {"requests": 3, "errors": 1, "latency_p99_ms": 6.0}}
    finally:
        service.close()
        server.close()
