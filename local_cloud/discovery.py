"""Check a JSON value against a schema of Google's published discovery documents.

A discovery document describes one version of an API: its methods (each with an ``id`` such as
``aiplatform.projects.locations.customJobs.create``, its path parameters and the ``$ref`` of its
``request`` and ``response`` schemas) and the schemas themselves, each an object whose
``properties`` give every field a ``type`` and ``format``, an ``enum``, ``items`` (arrays),
``additionalProperties`` (maps) or a ``$ref`` to another schema. Format and keys:
https://developers.google.com/discovery/v1/using (Discovery document format, "Resources and
schemas"), https://developers.google.com/discovery/v1/reference/apis (the schema's keys) and
https://developers.google.com/discovery/v1/type-format (what each type and format is on the wire).
google-api-python-client ships the documents (``googleapiclient/discovery_cache/documents/``);
they are read from there, once per API version, on first use.

What a value must hold to pass, at every depth:

- no field the schema does not declare (maps take any key; their values are checked);
- the JSON type of each declared type and format: ``string`` with format ``int64``/``uint64`` is a
  JSON string of digits (64-bit integers do not fit a JSON number), ``integer`` (``int32``,
  ``uint32``) a JSON number without a fraction and within its range, ``number`` a number,
  ``boolean`` true or false, ``object`` an object, ``array`` an array, ``any`` anything. The
  services' own parsers also take a number for an int64 and a string for an int32; the check
  takes only the documented form, the one the chain's bodies are written in;
- an ``enum`` field one of the enum's names;
- every required field present. The documents carry no ``required`` list for schemas: a field
  is marked by a description that starts with "Required." (from the ``REQUIRED`` field
  behavior of the API's protos). The mark is not reliable alone: a few "Required." fields of
  aiplatform v1 are also "Output only." (the server sets them; a request cannot), and a few
  top-level fields of request schemas are bound to the method's path (the URL carries them,
  e.g. ``location`` of ``evaluateInstances``). Neither is required here. A field counts as absent when it is missing, null, or an empty string, list or map,
  since proto3 cannot tell those from unset; a message sent as ``{}`` is set (messages have
  presence), and so are ``0`` and ``false`` (some documents mark a boolean "Required." whose
  false is a real choice).

A null field is accepted (proto3 JSON reads null as the field's default) and then counts as
absent. An ``Any`` (an object marked "Contains field @type with type URL.", such as an
Operation's ``response``) must carry ``@type``; when the type URL names a schema of the same
document (``type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse`` is
``GoogleCloudAiplatformV1UploadModelResponse``), the rest of it is checked against that schema.
Output-only fields are accepted in requests, since Google's APIs ignore them there.

Schemas are resolved into a compact form once, when first used, and kept, so a check costs a
walk over the value and a few dictionary look-ups per field.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

# The version of each API the chain speaks: the first part of a method id picks the document.
API_VERSIONS = {"aiplatform": "v1", "dataflow": "v1b3", "pubsub": "v1", "logging": "v2", "storage": "v1",
                "cloudtasks": "v2", "monitoring": "v3"}

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_UINT32 = (0, 2 ** 32 - 1)
_INT64_TEXT = re.compile(r"-?[0-9]+")
_UINT64_TEXT = re.compile(r"[0-9]+")
_TYPE_URL = re.compile(r"type\.googleapis\.com/((?:[a-z][a-z0-9_]*\.)+)([A-Za-z][A-Za-z0-9]*)")
_ANY_MARK = "Contains field @type with type URL."
_ENUM_NAMES_SHOWN = 6


class SchemaMismatch(ValueError):
    """A value the schema refuses; ``errors`` names each bad field by its path."""

    def __init__(self, what: str, errors: list[str]):
        super().__init__(f"Invalid JSON payload for {what}: " + "; ".join(errors))
        self.what = what
        self.errors = errors


@dataclass(frozen=True, slots=True)
class _Type:
    """One field's type, resolved: ``kind`` is what the JSON value must be."""

    kind: str  # ref, string, int64, uint64, integer, number, boolean, map, array, any, any_message
    ref: str = ""  # kind "ref": the schema's name
    item: "_Type | None" = None  # kind "array": the items; kind "map": the values
    enum: frozenset = frozenset()
    bounds: tuple[int, int] | None = None  # kind "integer"


@dataclass(frozen=True, slots=True)
class _Message:
    name: str
    fields: dict  # field name -> _Type
    required: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Method:
    """A method of a discovery document: its id, HTTP verb, path parameters and schemas."""

    id: str
    http_method: str
    path: str
    path_parameters: frozenset
    request: str | None  # schema name
    response: str | None


def _is_required(spec: dict) -> bool:
    description = spec.get("description", "")
    return (description.startswith("Required.") and not spec.get("readOnly")
            and "Output only." not in description)


