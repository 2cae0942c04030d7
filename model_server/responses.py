"""One request's JSON answer, as Google's APIs give it, for every ASGI app that serves this code.

The dispatch's result is a 200; an ApiError its own status and Google's error JSON; a body refused
before it was read whole closes the connection after the answer (and is drained first, so that a
client still sending it reads the reason); anything else is the server's fault, answered as
INTERNAL rather than left to the ASGI server's bare 500.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from model_server.bodies import BadBody, discard
from model_server.errors import ApiError


class EncodedJson(bytes):
    """A dispatch's answer already encoded as JSON, sent as it is (a relayed answer)."""


async def respond_json(scope: dict, receive, send, dispatch: Callable[[dict, Any], Awaitable[Any]],
                       log: logging.Logger) -> None:
    """Run ``dispatch(scope, receive)`` and send its answer (or its error) as JSON."""
    close = False
    try:
        status, body = 200, await dispatch(scope, receive)
    except BadBody as exc:
        close = True
        status, body = exc.error.http_status, exc.error.http_body()
        if exc.unread is not None:
            await discard(receive, exc.unread)
    except ApiError as exc:
        status, body = exc.http_status, exc.http_body()
    except Exception as exc:  # an unexpected fault is the server's, reported as Google APIs do
        log.exception("%s %s failed", scope.get("method"), scope.get("path"))
        error = ApiError("INTERNAL", f"internal error: {exc}")
        status, body = error.http_status, error.http_body()
    payload = body if isinstance(body, EncodedJson) else json.dumps(body, separators=(",", ":")).encode("utf-8")
    headers = [(b"content-type", b"application/json; charset=UTF-8"),
               (b"content-length", str(len(payload)).encode("ascii"))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
