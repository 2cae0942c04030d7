"""Cloud Monitoring (API v3), locally: ``projects.timeSeries.list`` over the endpoint's serving figures.

At the end of a canary's bake the chain reads each deployed model's requests, errors and p99
latency from Cloud Monitoring, where Vertex AI writes them. Locally the endpoint counts its own
predictions (``local_cloud.vertex.serving_figures``) and the local Vertex AI's HTTP server also
answers ``GET /v3/projects/{project}/timeSeries`` from them, with `time_series` here: the same
request parameters and the same ListTimeSeriesResponse JSON, for the three metrics the chain
reads and the aligners it asks for. Anything else is refused 400 INVALID_ARGUMENT, never
ignored.
"""
from local_cloud.monitoring.time_series import (
    ENDPOINT_RESOURCE,
    ERROR_COUNT,
    LIST_METHOD_ID,
    PREDICTION_COUNT,
    PREDICTION_LATENCIES,
    FiguresSource,
    ListRequest,
    SeriesFilter,
    list_time_series,
    parse_filter,
    parse_list_request,
)

__all__ = ["ENDPOINT_RESOURCE", "ERROR_COUNT", "LIST_METHOD_ID", "PREDICTION_COUNT", "PREDICTION_LATENCIES",
           "FiguresSource", "ListRequest", "SeriesFilter", "list_time_series", "parse_filter",
           "parse_list_request"]
