"""What predictions see of an endpoint, read without the service's lock.

Every change to an endpoint (a deploy ending, an undeploy, a restart) publishes a new routing
table; a prediction reads the table, draws a deployed model by the traffic split, goes to that
model's serving container, and answers with Vertex AI's PredictResponse. None of it waits for a
deploy or a state write in progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from local_cloud.vertex.rest_rules import ApiError, choose_deployed_model, resolve_version
from local_cloud.vertex.serving_processes import ServingProcess


@dataclass(frozen=True)
class Route:
    """Everything a prediction needs to know about a deployed model, read without locking."""

    deployed_model_id: str
    model_name: str
    model_version_id: str
    model_display_name: str
    server: ServingProcess
    fields: bytes = field(default=b"", compare=False)  # response_fields(), made once per route


@dataclass(frozen=True)
class RoutingTable:
    traffic_split: Mapping[str, int]
    routes: Mapping[str, Route]


def routing_table(
    endpoint: Mapping[str, Any],
    models: Mapping[str, Any],
    servers: Mapping[str, ServingProcess],
    model_name: Callable[[str], str],
) -> RoutingTable:
    """The table for an endpoint of the state, its deployed models resolved against ``models``."""
    routes = {}
    for deployed in endpoint["deployedModels"]:
        version = resolve_version(models[deployed["modelId"]]["versions"], deployed["modelVersionId"])
        route = Route(
            deployed_model_id=deployed["id"],
            model_name=model_name(deployed["modelId"]),
            model_version_id=deployed["modelVersionId"],
            model_display_name=version["displayName"],
            server=servers[deployed["id"]],
        )
        routes[deployed["id"]] = replace(route, fields=response_fields(route))
    return RoutingTable(traffic_split=dict(endpoint["trafficSplit"]), routes=routes)


def choose_route(table: RoutingTable, *, endpoint_name: str, draw: Callable[[], float]) -> Route:
    """The deployed model a predict request goes to (its body is the serving container's to check).

    ``draw`` gives a uniform number in [0, 1) and is called only for a request that is served.
    """
    if not any(percent > 0 for percent in table.traffic_split.values()):
        raise ApiError(
            "FAILED_PRECONDITION",
            f"endpoint {endpoint_name} has no deployed model receiving traffic; "
            "deploy a model with a trafficSplit first",
        )
    return table.routes[choose_deployed_model(table.traffic_split, draw())]


def response_fields(route: Route) -> bytes:
    """What Vertex AI's PredictResponse adds to a container's predictions, as JSON members
    (`,"deployedModelId":...`) to append to the container's object."""
    fields = {
        "deployedModelId": route.deployed_model_id,
        "model": route.model_name,
        "modelVersionId": route.model_version_id,
        "modelDisplayName": route.model_display_name,
    }
    return b"," + json.dumps(fields, separators=(",", ":")).encode("utf-8")[1:-1]