def _compile_type(spec: dict) -> _Type:
    if "$ref" in spec:
        return _Type("ref", ref=spec["$ref"])
    kind, fmt = spec.get("type"), spec.get("format")
    if kind == "string":
        if fmt in ("int64", "uint64"):
            return _Type(fmt)
        return _Type("string", enum=frozenset(spec.get("enum", ())))
    if kind == "integer":
        return _Type("integer", bounds=_UINT32 if fmt == "uint32" else _INT32)
    if kind == "number" or kind == "boolean":
        return _Type(kind)
    if kind == "array":
        return _Type("array", item=_compile_type(spec.get("items", {"type": "any"})))
    if kind == "object":
        values = spec.get("additionalProperties")
        if values is None:  # an object with neither properties nor a value type takes anything
            return _Type("any")
        if values.get("type") == "any" and _ANY_MARK in values.get("description", ""):
            return _Type("any_message")
        return _Type("map", item=_compile_type(values))
    return _Type("any")


class DiscoveryDocument:
    """One discovery document: its methods by id and its schemas, resolved on first use."""

    def __init__(self, document: dict):
        self.name: str = document["name"]
        self.version: str = document["version"]
        self.revision: str = document.get("revision", "")
        self._schemas: dict = document["schemas"]
        self._methods: dict[str, Method] = {}
        self._collect_methods(document)
        self._compiled: dict[str, _Message] = {}
        self._lock = threading.Lock()

    def _collect_methods(self, resource: dict) -> None:
        for spec in resource.get("methods", {}).values():
            self._methods[spec["id"]] = Method(
                id=spec["id"], http_method=spec.get("httpMethod", ""), path=spec.get("path", ""),
                path_parameters=frozenset(name for name, parameter in spec.get("parameters", {}).items()
                                          if parameter.get("location") == "path"),
                request=(spec.get("request") or {}).get("$ref"),
                response=(spec.get("response") or {}).get("$ref"))
        for child in resource.get("resources", {}).values():
            self._collect_methods(child)

    def method(self, method_id: str) -> Method:
        try:
            return self._methods[method_id]
        except KeyError:
            raise KeyError(f"{self.name} {self.version} has no method {method_id!r}") from None

    def has_schema(self, name: str) -> bool:
        return name in self._schemas

    def message(self, name: str) -> _Message:
        compiled = self._compiled.get(name)
        if compiled is None:
            try:
                properties = self._schemas[name].get("properties", {})
            except KeyError:
                raise KeyError(f"{self.name} {self.version} has no schema {name!r}") from None
            compiled = _Message(name, {field: _compile_type(spec) for field, spec in properties.items()},
                                tuple(field for field, spec in properties.items() if _is_required(spec)))
            with self._lock:
                compiled = self._compiled.setdefault(name, compiled)
        return compiled

    # --- checking ---------------------------------------------------------------------------------

    def errors(self, schema: str, value: Any, *, not_required: frozenset = frozenset()) -> list[str]:
        """Every way `value` differs from schema `schema`, each as "path: what is wrong".

        `not_required`: top-level fields the URL carries (a method's path parameters).
        """
        errors: list[str] = []
        self._check_message(self.message(schema), value, "", errors, not_required)
        return errors

    def _check_message(self, message: _Message, value: Any, path: str, errors: list[str],
                       not_required: frozenset = frozenset()) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path or '(body)'}: expected a JSON object ({message.name}), got {_shown(value)}")
            return
        fields = message.fields
        for name, item in value.items():
            kind = fields.get(name)
            where = f"{path}.{name}" if path else name
            if kind is None:
                errors.append(f"{where}: unknown field")
            elif item is not None:
                self._check(kind, item, where, errors)
        for name in message.required:
            if name not in not_required and _absent(value.get(name), fields[name]):
                errors.append(f"{path}.{name}: required field missing" if path else f"{name}: required field missing")

    def _check(self, kind: _Type, value: Any, path: str, errors: list[str]) -> None:
        k = kind.kind
        if k == "string":
            if not isinstance(value, str):
                errors.append(f"{path}: expected a JSON string, got {_shown(value)}")
            elif kind.enum and value not in kind.enum:
                errors.append(f"{path}: {value!r} is not a value of the enum ({_names(kind.enum)})")
        elif k == "ref":
            self._check_message(self.message(kind.ref), value, path, errors)
        elif k == "int64" or k == "uint64":
            if not isinstance(value, str) or not (_INT64_TEXT if k == "int64" else _UINT64_TEXT).fullmatch(value):
                errors.append(f"{path}: expected a JSON string of digits ({k}), got {_shown(value)}")
        elif k == "integer":
            low, high = kind.bounds
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f"{path}: expected a JSON number without a fraction, got {_shown(value)}")
            elif not low <= value <= high:
                errors.append(f"{path}: {value} is out of range [{low}, {high}]")
        elif k == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(f"{path}: expected a JSON number, got {_shown(value)}")
        elif k == "boolean":
            if not isinstance(value, bool):
                errors.append(f"{path}: expected true or false, got {_shown(value)}")
        elif k == "array":
            if not isinstance(value, list):
                errors.append(f"{path}: expected a JSON array, got {_shown(value)}")
            else:
                for index, item in enumerate(value):
                    self._check(kind.item, item, f"{path}[{index}]", errors)
        elif k == "map":
            if not isinstance(value, dict):
                errors.append(f"{path}: expected a JSON object (a map), got {_shown(value)}")
            else:
                for key, item in value.items():
                    self._check(kind.item, item, f"{path}[{json.dumps(key)}]", errors)
        elif k == "any_message":
            self._check_any(value, path, errors)

    def _check_any(self, value: Any, path: str, errors: list[str]) -> None:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a JSON object (google.protobuf.Any), got {_shown(value)}")
            return
        type_url = value.get("@type")
        if not isinstance(type_url, str) or not type_url:
            errors.append(f"{path}.@type: required field missing (google.protobuf.Any)")
            return
        schema = self.schema_of_type_url(type_url)
        if schema is not None:
            self._check_message(self.message(schema), {k: v for k, v in value.items() if k != "@type"},
                                path, errors)

    def schema_of_type_url(self, type_url: str) -> str | None:
        """The schema of this document a protobuf type URL names, or None (checked no further)."""
        match = _TYPE_URL.fullmatch(type_url)
        if match is None:
            return None
        package = "".join(part[:1].upper() + part[1:] for part in match.group(1).split(".") if part)
        name = package + match.group(2)
        return name if name in self._schemas else None


