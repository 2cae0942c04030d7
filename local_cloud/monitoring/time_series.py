"""``projects.timeSeries.list`` of Cloud Monitoring v3, over a local endpoint's serving figures.

Reference: https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list and
the discovery document of monitoring v3 (method ``monitoring.projects.timeSeries.list``), which
``local_cloud.discovery`` reads: the query parameters taken here, their enums, and the
ListTimeSeriesResponse every answer is held against.

The metrics (https://docs.cloud.google.com/monitoring/api/metrics_gcp_a_b, "aiplatform"), all
on the monitored resource ``aiplatform.googleapis.com/Endpoint`` (labels resource_container,
location, endpoint_id: https://cloud.google.com/monitoring/api/resources) with the metric label
``deployed_model_id``:

- ``aiplatform.googleapis.com/prediction/online/prediction_count``: DELTA, INT64, "Number of
  online predictions";
- ``aiplatform.googleapis.com/prediction/online/error_count``: DELTA, INT64, "Number of online
  prediction errors";
- ``aiplatform.googleapis.com/prediction/online/prediction_latencies``: DELTA, DISTRIBUTION,
  ms, "Online prediction latency of the deployed model", with the label ``latency_type``
  ("overhead", "model" or "total"; "total" is always populated). The endpoint times a whole
  predict, so its series are all ``latency_type="total"``.

What a request may hold, and nothing else (400 INVALID_ARGUMENT otherwise):

- ``filter``: ``field = "value"`` terms joined by ``AND``: ``metric.type`` (one of the three,
  required), and optionally ``resource.type`` (the Endpoint), ``resource.labels.endpoint_id``,
  ``metric.labels.deployed_model_id`` and ``metric.labels.latency_type``;
- ``interval.startTime`` and ``interval.endTime``, RFC 3339, start before end (a DELTA metric's
  read needs both). The interval is (start, end], read in whole seconds: from the second holding
  start to the end of the second holding end;
- ``aggregation.alignmentPeriod`` (whole seconds, "900s") and ``aggregation.perSeriesAligner``:
  ALIGN_DELTA or ALIGN_SUM on the two counts (a DELTA INT64 series of sums), ALIGN_PERCENTILE_99
  on the latencies (a GAUGE DOUBLE series in ms). Periods end at the interval's end, then one
  period earlier each, newest first, as Monitoring returns them; the oldest is cut at the
  interval's start. Cloud Monitoring wants periods of at least 60 s; this stand-in takes any
  whole number of seconds from 1, since a local bake lasts seconds. A period that saw no
  predict (no error, for error_count) has no point, and a series with no point is left out;
- ``view=FULL``; the system parameters every Google API takes (``alt``, ``prettyPrint``, ...).

Other parameters of the method (cross-series reducers, secondary aggregation, pageSize,
pageToken, orderBy) are refused as unsupported here: the answer always fits one page.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Mapping, Protocol, Sequence

from local_cloud import discovery
from model_server.errors import ApiError, invalid

LIST_METHOD_ID = "monitoring.projects.timeSeries.list"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
PREDICTION_COUNT = "aiplatform.googleapis.com/prediction/online/prediction_count"
ERROR_COUNT = "aiplatform.googleapis.com/prediction/online/error_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
TOTAL_LATENCY = "total"

_COUNT_ALIGNERS = ("ALIGN_DELTA", "ALIGN_SUM")
_PERCENTILE_ALIGNERS = {"ALIGN_PERCENTILE_99": 99.0}
_METRIC_KINDS = {PREDICTION_COUNT: ("DELTA", "INT64"), ERROR_COUNT: ("DELTA", "INT64"),
                 PREDICTION_LATENCIES: ("DELTA", "DISTRIBUTION")}

_FILTER_FIELDS = ("metric.type", "resource.type", "resource.labels.endpoint_id",
                  "metric.labels.deployed_model_id", "metric.labels.latency_type")
_TERM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"([^"\\]*)"\s*')
_AND = re.compile(r"AND(?=\s)")
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_DURATION = re.compile(r"(\d+)(?:\.(\d{1,9}))?s")

_SUPPORTED_PARAMETERS = frozenset({"filter", "interval.startTime", "interval.endTime", "aggregation.alignmentPeriod",
                                   "aggregation.perSeriesAligner", "view"})
# What every Google API takes besides its own parameters (a discovery document's top-level
# "parameters"); they change nothing in the answer here.
_SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "$.xgafv", "access_token", "callback", "fields", "key",
                                "oauth_token", "prettyPrint", "quotaUser", "upload_protocol", "uploadType"})


class PeriodFigures(Protocol):
    """A deployed model's figures over one alignment period of whole seconds [start_s, end_s)."""

    start_s: int
    end_s: int
    requests: int
    errors: int

    def latency_percentile(self, percent: float) -> float | None: ...


class FiguresSource(Protocol):
    """Where the figures come from: ``local_cloud.vertex.serving_figures.ServingFigures``."""

    def deployed_models(self, endpoint_id: str | None = None) -> list[tuple[str, str]]: ...

    def periods(self, endpoint_id: str, deployed_model_id: str, start_s: int, end_s: int,
                period_s: int) -> Sequence[PeriodFigures]: ...


