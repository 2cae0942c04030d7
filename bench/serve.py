"""``serve``: the local endpoint under load from a second process, against the model in-process.

The model is the one the ``train`` benchmark exported in the same invocation, or else one the
trainer makes quickly on a small sample. It is registered and deployed on a ModelService served
on 127.0.0.1, as the chain deploys it: the endpoint forwards to the deployed model's own serving
container (``python -m model_server``). ``bench.serve_load`` then sends a bounded load (a count
and a time limit per level) from its own process: one instance per request for latency, 100 per
request for throughput, at 1, 4 and 16 concurrent clients. The baselines: the same SavedModel
called in this process, and the container loaded directly at 16 clients (what the endpoint's hop
costs). The hypervisor's CPU steal during the 16-client level is reported beside its latency.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench.processes import python_command, run_checked
from bench.report import format_table, latency_summary, per_second, ratio
from bench.serve_load import INSTANCES
from bench.settings import BenchSettings

NAME = "serve"
CLIENTS = (1, 4, 16)
BATCH = 100
ENDPOINT = "bench"
TARGET_P99_MS = 10.0
TARGET_INSTANCES_PER_S = 20_000


def quick_model(work: Path) -> str:
    """Train and export a model on a small sample in a few seconds; returns its directory."""
    from bench.preprocess_baseline import preprocess
    from natality_sample import PARQUET_FILE, write_sample

    write_sample(work / "sample", rows=3000, seed=17)
    preprocess(work / "sample" / PARQUET_FILE, work / "data")
    run_checked(python_command("trainer.task", "--data-dir", str(work / "data"), "--job-dir", str(work / "job"),
                               "--num-train-examples", "2000", "--num-evals", "1", "--batch-size", "200"),
                timeout_s=600, what="training the model to serve")
    return str(work / "job" / "model")


def _timed_calls(call, count: int, max_seconds: float) -> tuple[list[float], float]:
    call()  # the first call traces and warms; not measured
    latencies = []
    began = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - start) * 1000)
        if time.perf_counter() - began > max_seconds:
            break
    return latencies, time.perf_counter() - began


def in_process_figures(call_single, call_batch, count: int, max_seconds: float) -> dict:
    single, _ = _timed_calls(call_single, count, max_seconds)
    batch, batch_s = _timed_calls(call_batch, max(1, count // 5), max_seconds)
    return {"single": latency_summary(single),
            "batch_instances_per_s": per_second(len(batch) * BATCH, batch_s)}


def run(settings: BenchSettings) -> dict:
    from local_cloud.vertex.http import ModelServiceServer
    from local_cloud.vertex.registry import ModelService
    from model_server.model_loading import load_saved_model
    from model_server.row_format import instances_to_columns

    work = settings.scratch(NAME)
    model_dir = settings.artifacts.get("model_dir")
    source = "exported by the train benchmark"
    if not model_dir or not Path(model_dir).is_dir():
        model_dir, source = quick_model(work), "trained quickly on 3,000 records"
    service = ModelService(work / "state", resolve_artifact_path=lambda uri: uri)
    server = None
    try:
        service.create_endpoint(ENDPOINT, ENDPOINT)
        upload = service.upload_model({"modelId": "babyweight", "model": {
            "displayName": "babyweight", "artifactUri": model_dir,
            "containerSpec": {"imageUri": "mlrelay-server:local", "predictRoute": "/predict",
                              "healthRoute": "/health"}}})
        version = f"{upload['response']['model']}@{upload['response']['modelVersionId']}"
        operation = service.deploy_model(ENDPOINT, {"deployedModel": {"model": version, "displayName": "bench"},
                                                    "trafficSplit": {"0": 100}})
        deployed = service.wait_operation(operation["name"], timeout=300)
        if not deployed.get("done") or deployed.get("error"):
            raise RuntimeError(f"the model did not deploy: {deployed.get('error') or 'timed out'}")

        count, seconds = settings.pick((1000, 10.0), (50, 2.0))
        model = load_saved_model(model_dir, lambda uri: uri)
        one = instances_to_columns(INSTANCES[:1], model.input_specs)
        hundred = instances_to_columns([INSTANCES[i % len(INSTANCES)] for i in range(BATCH)], model.input_specs)
        model_call = in_process_figures(lambda: model.predict(one), lambda: model.predict(hundred), count, seconds)
        server = ModelServiceServer(service, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.port}/v1/{service.parent}/endpoints/{ENDPOINT}:predict"
        requests, batch_requests, max_seconds = settings.pick((6000, 1000, 10.0), (60, 20, 2.0))

        def load_on(target: str, clients: tuple[int, ...]) -> dict:
            return run_checked(python_command(
                "bench.serve_load", "--url", target, "--clients", ",".join(map(str, clients)),
                "--instances", f"1,{BATCH}", "--requests", str(requests), "--batch-requests", str(batch_requests),
                "--max-seconds", str(max_seconds)),
                timeout_s=len(clients) * 2 * (max_seconds + 90), what="the load client").json_line()

        load = load_on(url, CLIENTS)
        container = service.serving_url(ENDPOINT, deployed["response"]["deployedModel"]["id"])
        direct = {level["instances_per_request"]: level
                  for level in load_on(container, (max(CLIENTS),))["levels"]}
    finally:
        service.close()
        if server is not None:
            server.close()
    levels = load["levels"]
    single = {str(level["clients"]): level for level in levels if level["instances_per_request"] == 1}
    batch = {str(level["clients"]): level for level in levels if level["instances_per_request"] == BATCH}
    p99_at_16 = single[str(max(CLIENTS))]["p99_ms"]
    best_batch = max((level["instances_per_s"] or 0) for level in batch.values())
    steal_at_16 = single[str(max(CLIENTS))].get("cpu_steal_pct")
    failures = sum(level["failures"] for level in [*levels, *direct.values()])
    retries = sum(level["connection_retries"] for level in levels)
    first_reset = next((level["first_connection_error"] for level in levels if level["first_connection_error"]), None)
    return {
        "model": source,
        "http_single": single,
        "http_batch": batch,
        "in_process_model": model_call,
        "container_direct_16_clients": {"single": direct[1], "batch": direct[BATCH]},
        "failures": failures,
        "connection_retries": retries,
        "first_connection_error": first_reset,
        "p99_ms_one_instance_16_clients": p99_at_16,
        "cpu_steal_pct_16_clients": steal_at_16,
        "instances_per_s_100_per_request": best_batch,
        "http_over_model_p50": ratio(single["1"]["p50_ms"], model_call["single"]["p50_ms"], 2),
        "target": f"p99 <= {TARGET_P99_MS} ms for one instance at 16 clients; "
                  f">= {TARGET_INSTANCES_PER_S:,} instances/s with {BATCH} per request",
        "target_met": {"p99": p99_at_16 is not None and p99_at_16 <= TARGET_P99_MS,
                       "throughput": best_batch >= TARGET_INSTANCES_PER_S},
    }


def table(result: dict) -> str:
    rows = []
    for clients in map(str, CLIENTS):
        s, b = result["http_single"][clients], result["http_batch"][clients]
        rows.append([f"HTTP, {clients} client(s)", s["p50_ms"], s["p99_ms"], s["requests_per_s"], b["p50_ms"],
                     b["instances_per_s"]])
    direct = result["container_direct_16_clients"]
    rows.append(["its container directly, 16 clients", direct["single"]["p50_ms"], direct["single"]["p99_ms"],
                 direct["single"]["requests_per_s"], direct["batch"]["p50_ms"], direct["batch"]["instances_per_s"]])
    model = result["in_process_model"]
    rows.append(["in-process model call", model["single"]["p50_ms"], model["single"]["p99_ms"], None, None,
                 model["batch_instances_per_s"]])
    met = result["target_met"]
    return format_table(
        f"serve: local endpoint on 127.0.0.1, load from a second process (model {result['model']})",
        ["caller", "1/req p50 ms", "1/req p99 ms", "1/req req/s", f"{BATCH}/req p50 ms", f"{BATCH}/req inst/s"],
        rows,
        [f"targets: p99 at 16 clients {result['p99_ms_one_instance_16_clients']} ms <= {TARGET_P99_MS}: "
         f"{'met' if met['p99'] else 'NOT met'}; {result['instances_per_s_100_per_request']:,.0f} instances/s "
         f">= {TARGET_INSTANCES_PER_S:,}: {'met' if met['throughput'] else 'NOT met'}",
         f"CPU time taken by the hypervisor (steal) during the 16-client level: "
         f"{_percent(result.get('cpu_steal_pct_16_clients'))} (latency grows with it on a shared machine)",
         f"failed requests: {result['failures']}; connections retried: {result['connection_retries']}"
         + (f" (first: {result['first_connection_error']})" if result["first_connection_error"] else "")],
    )


def _percent(value: float | None) -> str:
    return "not known" if value is None else f"{value:g}%"

