"""Vertex AI's REST rules as pure functions: errors, names, versions, traffic splits, label filters.

Everything here decides from its arguments alone, so tests call it directly and the registry and
its HTTP front share one definition of what the API accepts. Errors are carried as Google APIs
return them: ``{"error": {"code", "message", "status"}}`` in an answer, a google.rpc.Status in an
Operation.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection, Mapping, Sequence

from model_server.errors import ApiError, invalid

DEFAULT_VERSION_ALIAS = "default"
TYPE_URL_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."

_MODEL_ID_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")
_ENDPOINT_ID_RE = re.compile(r"^(?:[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?|[1-9][0-9]{0,8})$")
_VERSION_ALIAS_RE = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_LABEL_FILTER_TERM_RE = re.compile(r'^labels\.([a-z][a-z0-9_-]{0,62})\s*=\s*(?:"([^"]*)"|([a-z0-9_-]*))$')
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?)s$")


# ---------------------------------------------------------------------------------------------
# Pure decisions: names, versions, traffic, filters, timestamps.
# ---------------------------------------------------------------------------------------------


def format_timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, as Google APIs write google.protobuf.Timestamp."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_duration(text: str) -> float:
    """A google.protobuf.Duration in JSON ("2.5s") as seconds."""
    match = _DURATION_RE.match(text or "")
    if not match:
        raise invalid(f"timeout must be a duration such as '30s', got {text!r}")
    return float(match.group(1))


def parse_model_reference(reference: str, project: str, location: str) -> tuple[str, str | None]:
    """Split ``projects/P/locations/L/models/M[@version-or-alias]`` into (M, version ref or None)."""
    if not isinstance(reference, str) or not reference:
        raise invalid("a model must be named as projects/{project}/locations/{location}/models/{model}")
    prefix = f"projects/{project}/locations/{location}/models/"
    if not reference.startswith(prefix):
        raise invalid(f"model {reference!r} must be named as {prefix}{{model}}[@{{version}}]")
    model_id, _, version = reference[len(prefix):].partition("@")
    if not model_id or "/" in model_id:
        raise invalid(f"model {reference!r} must be named as {prefix}{{model}}[@{{version}}]")
    return model_id, (version or None)


def resolve_version(versions: Sequence[Mapping[str, Any]], ref: str | None) -> Mapping[str, Any] | None:
    """The version a reference names: a version id, an alias, or (no reference) the default one."""
    wanted = ref or DEFAULT_VERSION_ALIAS
    for version in versions:
        if version["versionId"] == wanted or wanted in version.get("versionAliases", ()):
            return version
    return None


def assign_version_aliases(
    versions: Sequence[Mapping[str, Any]], requested: Sequence[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """Aliases for a new version and what remains on the older ones.

    A model's first version gets "default" (https://cloud.google.com/vertex-ai/docs/model-registry/model-alias:
    "the first version automatically gets assigned the default alias"); a later one only the
    aliases it asks for, each taken from the version that held it (an alias names one version).
    Returns (the new version's aliases, {older versionId: its remaining aliases}).
    """
    new_aliases = list(dict.fromkeys(requested))
    if not versions and DEFAULT_VERSION_ALIAS not in new_aliases:
        new_aliases.insert(0, DEFAULT_VERSION_ALIAS)
    taken = set(new_aliases)
    remaining = {v["versionId"]: [a for a in v.get("versionAliases", ()) if a not in taken] for v in versions}
    return new_aliases, remaining


def merge_version_aliases(
    versions: Sequence[Mapping[str, Any]], version_id: str, requested: Any
) -> dict[str, list[str]]:
    """Every version's aliases after models.mergeVersionAliases on ``version_id``.

    Reference: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/mergeVersionAliases
    ("-name" removes an alias; an alias added here leaves the version that held it). "default"
    must sit on one version at all times, so it can be moved but not removed.
    """
    if not isinstance(requested, list) or not requested:
        raise invalid("versionAliases is required: a non-empty list of aliases, '-alias' to remove one")
    added, removed = [], []
    for alias in requested:
        name = alias[1:] if isinstance(alias, str) and alias.startswith("-") else alias
        if not isinstance(name, str) or not _VERSION_ALIAS_RE.match(name):
            raise invalid(f"version alias {alias!r} must match [a-z][a-zA-Z0-9-]{{0,126}}[a-z0-9], "
                          "with '-' in front to remove it")
        (removed if alias.startswith("-") else added).append(name)
    both = set(added) & set(removed)  # the reference: adding and removing one alias cancel out
    added = [a for a in added if a not in both]
    removed = [a for a in removed if a not in both]
    if DEFAULT_VERSION_ALIAS in removed:
        raise invalid("the default alias cannot be removed, only moved to another version")
    result = {}
    for version in versions:
        aliases = [a for a in version.get("versionAliases", ()) if a not in added]
        if version["versionId"] == version_id:
            aliases = [a for a in aliases if a not in removed] + list(dict.fromkeys(added))
        result[version["versionId"]] = aliases
    return result


def resolve_traffic_split(
    requested: Any, *, deployed_ids: Collection[str], new_id: str | None = None
) -> dict[str, int]:
    """Validate a requested traffic split and name the model being deployed.

    Percentages are whole numbers from 0 to 100 that add up to 100; keys are ids of models
    deployed on the endpoint, or "0" for the model this request deploys (``new_id``), which
    takes its real id in the result.
    """
    if not isinstance(requested, Mapping):
        raise invalid("trafficSplit must be an object mapping deployed model ids to percentages")
    split: dict[str, int] = {}
    for key, percent in requested.items():
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise invalid(f"trafficSplit[{key!r}] must be a whole percentage from 0 to 100, got {percent!r}")
        if key == "0":
            if new_id is None:
                raise invalid('trafficSplit key "0" means the model being deployed; this request deploys none')
            split[new_id] = percent
        elif key in deployed_ids:
            split[key] = percent
        else:
            raise invalid(f"trafficSplit names {key!r}, which is not a model deployed on this endpoint")
    total = sum(split.values())
    if total != 100:
        raise invalid(f"trafficSplit percentages must add up to 100, got {total}")
    return split


def split_after_undeploy(
    current: Mapping[str, int], undeployed_id: str, requested: Any, remaining_ids: Collection[str]
) -> dict[str, int]:
    """The traffic split once ``undeployed_id`` leaves the endpoint.

    As on Vertex AI: undeploying the last model empties the split; otherwise a model still
    receiving traffic can only leave with a new split that gives its share to the others.
    """
    if not remaining_ids:
        return {}
    if requested:
        return resolve_traffic_split(requested, deployed_ids=remaining_ids)
    if current.get(undeployed_id, 0) > 0:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"deployed model {undeployed_id} still receives {current[undeployed_id]}% of the traffic; "
            "undeploy it with a trafficSplit that gives its share to the other deployed models",
        )
    return {key: percent for key, percent in current.items() if key != undeployed_id}


def choose_deployed_model(traffic_split: Mapping[str, int], draw: float) -> str:
    """The deployed model a request goes to, given a uniform draw in [0, 1).

    Ids are ordered so that the same draw always picks the same model; models at 0% are never
    picked.
    """
    ids = sorted(key for key, percent in traffic_split.items() if percent > 0)
    if not ids:
        raise ValueError("the traffic split sends traffic to no deployed model")
    bounds = []
    running = 0
    for key in ids:
        running += traffic_split[key]
        bounds.append(running)
    return ids[min(bisect_right(bounds, draw * running), len(ids) - 1)]


def parse_label_filter(expression: str) -> dict[str, str]:
    """The label conditions of a list filter such as ``labels.run_id="r1" AND labels.stage=train``.

    Only label equality joined by AND is understood; anything else is refused rather than ignored.
    """
    conditions: dict[str, str] = {}
    if not expression or not expression.strip():
        return conditions
    for term in re.split(r"\s+AND\s+", expression.strip()):
        match = _LABEL_FILTER_TERM_RE.match(term.strip())
        if not match:
            raise invalid(f"unsupported filter term {term!r}: only labels.KEY=\"VALUE\" joined by AND is supported")
        conditions[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
    return conditions


def labels_match(labels: Mapping[str, str], conditions: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in conditions.items())


def validate_labels(labels: Any) -> dict[str, str]:
    """Labels as Google Cloud accepts them: lowercase keys and values of letters, digits, _ and -."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise invalid("labels must be an object of string keys and values")
    if len(labels) > 64:
        raise invalid(f"at most 64 labels are allowed, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY_RE.match(key):
            raise invalid(f"label key {key!r} must start with a lowercase letter and hold at most 63 of [a-z0-9_-]")
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise invalid(f"label {key!r} has value {value!r}; values hold at most 63 of [a-z0-9_-]")
    return dict(labels)


def validate_model_spec(model: Any) -> dict:
    """The ``model`` of an UploadModelRequest, checked for what Vertex AI requires of it."""
    if not isinstance(model, Mapping):
        raise invalid("UploadModelRequest.model is required and must be an object")
    display_name = model.get("displayName")
    if not isinstance(display_name, str) or not display_name.strip() or len(display_name) > 128:
        raise invalid("model.displayName is required (1 to 128 characters)")
    artifact_uri = model.get("artifactUri")
    if not isinstance(artifact_uri, str) or not artifact_uri:
        raise invalid("model.artifactUri is required: the directory that holds the SavedModel")
    container = model.get("containerSpec")
    image_uri = container.get("imageUri") if isinstance(container, Mapping) else None
    if not isinstance(image_uri, str) or not image_uri:
        raise invalid("model.containerSpec.imageUri is required: the serving container image")
    aliases = model.get("versionAliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and _VERSION_ALIAS_RE.match(a) for a in aliases):
        raise invalid("model.versionAliases must be a list of aliases matching [a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")
    spec = {
        key: model[key]
        for key in ("displayName", "description", "versionDescription", "artifactUri", "containerSpec", "metadata")
        if key in model
    }
    spec["labels"] = validate_labels(model.get("labels"))
    spec["versionAliases"] = list(aliases)
    return spec


def validate_model_id(model_id: Any) -> str:
    """A model id as UploadModelRequest.modelId accepts it."""
    if not isinstance(model_id, str) or not _MODEL_ID_RE.match(model_id):
        raise invalid(f"modelId {model_id!r} must be up to 63 of [a-z0-9_-], not starting with a digit or -")
    return model_id


def validate_endpoint_id(endpoint_id: Any) -> str:
    """An endpoint id as Vertex AI accepts it: a lowercase name or a number."""
    if not isinstance(endpoint_id, str) or not _ENDPOINT_ID_RE.match(endpoint_id):
        raise invalid(
            f"endpoint id {endpoint_id!r} must be [a-z][a-z0-9-]* (up to 63, ending in a letter or digit) "
            "or up to 9 digits without a leading zero"
        )
    return endpoint_id


@dataclass(frozen=True)
class DeployRequest:
    """A DeployModelRequest, checked: the model (and version) to deploy, how, and the split asked for."""

    model_id: str
    version_ref: str | None
    display_name: str | None
    resources: dict
    traffic_split: Any


def parse_deploy_request(request: Any, project: str, location: str) -> DeployRequest:
    """Check a DeployModelRequest; the traffic split is checked against the endpoint later."""
    if not isinstance(request, Mapping):
        raise invalid("the request body must be a JSON object (DeployModelRequest)")
    deployed = request.get("deployedModel")
    if not isinstance(deployed, Mapping):
        raise invalid("deployedModel is required and must be an object")
    model_id, ref = parse_model_reference(deployed.get("model"), project, location)
    if "displayName" in deployed and not isinstance(deployed["displayName"], str):
        raise invalid("deployedModel.displayName must be a string")
    resources = {
        key: deployed[key]
        for key in ("dedicatedResources", "automaticResources", "sharedResources")
        if key in deployed
    }
    if len(resources) > 1:
        raise invalid("deployedModel takes one of dedicatedResources, automaticResources, sharedResources")
    return DeployRequest(model_id, ref, deployed.get("displayName"), resources, request.get("trafficSplit") or {})