@dataclass(frozen=True)
class SeriesFilter:
    """The conditions of a filter: a metric type and, optionally, resource and metric labels."""

    metric_type: str
    resource_type: str | None = None
    endpoint_id: str | None = None
    deployed_model_id: str | None = None
    latency_type: str | None = None


@dataclass(frozen=True)
class ListRequest:
    """A timeSeries.list request as this stand-in reads it: whole seconds [start_s, end_s)."""

    filter: SeriesFilter
    start_s: int
    end_s: int
    period_s: int
    aligner: str


# --- parsing ---------------------------------------------------------------------------------------


def parse_filter(text: str) -> SeriesFilter:
    """A monitoring filter of ``field = "value"`` terms joined by AND, the fields of _FILTER_FIELDS."""
    if not isinstance(text, str) or not text.strip():
        raise invalid("filter is required: it must name one metric type, as metric.type = \"...\"")
    terms: dict[str, str] = {}
    position = 0
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise invalid(f"unsupported filter {text!r} at {text[position:position + 40]!r}: the local Cloud "
                          "Monitoring takes only field = \"value\" terms joined by AND, the fields being "
                          + ", ".join(_FILTER_FIELDS))
        field, value = match.group(1), match.group(2)
        if field not in _FILTER_FIELDS:
            raise invalid(f"unsupported filter field {field!r}: the local Cloud Monitoring filters on "
                          + ", ".join(_FILTER_FIELDS))
        if field in terms:
            raise invalid(f"filter names {field} twice")
        terms[field] = value
        position = match.end()
        if position == len(text):
            break
        conjunction = _AND.match(text, position)
        if conjunction is None:
            raise invalid(f"unsupported filter {text!r} at {text[position:position + 40]!r}: terms must be "
                          "joined by AND")
        position = conjunction.end()
    metric_type = terms.get("metric.type")
    if metric_type is None:
        raise invalid("the filter must specify a single metric type, as metric.type = \"...\"")
    if metric_type not in _METRIC_KINDS:
        raise invalid(f"the local Cloud Monitoring serves only the metric types {', '.join(_METRIC_KINDS)}; "
                      f"not {metric_type!r}")
    resource_type = terms.get("resource.type")
    if resource_type is not None and resource_type != ENDPOINT_RESOURCE:
        raise invalid(f"the local Cloud Monitoring serves only the resource type {ENDPOINT_RESOURCE}, "
                      f"not {resource_type!r}")
    return SeriesFilter(metric_type, resource_type, terms.get("resource.labels.endpoint_id"),
                        terms.get("metric.labels.deployed_model_id"), terms.get("metric.labels.latency_type"))


def parse_timestamp(text: str, name: str) -> float:
    """An RFC 3339 timestamp (google.protobuf.Timestamp in JSON) as Unix seconds."""
    match = _TIMESTAMP.fullmatch(text or "")
    if match is None:
        raise invalid(f"Invalid value at '{name}': {text!r} is not an RFC 3339 timestamp such as "
                      "2026-01-31T12:00:00Z")
    date, clock, fraction, offset = match.groups()
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}")
    except ValueError:
        raise invalid(f"Invalid value at '{name}': {text!r} is not a valid date and time") from None
    if offset.upper() == "Z":
        zone = timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    seconds = moment.replace(tzinfo=zone).timestamp()
    return seconds + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)


def parse_alignment_period(text: str) -> int:
    """aggregation.alignmentPeriod (a Duration, "900s") as whole seconds, at least 1."""
    match = _DURATION.fullmatch(text or "")
    if match is None:
        raise invalid(f"Invalid value at 'aggregation.alignment_period': {text!r} is not a duration such as '60s'")
    if match.group(2) and int(match.group(2)):
        raise invalid(f"aggregation.alignmentPeriod {text!r}: the local Cloud Monitoring aligns on whole seconds")
    seconds = int(match.group(1))
    if seconds < 1:
        raise invalid("aggregation.alignmentPeriod must be at least 1 second")
    return seconds


@lru_cache(maxsize=1)
def _method_parameters() -> dict:
    """The query parameters of timeSeries.list in the discovery document, read once."""
    from googleapiclient.discovery_cache import get_static_doc

    document = json.loads(get_static_doc("monitoring", discovery.API_VERSIONS["monitoring"]))
    method = document["resources"]["projects"]["resources"]["timeSeries"]["methods"]["list"]
    assert method["id"] == LIST_METHOD_ID
    return {name: spec for name, spec in method["parameters"].items() if spec.get("location") == "query"}


