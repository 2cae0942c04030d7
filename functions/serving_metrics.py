"""The serving figures of an endpoint's deployed models over a bake window, from Cloud Monitoring.

At the end of a canary's bake, the release stage reads, per deployed model, how many predictions
it served, how many failed and its p99 latency:

    {deployed_model_id: {"requests": int, "errors": int, "latency_p99_ms": float | None}}

Vertex AI writes them to Cloud Monitoring, on the monitored resource
``aiplatform.googleapis.com/Endpoint`` (labels resource_container, location, endpoint_id:
https://cloud.google.com/monitoring/api/resources), each with the metric label
``deployed_model_id``; per Google's metric list
(https://docs.cloud.google.com/monitoring/api/metrics_gcp_a_b, section "aiplatform"):

- requests: ``aiplatform.googleapis.com/prediction/online/prediction_count``, DELTA INT64,
  "Number of online predictions";
- errors: ``aiplatform.googleapis.com/prediction/online/error_count``, DELTA INT64, "Number of
  online prediction errors";
- latency: ``aiplatform.googleapis.com/prediction/online/prediction_latencies``, DELTA
  DISTRIBUTION in ms, with the label ``latency_type`` ("overhead", "model" or "total"; only
  "total" is always populated, so that is the one read).

What the list does not say, and this module therefore assumes: that prediction_count counts
requests (the console's "Predictions per second" chart counts each instance of a request, so it
may count instances), and which failures error_count counts (the local endpoint counts answers
of 500 and more). Both are open questions to check against a real endpoint.

One ``projects.timeSeries.list`` per metric
(https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list), pages
followed: the filter names the metric, the resource type and the endpoint (and the deployed
model when only one is asked); the counts are aligned with ALIGN_SUM and the latencies with
ALIGN_PERCENTILE_99 (a DOUBLE in ms), over one alignment period covering the window, so that each
series answers one point. The window is first widened to whole seconds (by under a second at each
end). Monitoring requires an alignment period of at least 60 seconds (the discovery document:
"The value must be at least 60 seconds"), so in the cloud the period is the window rounded up to
whole minutes: a window shorter than a minute, or not a whole number of minutes, may be read as
the whole minutes that end at its end (Monitoring's points end at the interval's end; whether data
before the interval's start then counts is not documented), and Vertex AI's own samples are a
minute apart anyway. The local stand-in (``local_cloud.monitoring``) takes periods of whole
seconds, and ``MonitoringServingMetrics.local`` uses the widened window itself: a local bake lasts
seconds. Points and series of one deployed model are added up for the counts (series differ by
labels such as ``spot``); several percentiles cannot be combined, so the largest is taken for the
latency (a bound from above on the p99 of them all).

Errors: an answer of 429 or 5xx, or no answer (connection, timeout), raises TransientError (the
event is delivered again); any other 4xx raises ServingMetricsRequestError with Google's message.

Imports stay light: ``google.auth`` is imported only when the cloud's session is first needed.
"""
from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import Any

from functions.platform import TransientError

PREDICTION_COUNT = "aiplatform.googleapis.com/prediction/online/prediction_count"
ERROR_COUNT = "aiplatform.googleapis.com/prediction/online/error_count"
PREDICTION_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
TOTAL_LATENCY = "total"
CLOUD_BASE_URL = "https://monitoring.googleapis.com"
CLOUD_MIN_ALIGNMENT_S = 60  # Monitoring refuses a shorter alignmentPeriod
TIMEOUT_S = 30.0
MAX_PAGES = 100  # a bake window's answer is a few series; more pages than this is a fault
_SCOPE = "https://www.googleapis.com/auth/monitoring.read"


class ServingMetricsRequestError(ValueError):
    """Cloud Monitoring refused the request (a 4xx other than 429): its status and Google's message."""

    def __init__(self, status_code: int, message: str, status: str = ""):
        super().__init__(f"Cloud Monitoring timeSeries.list: HTTP {status_code}"
                         + (f" {status}" if status else "") + f": {message}")
        self.status_code = status_code
        self.status = status
        self.message = message


