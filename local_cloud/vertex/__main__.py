"""Run the local Vertex AI registry and endpoints on their own: ``python -m local_cloud.vertex --state-dir DIR``."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Sequence

from local_cloud.vertex.http import ModelServiceServer
from local_cloud.vertex.registry import ModelService


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local_cloud.vertex",
        description="Local Vertex AI Model Registry and Endpoints, speaking Vertex AI's REST JSON (v1).",
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--location", default="us-central1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--endpoint-id", help="create this endpoint at start, as deploy.sh does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    service = ModelService(args.state_dir, args.project, args.location)
    if args.endpoint_id:
        service.create_endpoint(args.endpoint_id, args.endpoint_id)
    server = ModelServiceServer(service, port=args.port)
    print(f"serving http://127.0.0.1:{server.port}/v1/{service.parent}/", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        service.close()
        server.close()


if __name__ == "__main__":
    main()
