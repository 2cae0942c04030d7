"""What every benchmark is given: the size (full or quick), a scratch directory, and options."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BenchSettings:
    """Options of one ``mlrelay bench`` invocation.

    ``quick`` runs every benchmark on a tiny size (seconds, for tests): the figures are then
    only a check that the benchmark works. ``artifacts`` lets a later benchmark reuse what an
    earlier one made in the same invocation (the ``serve`` benchmark serves the model that
    ``train`` exported).
    """

    work_dir: Path
    quick: bool = False
    poll_interval_s: float = 60.0
    poll_measure_interval_s: float | None = None
    runs: int | None = None
    concurrency: int = 3
    seeds: int | None = None
    artifacts: dict = field(default_factory=dict)

    def pick(self, full, quick):
        """The full-size value, or the quick one under ``--quick``."""
        return quick if self.quick else full

    def scratch(self, name: str) -> Path:
        """A fresh directory for one benchmark under the work directory."""
        path = Path(self.work_dir) / name
        path.mkdir(parents=True, exist_ok=True)
        return path