def _timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as Google APIs take a google.protobuf.Timestamp."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quoted(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def whole_seconds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The window widened to whole seconds: the local endpoint counts in whole seconds, and one
    alignment period then spans exactly the window it reads."""
    return (datetime.fromtimestamp(math.floor(start.timestamp()), tz=timezone.utc),
            datetime.fromtimestamp(math.ceil(end.timestamp()), tz=timezone.utc))


def alignment_period_s(start: datetime, end: datetime, minimum_s: int) -> int:
    """The window's length rounded up to a whole multiple of `minimum_s` seconds (at least one)."""
    length = (end - start).total_seconds()
    return max(1, math.ceil(length / minimum_s - 1e-9)) * minimum_s


class MonitoringServingMetrics:
    """Serving figures per deployed model from Cloud Monitoring's ``projects.timeSeries.list``.

    `session`: anything with ``get(url, params=..., timeout=...)`` answering ``.status_code`` and
    ``.json()`` (a ``requests.Session``, google-auth's ``AuthorizedSession``); None builds an
    AuthorizedSession with the default credentials on first use. `min_alignment_s`: the shortest
    alignment period the service takes (60 for Cloud Monitoring, 1 for the local stand-in).
    """

    def __init__(self, project: str, *, base_url: str = CLOUD_BASE_URL, session: Any = None,
                 min_alignment_s: int = CLOUD_MIN_ALIGNMENT_S, timeout_s: float = TIMEOUT_S):
        if not project:
            raise ValueError("a project is required")
        if min_alignment_s < 1:
            raise ValueError("min_alignment_s must be at least 1 second")
        self.project = project
        self.base_url = base_url.rstrip("/")
        self.min_alignment_s = int(min_alignment_s)
        self.timeout_s = timeout_s
        self._session = session
        self._session_lock = threading.Lock()

    @classmethod
    def local(cls, project: str, base_url: str) -> "MonitoringServingMetrics":
        """Against the local stand-in at `base_url` (the local Vertex AI's server): plain HTTP, no
        credentials, alignment periods of whole seconds."""
        import requests

        return cls(project, base_url=base_url, session=requests.Session(), min_alignment_s=1)

    def _get_session(self) -> Any:
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    import google.auth
                    from google.auth.transport.requests import AuthorizedSession

                    credentials, _ = google.auth.default(scopes=[_SCOPE])
                    self._session = AuthorizedSession(credentials)
        return self._session

    # --- the figures ------------------------------------------------------------------------------

    def figures(self, endpoint_id: str, deployed_model_ids: list[str], start: datetime,
                end: datetime) -> dict[str, dict]:
        """{id: {"requests", "errors", "latency_p99_ms"}} for each id asked, over the window
        (start, end]; a deployed model with no series has 0, 0 and None."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware datetimes")
        if not start < end:
            raise ValueError(f"the window must end after it starts: {start.isoformat()} .. {end.isoformat()}")
        wanted = list(dict.fromkeys(deployed_model_ids))
        result: dict[str, dict] = {i: {"requests": 0, "errors": 0, "latency_p99_ms": None} for i in wanted}
        if not wanted:
            return result
        start, end = whole_seconds(start, end)
        period = f"{alignment_period_s(start, end, self.min_alignment_s)}s"
        for metric, key in ((PREDICTION_COUNT, "requests"), (ERROR_COUNT, "errors")):
            for deployed_model_id, points in self._series(metric, endpoint_id, wanted, start, end, period, "ALIGN_SUM"):
                result[deployed_model_id][key] += sum(_count(point) for point in points)
        for deployed_model_id, points in self._series(PREDICTION_LATENCIES, endpoint_id, wanted, start, end, period,
                                                      "ALIGN_PERCENTILE_99"):
            for point in points:
                value = _double(point)
                if value is None:
                    continue
                figure = result[deployed_model_id]
                if figure["latency_p99_ms"] is None or value > figure["latency_p99_ms"]:
                    figure["latency_p99_ms"] = value
        return result

    def _series(self, metric: str, endpoint_id: str, wanted: list[str], start: datetime, end: datetime,
                period: str, aligner: str):
        """(deployed model id, points) of each series of `metric` for a wanted deployed model."""
        terms = [f"metric.type = {_quoted(metric)}", f"resource.type = {_quoted(ENDPOINT_RESOURCE)}",
                 f"resource.labels.endpoint_id = {_quoted(endpoint_id)}"]
        if len(wanted) == 1:
            terms.append(f"metric.labels.deployed_model_id = {_quoted(wanted[0])}")
        if metric == PREDICTION_LATENCIES:
            terms.append(f"metric.labels.latency_type = {_quoted(TOTAL_LATENCY)}")
        params = {
            "filter": " AND ".join(terms),
            "interval.startTime": _timestamp(start),
            "interval.endTime": _timestamp(end),
            "aggregation.alignmentPeriod": period,
            "aggregation.perSeriesAligner": aligner,
            "view": "FULL",
        }
        for answer in self._pages(params):
            for series in answer.get("timeSeries") or ():
                deployed_model_id = ((series.get("metric") or {}).get("labels") or {}).get("deployed_model_id")
                if deployed_model_id in wanted:
                    yield deployed_model_id, series.get("points") or ()

    def _pages(self, params: dict[str, str]):
        url = f"{self.base_url}/v3/projects/{self.project}/timeSeries"
        token = ""
        for _ in range(MAX_PAGES):
            page = dict(params, pageToken=token) if token else params
            answer = self._get(url, page)
            yield answer
            token = answer.get("nextPageToken") or ""
            if not token:
                return
        raise RuntimeError(f"Cloud Monitoring timeSeries.list answered more than {MAX_PAGES} pages")

    def _get(self, url: str, params: dict[str, str]) -> dict:
        session = self._get_session()
        try:
            response = session.get(url, params=params, timeout=self.timeout_s)
        except Exception as exc:
            if _is_network_fault(exc):
                raise TransientError(f"Cloud Monitoring timeSeries.list: {type(exc).__name__}: {exc}") from exc
            raise
        status = response.status_code
        if status == 200:
            try:
                answer = response.json()
            except ValueError as exc:
                raise TransientError(f"Cloud Monitoring timeSeries.list answered 200 without JSON: {exc}") from exc
            if not isinstance(answer, dict):
                raise TransientError("Cloud Monitoring timeSeries.list answered 200 with JSON that is not an object")
            return answer
        message, rpc_status = _google_error(response)
        if status == 429 or status >= 500:
            raise TransientError(f"Cloud Monitoring timeSeries.list: HTTP {status}: {message}")
        raise ServingMetricsRequestError(status, message, rpc_status)


def _count(point: dict) -> int:
    """A count point's value: an int64Value, which Google's JSON writes as a string."""
    value = (point.get("value") or {}).get("int64Value", 0)
    return int(value)


def _double(point: dict) -> float | None:
    value = (point.get("value") or {}).get("doubleValue")
    return None if value is None else float(value)


def _google_error(response: Any) -> tuple[str, str]:
    """Google's ``{"error": {"code", "message", "status"}}`` of an answer: (message, status)."""
    try:
        error = response.json()["error"]
        return str(error.get("message", "")), str(error.get("status", ""))
    except Exception:  # not Google's error JSON: the start of the body, if any
        text = getattr(response, "text", "") or ""
        return text[:500], ""


def _is_network_fault(exc: BaseException) -> bool:
    """No answer came: a connection or timeout fault of requests, google-auth or the socket."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with google-auth's transport
        requests = None
    if requests is not None and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    try:
        from google.auth import exceptions as auth
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, auth.TransportError)