def parse_list_request(query: Mapping[str, Sequence[str]]) -> ListRequest:
    """The request of a query string parsed with ``urllib.parse.parse_qs`` (values are lists)."""
    declared = _method_parameters()
    values: dict[str, str] = {}
    for name, given in query.items():
        if name in _SYSTEM_PARAMETERS:
            continue
        if name not in declared:
            raise invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter.')
        if name not in _SUPPORTED_PARAMETERS:
            raise invalid(f"{name} is not supported by the local Cloud Monitoring (it takes "
                          + ", ".join(sorted(_SUPPORTED_PARAMETERS)) + ")")
        if len(given) != 1:
            raise invalid(f"{name} is given {len(given)} times; it takes one value")
        value = given[0]
        enum = declared[name].get("enum")
        if enum and value not in enum:
            raise invalid(f"Invalid value at '{name}' ({value!r}): not one of {', '.join(enum)}")
        values[name] = value
    series_filter = parse_filter(values.get("filter", ""))
    view = values.get("view")
    if view != "FULL":
        raise invalid("view is required and must be FULL here (HEADERS is not supported by the local Cloud "
                      "Monitoring)" if view else "view is required: FULL or HEADERS")
    if "interval.endTime" not in values:
        raise invalid("interval.endTime is required")
    if "interval.startTime" not in values:
        raise invalid(f"interval.startTime is required to read {series_filter.metric_type}, a DELTA metric")
    start = parse_timestamp(values["interval.startTime"], "interval.start_time")
    end = parse_timestamp(values["interval.endTime"], "interval.end_time")
    if not start < end:
        raise invalid("the interval's start time must be earlier than its end time")
    aligner = values.get("aggregation.perSeriesAligner", "ALIGN_NONE")
    kind, value_type = _METRIC_KINDS[series_filter.metric_type]
    allowed = _COUNT_ALIGNERS if value_type == "INT64" else tuple(_PERCENTILE_ALIGNERS)
    if aligner not in allowed:
        raise invalid(f"aggregation.perSeriesAligner {aligner} is not supported by the local Cloud Monitoring "
                      f"for {series_filter.metric_type} ({kind}, {value_type}): use {' or '.join(allowed)}")
    if "aggregation.alignmentPeriod" not in values:
        raise invalid(f"aggregation.alignmentPeriod is required with the aligner {aligner}")
    return ListRequest(series_filter, math.floor(start), math.ceil(end),
                       parse_alignment_period(values["aggregation.alignmentPeriod"]), aligner)


# --- answering -------------------------------------------------------------------------------------


def format_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, as Google APIs write google.protobuf.Timestamp in JSON."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="seconds" if seconds == int(seconds) else "microseconds").replace("+00:00", "Z")


def _points(request: ListRequest, periods: Sequence[PeriodFigures]) -> list[dict]:
    metric_type = request.filter.metric_type
    points = []
    for period in periods:  # newest first
        if metric_type == PREDICTION_LATENCIES:
            value = period.latency_percentile(_PERCENTILE_ALIGNERS[request.aligner])
            if value is None:
                continue
            moment = format_timestamp(period.end_s)  # a GAUGE point: one instant, the period's end
            points.append({"interval": {"startTime": moment, "endTime": moment}, "value": {"doubleValue": value}})
            continue
        count = period.requests if metric_type == PREDICTION_COUNT else period.errors
        if count:
            points.append({"interval": {"startTime": format_timestamp(period.start_s),
                                        "endTime": format_timestamp(period.end_s)},
                           "value": {"int64Value": str(count)}})  # int64 is a JSON string
    return points


def list_time_series(source: FiguresSource, project: str, location: str, name: str, request: ListRequest) -> dict:
    """The ListTimeSeriesResponse for `request` on `name` ("projects/P"), held against its schema."""
    if name != f"projects/{project}":
        raise ApiError("NOT_FOUND", f"{name} is not served here; the local Cloud Monitoring serves projects/{project}")
    wanted = request.filter
    if wanted.latency_type not in (None, TOTAL_LATENCY) or (
            wanted.latency_type is not None and wanted.metric_type != PREDICTION_LATENCIES):
        return {}  # no such series: the endpoint only times whole predicts, and counts carry no latency_type
    series = []
    for endpoint_id, deployed_model_id in source.deployed_models(wanted.endpoint_id):
        if wanted.deployed_model_id is not None and deployed_model_id != wanted.deployed_model_id:
            continue
        points = _points(request, source.periods(endpoint_id, deployed_model_id, request.start_s, request.end_s,
                                                 request.period_s))
        if not points:
            continue
        labels = {"deployed_model_id": deployed_model_id}
        if wanted.metric_type == PREDICTION_LATENCIES:
            labels["latency_type"] = TOTAL_LATENCY
        percentile = wanted.metric_type == PREDICTION_LATENCIES
        series.append({
            "metric": {"type": wanted.metric_type, "labels": labels},
            "resource": {"type": ENDPOINT_RESOURCE,
                         "labels": {"resource_container": project, "location": location, "endpoint_id": endpoint_id}},
            "metricKind": "GAUGE" if percentile else "DELTA",
            "valueType": "DOUBLE" if percentile else "INT64",
            "points": points,
        })
    answer = {"timeSeries": series} if series else {}  # proto3 JSON leaves an empty list out
    errors = discovery.response_errors(LIST_METHOD_ID, answer)
    if errors:  # this stand-in's fault, not the caller's
        raise ApiError("INTERNAL", "the local Cloud Monitoring answered outside ListTimeSeriesResponse: "
                       + "; ".join(errors))
    return answer
