"""The model service's state: one JSON document under the state directory, replaced atomically.

Models, endpoints, operations and the deploys still in progress are kept in it and the file is
replaced on every change, so a restart keeps every version and what is deployed, reloads the
deployed models and finishes the deploys that were in progress.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

STATE_FILE_NAME = "model_service.json"
STATE_FORMAT = 1


def empty_state() -> dict:
    return {
        "format": STATE_FORMAT,
        "counters": {"model": 0, "operation": 0, "deployedModel": 0},
        "models": {},
        "endpoints": {},
        "operations": {},
        "pendingDeploys": {},
    }


def read_state(path: Path) -> dict:
    """The document kept at ``path``, or an empty one when there is none yet."""
    if not path.exists():
        return empty_state()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the model service state {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a model service state of format {STATE_FORMAT}")
    return state


def write_state(path: Path, document: Mapping) -> None:
    """Replace ``path`` so that readers see the old or the new document, never a partial one."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def next_id(state: dict, counter: str) -> str:
    """The next id of a kind ("model", "operation", "deployedModel"), counted in the state."""
    state["counters"][counter] += 1
    return str(state["counters"][counter])
