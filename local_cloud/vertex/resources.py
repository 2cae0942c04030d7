"""The registry's REST resources (Model, Endpoint) as Vertex AI writes them, from the state.

The state keeps what changes (versions, deployed models, traffic); the names and the fields
derived from them are written here, on every read, so the state holds each fact once.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


def model_name(parent: str, model_id: str) -> str:
    return f"{parent}/models/{model_id}"


def endpoint_name(parent: str, endpoint_id: str) -> str:
    return f"{parent}/endpoints/{endpoint_id}"


def model_resource(parent: str, state: Mapping[str, Any], model_id: str, version: Mapping[str, Any]) -> dict:
    """One version of a model as a Model resource, with the endpoints it is deployed on."""
    entry = state["models"][model_id]
    refs = [
        {"endpoint": endpoint_name(parent, endpoint_id), "deployedModelId": deployed["id"]}
        for endpoint_id, endpoint in sorted(state["endpoints"].items())
        for deployed in endpoint["deployedModels"]
        if deployed["modelId"] == model_id and deployed["modelVersionId"] == version["versionId"]
    ]
    resource = {
        "name": model_name(parent, model_id),
        **json.loads(json.dumps(version)),
        "createTime": entry["createTime"],
        "updateTime": entry["updateTime"],
        "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
    }
    if refs:
        resource["deployedModels"] = refs
    return resource


def endpoint_resource(parent: str, endpoint_id: str, endpoint: Mapping[str, Any]) -> dict:
    """An endpoint of the state as an Endpoint resource, with its deployed models and traffic split."""
    deployed_models = [
        {
            "id": deployed["id"],
            "model": model_name(parent, deployed["modelId"]),
            "modelVersionId": deployed["modelVersionId"],
            "displayName": deployed["displayName"],
            "createTime": deployed["createTime"],
            **deployed["resources"],
        }
        for deployed in endpoint["deployedModels"]
    ]
    return {
        "name": endpoint_name(parent, endpoint_id),
        "displayName": endpoint["displayName"],
        "deployedModels": deployed_models,
        "trafficSplit": dict(endpoint["trafficSplit"]),
        "createTime": endpoint["createTime"],
        "updateTime": endpoint["updateTime"],
    }
