"""A predict request read from ASGI and checked as Vertex AI checks it, before the model sees it.

The serving container (``model_server.app``) and the local endpoint (``local_cloud.vertex.http``)
read bodies with these functions, so both refuse the same bodies with the same reasons.
"""

from __future__ import annotations

import json
import math
from typing import Any

from model_server.errors import ApiError, invalid

# Vertex AI rejects online prediction payloads above 1.5 MB:
# https://cloud.google.com/vertex-ai/docs/predictions/get-online-predictions (request size limit).
MAX_PREDICT_PAYLOAD_BYTES = 1_572_864
# A request holds at most this many instances (the local endpoint's limit since its first version).
DEFAULT_MAX_INSTANCES_PER_REQUEST = 10_000


class BadBody(Exception):
    """A request body refused before it was read whole; the connection is closed after the answer.

    `unread`: how much of the body is still on its way (None when none is, or it is more than
    `discard_limit`, too much to wait for).
    """

    def __init__(self, error: ApiError, unread: int | None = None, discard_limit: int = 0):
        super().__init__(error.message)
        self.error = error
        self.unread = unread if unread is not None and unread <= discard_limit else None


async def discard(receive, budget: int) -> None:
    """Read and drop the rest of a refused body, at most `budget` bytes, so that a client still
    sending it reads the answer instead of a reset connection."""
    while budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))


async def read_json_body(scope: dict, receive, limit: int, discard_limit: int) -> Any:
    """The request's JSON body ({} when empty); BadBody past `limit` bytes, INVALID_ARGUMENT if not JSON."""
    raw = await read_body(scope, receive, limit, discard_limit)
    if not raw.strip():
        return {}
    return parse_json(raw)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def parse_json(raw: bytes) -> Any:
    """A body parsed as strict JSON, as Google's front ends parse it: NaN, Infinity and numbers past
    a double's range are refused (Python's json would take them, and a model would predict from
    them), and so is nesting too deep to parse, all as INVALID_ARGUMENT. The body must be UTF-8
    (RFC 8259, section 8.1; a leading byte order mark is passed over): Python's json would also
    take UTF-16 and UTF-32 bytes."""
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise invalid(f"the request body is not UTF-8 (byte {exc.start} is invalid)") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise invalid("the request body is nested too deeply to parse") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None


async def read_body(scope: dict, receive, limit: int, discard_limit: int) -> bytes:
    """The request's body as it came; BadBody past `limit` bytes (read, up to `discard_limit`, first)."""
    declared = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BadBody(invalid(f"bad Content-Length {value.decode('latin-1')!r}")) from None
    if declared is not None and declared > limit:
        raise BadBody(invalid(f"Request payload size exceeds the limit: {limit} bytes."), unread=declared,
                      discard_limit=discard_limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadBody(invalid("the client went away before sending the whole body"))
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            more = discard_limit - size if message.get("more_body") else None
            raise BadBody(invalid(f"Request payload size exceeds the limit: {limit} bytes."), unread=more,
                          discard_limit=discard_limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def predict_instances(request: Any, max_instances: int = DEFAULT_MAX_INSTANCES_PER_REQUEST) -> list:
    """A PredictRequest's ``instances``, once its shape is checked (``parameters`` is not used)."""
    if not isinstance(request, dict) or "instances" not in request:
        raise invalid('the request body must be a JSON object with "instances"')
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise invalid('"instances" must be a non-empty list')
    if len(instances) > max_instances:
        raise invalid(f"a request may hold at most {max_instances} instances, got {len(instances)}")
    return instances
