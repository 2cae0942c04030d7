"""What predictions see of an endpoint, read without the service's lock.

Every change to an endpoint (a deploy ending, an undeploy, a restart) publishes a new routing
table; a prediction reads the table, checks the request's shape, draws a deployed model by the
traffic split and answers with Vertex AI's PredictResponse. None of it waits for a deploy or a
state write in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from local_cloud.vertex.rest_rules import ApiError, choose_deployed_model, resolve_version
from local_cloud.vertex.servables import Servable
from model_server.bodies import predict_instances


@dataclass(frozen=True)
class Route:
    """Everything a prediction needs to know about a deployed model, read without locking."""

    deployed_model_id: str
    model_name: str
    model_version_id: str
    model_display_name: str
    servable: Servable


@dataclass(frozen=True)
class RoutingTable:
    traffic_split: Mapping[str, int]
    routes: Mapping[str, Route]


def routing_table(
    endpoint: Mapping[str, Any],
    models: Mapping[str, Any],
    servables: Mapping[str, Servable],
    model_name: Callable[[str], str],
) -> RoutingTable:
    """The table for an endpoint of the state, its deployed models resolved against ``models``."""
    routes = {}
    for deployed in endpoint["deployedModels"]:
        version = resolve_version(models[deployed["modelId"]]["versions"], deployed["modelVersionId"])
        routes[deployed["id"]] = Route(
            deployed_model_id=deployed["id"],
            model_name=model_name(deployed["modelId"]),
            model_version_id=deployed["modelVersionId"],
            model_display_name=version["displayName"],
            servable=servables[deployed["id"]],
        )
    return RoutingTable(traffic_split=dict(endpoint["trafficSplit"]), routes=routes)


def choose_route(
    table: RoutingTable, request: Any, *, endpoint_name: str, max_instances: int, draw: Callable[[], float]
) -> Route:
    """The deployed model a predict request goes to, once the request's shape is checked.

    ``draw`` gives a uniform number in [0, 1) and is called only for a request that is served.
    """
    predict_instances(request, max_instances)
    if not any(percent > 0 for percent in table.traffic_split.values()):
        raise ApiError(
            "FAILED_PRECONDITION",
            f"endpoint {endpoint_name} has no deployed model receiving traffic; "
            "deploy a model with a trafficSplit first",
        )
    return table.routes[choose_deployed_model(table.traffic_split, draw())]


def predict_response(route: Route, predictions: list) -> dict:
    """Vertex AI's PredictResponse for a request's predictions."""
    return {
        "predictions": predictions,
        "deployedModelId": route.deployed_model_id,
        "model": route.model_name,
        "modelVersionId": route.model_version_id,
        "modelDisplayName": route.model_display_name,
    }
