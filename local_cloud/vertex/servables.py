"""A deployed model's loaded form in the local endpoint, loaded on first use after a restart."""

from __future__ import annotations

import threading
from typing import Callable

from model_server.errors import ApiError
from model_server.model_loading import LoadedModel


class Servable:
    """A deployed model's loaded form, loaded on first use when the service restarts."""

    def __init__(self, artifact_uri: str, loader: Callable[[str], LoadedModel], model: LoadedModel | None = None):
        self.artifact_uri = artifact_uri
        self._loader = loader
        self._model = model
        self._lock = threading.Lock()

    @property
    def loaded(self) -> LoadedModel | None:
        """The model if it is loaded already, without loading it."""
        return self._model

    def get(self, deployed_model_id: str) -> LoadedModel:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                try:
                    self._model = self._loader(self.artifact_uri)
                except Exception as exc:  # any load failure makes the model unavailable, not the service
                    raise ApiError(
                        "UNAVAILABLE",
                        f"deployed model {deployed_model_id} could not be loaded from {self.artifact_uri}: {exc}",
                    ) from None
            return self._model