def _absent(value: Any, kind: _Type) -> bool:
    if value is None:
        return True
    if kind.kind in ("string", "int64", "uint64", "array", "map"):
        return len(value) == 0 if isinstance(value, (str, list, dict)) else False
    return False


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(enum: frozenset) -> str:
    names = sorted(enum)
    shown = ", ".join(names[:_ENUM_NAMES_SHOWN])
    return shown + (f", ... {len(names) - _ENUM_NAMES_SHOWN} more" if len(names) > _ENUM_NAMES_SHOWN else "")


# --- documents, by API version -----------------------------------------------------------------------

_documents: dict[tuple[str, str], DiscoveryDocument] = {}
_documents_lock = threading.Lock()


def document(api: str, version: str | None = None) -> DiscoveryDocument:
    """The discovery document of `api` (at API_VERSIONS' version unless named), read once."""
    version = version or API_VERSIONS[api]
    found = _documents.get((api, version))
    if found is None:
        with _documents_lock:
            found = _documents.get((api, version))
            if found is None:
                # Imported here: only what checks a body pays for the package, and the documents
                # are read from the package's own directory.
                from googleapiclient.discovery_cache import get_static_doc

                text = get_static_doc(api, version)
                if text is None:
                    raise LookupError(f"google-api-python-client ships no discovery document {api}.{version}")
                found = _documents[(api, version)] = DiscoveryDocument(json.loads(text))
    return found


def method(method_id: str, version: str | None = None) -> tuple[DiscoveryDocument, Method]:
    """The document and method of a method id such as ``dataflow.projects.locations.flexTemplates.launch``."""
    doc = document(method_id.split(".", 1)[0], version)
    return doc, doc.method(method_id)


def request_errors(method_id: str, body: Any, version: str | None = None) -> list[str]:
    """How `body` differs from the request schema of the method (an empty list when it conforms)."""
    doc, found = method(method_id, version)
    if found.request is None:
        raise ValueError(f"{method_id} takes no request body")
    return doc.errors(found.request, body, not_required=found.path_parameters)


def response_errors(method_id: str, body: Any, version: str | None = None) -> list[str]:
    """How `body` differs from the response schema of the method (an empty list when it conforms)."""
    doc, found = method(method_id, version)
    if found.response is None:
        raise ValueError(f"{method_id} answers with no body")
    return doc.errors(found.response, body)


def check_request(method_id: str, body: Any, version: str | None = None) -> None:
    """Raise SchemaMismatch unless `body` is a request the method's schema accepts."""
    errors = request_errors(method_id, body, version)
    if errors:
        raise SchemaMismatch(f"{method_id} ({method(method_id, version)[1].request})", errors)


def check_response(method_id: str, body: Any, version: str | None = None) -> None:
    """Raise SchemaMismatch unless `body` is an answer the method's schema describes."""
    errors = response_errors(method_id, body, version)
    if errors:
        raise SchemaMismatch(f"{method_id} ({method(method_id, version)[1].response})", errors)
