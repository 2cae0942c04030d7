"""A bounded load on a predict endpoint, from its own process: ``python -m bench.serve_load``.

For each level (instances per request x concurrent clients) every client keeps one HTTP/1.1
connection and sends requests back to back until it has sent its share of ``--requests`` or
``--max-seconds`` have passed. Prints one JSON line: per level, the latencies' summary and the
instances per second over the level's wall time. Only loopback URLs are accepted.
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from bench.report import latency_summary

INSTANCES = [
    {"is_male": "True", "mother_age": 26.0, "plurality": "Single(1)", "gestation_weeks": 39.0},
    {"is_male": "False", "mother_age": 32.0, "plurality": "Twins(2)", "gestation_weeks": 36.0},
    {"is_male": "Unknown", "mother_age": 29.0, "plurality": "Multiple(2+)", "gestation_weeks": 34.0},
    {"is_male": "True", "mother_age": 41.0, "plurality": "Single(1)", "gestation_weeks": 30.0},
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def request_body(instances_per_request: int) -> bytes:
    instances = [INSTANCES[i % len(INSTANCES)] for i in range(instances_per_request)]
    return json.dumps({"instances": instances}).encode()


CONNECT_ATTEMPTS = 5


def _warm_connection(host: str, port: int, path: str, body: bytes, headers: dict, resets: list[str]):
    """A connection that has answered one request, retrying a refused or reset connect a few times.

    A burst of clients connecting at once can overflow the server's listen backlog; a client
    then tries again, as HTTP clients do. Each failed attempt is noted in ``resets``.
    """
    for attempt in range(CONNECT_ATTEMPTS):
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request("POST", path, body, headers)
            connection.getresponse().read()
            return connection
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            resets.append(f"{type(error).__name__}: {error}")
            time.sleep(0.05 * (attempt + 1))
    return None


def _client(url: str, body: bytes, expected: int, requests: int, max_seconds: float, start: threading.Barrier,
            latencies: list[float], failures: list[str], resets: list[str]) -> None:
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json"}
    path = parts.path + ":predict"
    connection = None
    try:
        connection = _warm_connection(parts.hostname, parts.port, path, body, headers, resets)
        if connection is None:
            failures.append(f"no connection after {CONNECT_ATTEMPTS} attempts: {resets[-1]}")
    finally:
        try:
            start.wait(timeout=60)  # every client starts together, even one that could not connect
        except threading.BrokenBarrierError:
            pass
    if connection is None:
        return
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as error:
                failures.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = _warm_connection(parts.hostname, parts.port, path, body, headers, resets)
                if connection is None:
                    return
                continue
            elapsed_ms = (time.perf_counter() - began) * 1000
            if response.status != 200:
                failures.append(f"HTTP {response.status}: {answer[:200]!r}")
                continue
            if len(json.loads(answer)["predictions"]) != expected:
                failures.append("wrong number of predictions")
                continue
            latencies.append(elapsed_ms)
    finally:
        if connection is not None:
            connection.close()


def run_level(url: str, instances_per_request: int, clients: int, requests: int, max_seconds: float) -> dict:
    """One level of load; ``requests`` in total, shared by the clients."""
    body = request_body(instances_per_request)
    start = threading.Barrier(clients + 1)
    latencies: list[float] = []
    failures: list[str] = []
    resets: list[str] = []
    share = max(1, requests // clients)
    threads = [threading.Thread(target=_client, args=(url, body, instances_per_request, share, max_seconds, start,
                                                      latencies, failures, resets), daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start.wait(timeout=90)
    except threading.BrokenBarrierError:
        pass
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=max_seconds + 60)
    wall = time.monotonic() - began
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
        **latency_summary(latencies),
    }


def _numbers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the endpoint URL (…/endpoints/ID), on 127.0.0.1")
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
