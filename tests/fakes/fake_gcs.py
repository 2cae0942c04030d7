"""gcp-storage-emulator on 127.0.0.1, taught the one precondition the chain relies on.

The emulator (2026.7.19) ignores request preconditions: an upload with ifGenerationMatch=0
replaces an existing object instead of failing. Cloud Storage answers such an upload with
412 conditionNotMet (https://cloud.google.com/storage/docs/request-preconditions), and the
create-only markers depend on it, so the emulator's upload handlers are wrapped here to do the
same. The emulator serves one request at a time, so the check and the write cannot interleave.
"""
from __future__ import annotations

import contextlib
import logging
from http import HTTPStatus
from typing import Iterator

from gcp_storage_emulator.exceptions import NotFound as EmulatorNotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.server import create_server

PRECONDITION_FAILED = {
    "error": {
        "code": 412,
        "message": "At least one of the pre-conditions you specified did not hold.",
        "errors": [{"domain": "global", "reason": "conditionNotMet",
                    "message": "At least one of the pre-conditions you specified did not hold.",
                    "locationType": "header", "location": "If-Match"}],
    }
}


def _object_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        return (data.get("meta") or {}).get("name") or data.get("name")
    return None


def _precondition_holds(request, storage) -> bool:
    wanted = request.query.get("ifGenerationMatch")
    if not wanted:
        return True
    try:
        current = storage.get_file_obj(request.params["bucket_name"], _object_name(request))["generation"]
    except EmulatorNotFound:
        current = "0"
    return str(current) == wanted[0]


def _guarded(upload):
    def guarded_upload(request, response, storage):
        if not _precondition_holds(request, storage):
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json(PRECONDITION_FAILED)
            return None
        return upload(request, response, storage)
    return guarded_upload


@contextlib.contextmanager
def gcs_emulator(port: int, bucket: str) -> Iterator[str]:
    """Run the emulator with one bucket; yields its URL (the STORAGE_EMULATOR_HOST value)."""
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    logging.getLogger("api.object").setLevel(logging.CRITICAL)  # it logs every 404 as an error
    originals = {name: getattr(objects, name) for name in ("_media_upload", "_multipart_upload")}
    for name, upload in originals.items():
        setattr(objects, name, _guarded(upload))
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for name, upload in originals.items():
            setattr(objects, name, upload)
