"""The Google Cloud project the contract tests pretend to deploy to, and how they reach the fakes."""
from __future__ import annotations

import socket

from functions.config import Config

PROJECT, REGION, BUCKET = "mlrelay-test", "us-central1", "mlrelay-bucket"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
ENDPOINT = f"{PARENT}/endpoints/babyweight"

CONFIG = Config(
    platform="gcp", project=PROJECT, region=REGION, bucket=BUCKET, default_source="bigquery",
    dataflow_service_account=f"dataflow@{PROJECT}.iam.gserviceaccount.com",
    training_service_account=f"training@{PROJECT}.iam.gserviceaccount.com",
    training_image=f"{REGION}-docker.pkg.dev/{PROJECT}/mlrelay/trainer:0123456789abcdef",
    serving_image=f"{REGION}-docker.pkg.dev/{PROJECT}/mlrelay/server:fedcba9876543210",
    flex_template=f"gs://{BUCKET}/packages/preprocess-template.json", max_workers=3,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def credentials():
    """No credentials: the fakes accept any request, and nothing may reach Google."""
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()
