"""Build the trainer's source distribution, the package Vertex AI custom training installs.

The repository root holds the whole project (with its own pyproject.toml); the trainer's
sdist must hold only ``trainer/`` and ``natality_sample/``. So both are staged in a temporary
directory with ``trainer/setup.py`` at its root, and ``setup.py sdist`` runs there.

deploy.sh builds it (``deploy_helpers.py build-sdist``) and uploads it for the training jobs. It
reads the repository's own files, so it lives with deploy/ rather than in the installed package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINER_PACKAGES = ("trainer", "natality_sample")
# trainer/setup.py goes to the staging root, not into the package (where importing it would
# run setup()).
_IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", "tests", "build", "dist", "setup.py"
)


class PackagingError(RuntimeError):
    """The trainer sdist could not be built."""


def build_trainer_sdist(dist_dir: str | Path, repo_root: str | Path = REPO_ROOT) -> Path:
    """Build ``mlrelay-trainer-<version>.tar.gz`` into ``dist_dir`` and return its path.

    ``natality_sample/`` is copied as it is, or left out when absent: the trainer runs without it.
    """
    repo_root = Path(repo_root)
    setup_py = repo_root / "trainer" / "setup.py"
    if not setup_py.is_file():
        raise PackagingError(f"no trainer/setup.py under {repo_root}")
    dist_dir = Path(dist_dir).resolve()
    dist_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlrelay-trainer-sdist-") as staging_name:
        staging = Path(staging_name)
        for package in TRAINER_PACKAGES:
            source = repo_root / package
            if source.is_dir():
                shutil.copytree(source, staging / package, ignore=_IGNORED)
        package_dir = staging / "natality_sample"
        if not package_dir.exists():
            # setup.py names both packages; an empty one keeps the sdist buildable.
            package_dir.mkdir()
            (package_dir / "__init__.py").write_text('"""Not shipped in this build."""\n')
        shutil.copy2(setup_py, staging / "setup.py")
        before = set(dist_dir.glob("*.tar.gz"))
        result = subprocess.run(
            [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist_dir)],
            cwd=staging,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise PackagingError(f"setup.py sdist failed ({result.returncode}): {result.stderr[-2000:]}")
    built = sorted(set(dist_dir.glob("*.tar.gz")) - before) or sorted(
        dist_dir.glob("mlrelay[-_]trainer-*.tar.gz"), key=lambda path: path.stat().st_mtime
    )
    if not built:
        raise PackagingError(f"setup.py sdist wrote no archive into {dist_dir}")
    return built[-1]
