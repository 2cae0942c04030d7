"""The table `mlrelay releases` prints: one line per traffic change, why under it."""
from __future__ import annotations

from typing import Any, Mapping


def _split(split: Mapping[str, Any] | None) -> str:
    if not split:
        return "(nothing)"
    return " ".join(f"{model}:{percent}%" for model, percent in sorted(split.items()))


def format_release_table(releases: list[dict[str, Any]]) -> str:
    """A plain table of the endpoint's serving history, oldest first."""
    if not releases:
        return "no releases yet"
    lines = []
    for release in releases:
        version = str(release.get("model_version", "?")).rsplit("/", 1)[-1]
        lines.append(f"{str(release.get('time', '?'))[:19]}  {release.get('action', '?'):<11} {version:<16} "
                     f"{_split(release.get('from'))} → {_split(release.get('to'))}")
        retired = release.get("retired") or []
        lines.append(f"    by {release.get('by', '?')}; run {release.get('run_id', '?')}"
                     + (f"; retired {', '.join(retired)}" if retired else "")
                     + ("; gate skipped" if release.get("gate") == "skipped" else ""))
        if release.get("why"):
            lines.append(f"    why: {release['why']}")
    return "\n".join(lines)
