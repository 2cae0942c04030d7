"""``python -m bench.demo_run --root DIR [--rows N] [--request JSON]``: what ``mlrelay demo --json`` runs.

The ``demo`` benchmark runs the demo through this module so that ``--quick`` can shrink the
training through the run request, which the demo command does not expose.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_run")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--request", type=json.loads, default=None, help="run request keys to add (JSON object)")
    args = parser.parse_args(argv)
    from mlrelay.demo import run_demo

    return run_demo(args.root, rows=args.rows, as_json=True, request=args.request)


if __name__ == "__main__":
    sys.exit(main())
