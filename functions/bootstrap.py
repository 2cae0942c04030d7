"""The composition root: the configuration and the platform adapters every entry point uses.

Built once per process, on the first event (not at import, so that a cold start pays for no
client it does not use). Tests put their own platform in its place with `override`, so the entry
points run in-process against fakes of the network boundary.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from functions.adapters import build_platform
from functions.config import Config
from functions.platform import Platform

_context: tuple[Config, Platform] | None = None


def context() -> tuple[Config, Platform]:
    """The configuration (from the environment) and the platform it selects."""
    global _context
    if _context is None:
        config = Config.from_env()
        _context = (config, build_platform(config))
    return _context


@contextlib.contextmanager
def override(config: Config, platform: Platform) -> Iterator[None]:
    """Serve every entry point from this configuration and platform while the block runs."""
    global _context
    saved, _context = _context, (config, platform)
    try:
        yield
    finally:
        _context = saved
