"""The endpoint's hop to a deployed model's serving container, as Vertex AI's front end makes it.

A predict request goes to the chosen container's predict route on a kept-alive connection, as it
came (``relay``) or together with the small requests that arrived with it (``predictions``, fed
by the endpoint's batcher), and the container's answer comes back: its predictions in Vertex's
PredictResponse, or its error as it gave it. A container that cannot be reached answers
UNAVAILABLE, which clients retry.

This is the hot path of every local prediction, so the client is small: HTTP/1.1 POSTs written
whole on asyncio connections and their answers read with httptools' parser (the C parser uvicorn
already uses). aiohttp's client spent several times as much CPU per request and halved the
endpoint's throughput at 16 clients (README, Performance). Only what a container's answer can
hold is handled: a status, headers, a body of any length or chunking, and ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools

from model_server.errors import ApiError

# Connections kept to each container at once; more concurrent requests wait for one (Vertex's
# front end also bounds what it sends a node).
CONNECTIONS_PER_CONTAINER = 64
FORWARD_TIMEOUT_S = 60.0
_PREFIX = b'{"predictions":['


class ContainerAnswer(Exception):
    """A container answered with an error: its status and body, passed to the client unchanged."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"the serving container answered {status}")
        self.status = status
        self.body = body


class _Connection(asyncio.Protocol):
    """One kept-alive connection: a request written whole, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future | None = None
        self._body: list[bytes] = []
        self.usable = True

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(ConnectionError(f"the container's answer is not HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._end(ConnectionError("the container closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.usable = False
            self._transport.close()
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []

    def _end(self, error: Exception) -> None:
        self.usable = False
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)

    async def post(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        try:
            return await asyncio.wait_for(self._answer, timeout)
        except BaseException:
            self.usable = False  # an answer may still come: this connection is not reused
            self._transport.close()
            raise

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()


class _Pool:
    """Kept-alive connections to one container, at most CONNECTIONS_PER_CONTAINER at a time."""

    def __init__(self, host: str, port: int):
        self._host, self._port = host, port
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(CONNECTIONS_PER_CONTAINER)

    async def post(self, head: bytes, body: bytes, timeout: float) -> tuple[int, bytes]:
        async with self._slots:
            # A kept connection the container has closed since is found out when it is used:
            # the request then goes once more on a new connection (a predict changes nothing).
            while self._idle:
                connection = self._idle.pop()
                if not connection.usable:
                    continue
                try:
                    return self._keep(connection, await connection.post(head + body, timeout))
                except ConnectionError:
                    continue
            _, connection = await asyncio.get_running_loop().create_connection(_Connection, self._host, self._port)
            return self._keep(connection, await connection.post(head + body, timeout))

    def _keep(self, connection: _Connection, answer: tuple[int, bytes]) -> tuple[int, bytes]:
        if connection.usable:
            self._idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class Forwarder:
    """POSTs predict bodies to serving containers; used and closed on the event loop that made it."""

    def __init__(self, timeout: float = FORWARD_TIMEOUT_S):
        self._timeout = timeout
        self._pools: dict[tuple[str, int], _Pool] = {}

    async def _post(self, host: str, port: int, path: str, body: bytes) -> bytes:
        """The body of the container's 200 answer; ContainerAnswer for an error, UNAVAILABLE if unreachable."""
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = _Pool(host, port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            status, answer = await pool.post(head, body, self._timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            raise ApiError("UNAVAILABLE", f"the deployed model's server at {host}:{port} did not answer: "
                                          f"{exc.__class__.__name__}: {exc}") from None
        if status != 200:
            raise ContainerAnswer(status, answer)
        return answer

    async def relay(self, host: str, port: int, path: str, body: bytes, extra_fields: bytes) -> bytes:
        """A request as it came; the container's PredictResponse with ``extra_fields`` (`,"key":value...`)."""
        return with_fields(await self._post(host, port, path, body), extra_fields, f"{host}:{port}")

    async def predictions(self, host: str, port: int, path: str, instances: list) -> list:
        """The container's predictions for ``instances``, sent as one PredictRequest."""
        body = json.dumps({"instances": instances}, separators=(",", ":")).encode("utf-8")
        answer = await self._post(host, port, path, body)
        try:
            predictions = json.loads(answer)["predictions"]
        except (ValueError, KeyError, TypeError):
            predictions = None
        if not isinstance(predictions, list):
            raise ApiError("INTERNAL", f"the deployed model's server at {host}:{port} answered 200 without a "
                                       "\"predictions\" list")
        return predictions

    def forget(self, host: str, port: int) -> None:
        """Drop the connections to a container that has stopped."""
        pool = self._pools.pop((host, port), None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def with_fields(answer: bytes, extra_fields: bytes, where: str) -> bytes:
    """A container's ``{"predictions": [...]}`` with more fields, without parsing it when its
    shape is the one model_server writes; any other JSON object is parsed and checked."""
    trimmed = answer.rstrip()
    if trimmed.startswith(_PREFIX) and trimmed.endswith(b"}"):
        return trimmed[:-1] + extra_fields + b"}"
    try:
        document: Any = json.loads(answer)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        raise ApiError("INTERNAL", f"the deployed model's server at {where} answered 200 without a "
                                   "\"predictions\" list")
    encoded = json.dumps({"predictions": document["predictions"]}, separators=(",", ":")).encode("utf-8")
    return encoded[:-1] + extra_fields + b"}"
