"""A bounded load on a predict endpoint, from its own process: ``python -m bench.serve_load``.

For each level (instances per request x concurrent clients) every client keeps one HTTP/1.1
connection and sends requests back to back until it has sent its share of ``--requests`` or
``--max-seconds`` have passed. Prints one JSON line: per level, the latencies' summary and the
instances per second over the level's wall time. Only loopback URLs are accepted.

The clients are coroutines on one event loop (uvloop when installed) and read responses with
httptools' parser, so the client's own cost per request stays small and no client waits for
another's thread to let go of the interpreter: the latencies are the server's, not the load
generator's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import httptools

from bench.processes import machine_cpu_ticks, steal_percent
from bench.report import latency_summary

INSTANCES = [
    {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.0},
    {"is_male": "False", "mother_age": 32.0, "plurality": "Twins(2)", "gestation_weeks": 36.0},
    {"is_male": "Unknown", "mother_age": 29.0, "plurality": "Multiple(2+)", "gestation_weeks": 34.0},
    {"is_male": "True", "mother_age": 41.0, "plurality": "Single(1)", "gestation_weeks": 30.0},
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONNECT_ATTEMPTS = 5
REQUEST_TIMEOUT_S = 30.0


def request_body(instances_per_request: int) -> bytes:
    instances = [INSTANCES[i % len(INSTANCES)] for i in range(instances_per_request)]
    return json.dumps({"instances": instances}).encode()


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """One POST of ``body`` as JSON, in HTTP/1.1 on a kept-alive connection."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 client connection: send a request, await its whole response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._answer: asyncio.Future | None = None
        self._lost: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"unreadable HTTP response: {error}"))
            self._transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = exc or ConnectionResetError("the server closed the connection")
        self._fail(self._lost)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []

    def _fail(self, error: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of the response to ``request``."""
        if self._lost is not None:
            raise ConnectionResetError(f"the connection is closed: {self._lost}")
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await asyncio.wait_for(self._answer, REQUEST_TIMEOUT_S)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _warm_connection(host: str, port: int, request: bytes, resets: list[str]) -> HttpConnection | None:
    """A connection that has answered one request, retrying a refused or reset connect a few times.

    A burst of clients connecting at once can overflow the server's listen backlog; a client
    then tries again, as HTTP clients do. Each failed attempt is noted in ``resets``.
    """
    loop = asyncio.get_running_loop()
    for attempt in range(CONNECT_ATTEMPTS):
        connection = None
        try:
            _, connection = await loop.create_connection(HttpConnection, host, port)
            await connection.exchange(request)
            return connection
        except (OSError, asyncio.TimeoutError) as error:
            if connection is not None:
                connection.close()
            resets.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.05 * (attempt + 1))
    return None


async def _client(host: str, port: int, request: bytes, expected: int, requests: int, max_seconds: float,
                  start: asyncio.Event, ready: list, latencies: list[float], failures: list[str],
                  resets: list[str]) -> None:
    connection = await _warm_connection(host, port, request, resets)
    if connection is None:
        failures.append(f"no connection after {CONNECT_ATTEMPTS} attempts: {resets[-1]}")
    ready.append(connection)
    await start.wait()  # every client starts together, even one that could not connect
    if connection is None:
        return
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            try:
                status, answer = await connection.exchange(request)
            except (OSError, asyncio.TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = await _warm_connection(host, port, request, resets)
                if connection is None:
                    return
                continue
            elapsed_ms = (time.perf_counter() - began) * 1000
            if status != 200:
                failures.append(f"HTTP {status}: {answer[:200]!r}")
                continue
            try:
                predictions = json.loads(answer)["predictions"]
            except (ValueError, KeyError, TypeError):
                failures.append(f"not a PredictResponse: {answer[:200]!r}")
                continue
            if len(predictions) != expected:
                failures.append("wrong number of predictions")
                continue
            latencies.append(elapsed_ms)
    finally:
        if connection is not None:
            connection.close()


async def _level(url: str, instances_per_request: int, clients: int, requests: int, max_seconds: float) -> dict:
    parts = urlsplit(url)
    request = http_request(parts.hostname, parts.port, parts.path, request_body(instances_per_request))
    start = asyncio.Event()
    ready: list = []
    latencies: list[float] = []
    failures: list[str] = []
    resets: list[str] = []
    share = max(1, requests // clients)
    tasks = [asyncio.ensure_future(_client(parts.hostname, parts.port, request, instances_per_request, share,
                                           max_seconds, start, ready, latencies, failures, resets))
             for _ in range(clients)]
    connect_deadline = time.monotonic() + 90
    while len(ready) < clients and time.monotonic() < connect_deadline and not all(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    start.set()
    began = time.monotonic()
    ticks_before = machine_cpu_ticks()
    await asyncio.wait(tasks, timeout=max_seconds + 60)
    wall = time.monotonic() - began
    ticks_after = machine_cpu_ticks()
    for task in tasks:
        if not task.done():
            task.cancel()
            failures.append("a client did not finish in time")
        elif task.exception() is not None:
            failures.append(f"a client failed: {task.exception()!r}")
    return {
        "instances_per_request": instances_per_request,
        "clients": clients,
        "requests": len(latencies),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "connection_retries": len(resets),
        "first_connection_error": resets[0] if resets else None,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
        "instances_per_s": round(len(latencies) * instances_per_request / wall, 1) if wall > 0 else None,
        "cpu_steal_pct": steal_percent(ticks_before, ticks_after),
        **latency_summary(latencies),
    }


def run_level(url: str, instances_per_request: int, clients: int, requests: int, max_seconds: float) -> dict:
    """One level of load; ``requests`` in total, shared by the clients."""
    return _event_loop_run(_level(url, instances_per_request, clients, requests, max_seconds))


def _event_loop_run(coroutine):
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop measures the same, a little more slowly
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _numbers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the predict URL (…/endpoints/ID:predict, or a container's predict route), on 127.0.0.1")
    parser.add_argument("--clients", type=_numbers, default=[1, 4, 16])
    parser.add_argument("--instances", type=_numbers, default=[1, 100], help="instances per request")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level, at most")
    parser.add_argument("--batch-requests", type=int, default=None,
                        help="requests per level when a request holds more than one instance (default --requests)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="seconds per level, at most")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in LOOPBACK:
        parser.error(f"the load goes to a loopback address only, not {host!r}")
    levels = []
    for instances in args.instances:
        requests = args.requests if instances == 1 else (args.batch_requests or args.requests)
        for clients in args.clients:
            levels.append(run_level(args.url, instances, clients, requests, args.max_seconds))
    print(json.dumps({"levels": levels}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
