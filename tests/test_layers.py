"""The layer order of design.md, held by import-linter (pyproject.toml [tool.importlinter]).

`make test` runs `lint-imports` before pytest; these tests run the same command against the
repository, and against a tiny tree of stand-in packages with the repository's own contracts,
where one deliberate crossing at a time must break the contract it crosses.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LAYERS = ["bench | deploy", "mlrelay", "local_cloud", "functions", "events"]
STANDALONE = {"beam_pipeline", "trainer", "natality_sample", "model_server"}
# The one import across the contracts that is declared rather than removed (see pyproject.toml).
DECLARED_EXCEPTIONS = {"trainer.evaluation -> natality_sample"}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the repository's contracts, on the packages found under ``cwd``."""
    command = Path(sys.executable).with_name("lint-imports")
    if not command.exists():
        command = Path(shutil.which("lint-imports") or "lint-imports")
    # lint-imports puts its working directory first on sys.path: the packages under cwd are the
    # ones analysed, even where the repository's own are installed.
    return subprocess.run([str(command), "--no-cache", "--no-logo", str(PYPROJECT)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def contracts() -> dict[str, dict]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_repository_keeps_its_import_contracts():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_say_what_the_design_says():
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    by_id = contracts()
    assert set(config["root_packages"]) == {"events", "functions", "local_cloud", "mlrelay", "bench", "deploy",
                                            *STANDALONE}
    assert by_id["layers"]["type"] == "layers" and by_id["layers"]["layers"] == LAYERS
    assert set(by_id["standalone"]["modules"]) == STANDALONE
    assert set(by_id["standalone-upward"]["source_modules"]) == STANDALONE
    assert set(by_id["standalone-upward"]["forbidden_modules"]) == set(config["root_packages"]) - STANDALONE
    assert {"tensorflow", "apache_beam"} <= set(by_id["functions-cold-start"]["forbidden_modules"])
    assert set(by_id["functions-no-discovery-client"]["source_modules"]) == {"events", "functions"}
    assert by_id["functions-no-discovery-client"]["forbidden_modules"] == ["googleapiclient"]
    assert by_id["acyclic"]["type"] == "acyclic_siblings"
    assert set(by_id["acyclic"]["ancestors"]) == set(config["root_packages"])
    declared = {entry for contract in by_id.values() for entry in contract.get("ignore_imports", [])}
    assert declared == DECLARED_EXCEPTIONS, "an exception to the layers is a design decision: say why in pyproject.toml"


# --- the contracts can fail -------------------------------------------------------------------------

# Each crossing: (contract id, {module path: source}) added to the stand-in tree.
CROSSINGS = {
    "events imports mlrelay": ("layers", {"events/run_request.py": "import mlrelay.cli\n"}),
    "functions reaches local_cloud through a module of its own": ("layers", {
        "functions/main.py": "from functions import helpers\n",
        "functions/helpers.py": "from local_cloud import cloud\n",
        "local_cloud/cloud.py": "",
    }),
    "bench imports deploy (siblings)": ("layers", {"bench/runner.py": "import deploy.deploy_helpers\n",
                                                   "deploy/deploy_helpers.py": ""}),
    "trainer imports beam_pipeline": ("standalone", {"trainer/data.py": "from beam_pipeline import records\n",
                                                     "beam_pipeline/records.py": ""}),
    "natality_sample imports events": ("standalone-upward", {"natality_sample/write.py": "import events\n"}),
    "model_server imports local_cloud": ("standalone-upward", {"model_server/app.py": "import local_cloud\n"}),
    "model_server imports trainer": ("standalone", {"model_server/app.py": "from trainer import model\n",
                                                    "trainer/model.py": ""}),
    "functions imports TensorFlow": ("functions-cold-start", {"functions/serving.py": "import tensorflow as tf\n"}),
    "functions reaches Beam through beam_pipeline": ("functions-cold-start", {
        "functions/preprocess.py": "from beam_pipeline import run\n",
        "beam_pipeline/run.py": "import apache_beam as beam\n",
    }),
    "functions imports google-api-python-client": ("functions-no-discovery-client", {
        "functions/schemas.py": "from googleapiclient.discovery_cache import get_static_doc\n"}),
    "two mlrelay modules import each other": ("acyclic", {"mlrelay/demo.py": "from mlrelay import runs\n",
                                                          "mlrelay/runs.py": "from mlrelay import demo\n"}),
}


def stand_in_tree(root: Path, extra: dict[str, str]) -> Path:
    """An empty package for each root package, with the one declared exception the contracts expect."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    files = {f"{package}/__init__.py": "" for package in config["root_packages"]}
    files["trainer/evaluation.py"] = "import natality_sample\n"
    files.update(extra)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_stand_in_tree_keeps_every_contract(tmp_path):
    result = lint_imports(stand_in_tree(tmp_path, {}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("crossing", CROSSINGS)
def test_a_crossing_breaks_its_contract(tmp_path, crossing):
    contract_id, files = CROSSINGS[crossing]
    result = lint_imports(stand_in_tree(tmp_path, files))
    assert result.returncode == 1, result.stdout + result.stderr
    name = " ".join(contracts()[contract_id]["name"].split())
    report = " ".join(result.stdout.split())  # the report wraps long names
    assert f"{name} BROKEN" in report
    assert "1 broken" in report, "only the crossed contract breaks"
