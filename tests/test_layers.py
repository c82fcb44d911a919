"""The layer map (README, Layout) holds: `lint-imports` keeps every contract in pyproject.toml.

And the check can fail: the same contracts, run on a copy of the package with one upward import
added, must name the broken contract and the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _lint(lint_imports: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports in `root` (it reads root/pyproject.toml and imports rlscale from root);
    wide columns so contract names and chains are not wrapped."""
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_contract_is_kept(lint_imports):
    proc = _lint(lint_imports, REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.fixture()
def package_copy(tmp_path):
    """A copy of rlscale/ and the contracts, to break on purpose."""
    shutil.copytree(
        REPO_ROOT / "rlscale", tmp_path / "rlscale", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(module: Path, statement: str) -> None:
    module.write_text(module.read_text() + f"\n{statement}  # added by tests/test_layers.py\n")


@pytest.mark.parametrize(
    ("module", "statement", "contract", "chain"),
    [
        (
            "serving/model.py",
            "import rlscale.evaluation",
            "rlscale layers",
            "rlscale.serving.model -> rlscale.evaluation",
        ),
        (
            "deploy/decide.py",
            "import torch",
            "the live controller never imports",
            "rlscale.deploy.decide -> torch",
        ),
        (
            "policies/hpa.py",
            "from rlscale.envs import cluster",
            "policies never import",
            "rlscale.policies.hpa -> rlscale.envs",
        ),
    ],
)
def test_an_added_forbidden_import_breaks_its_contract(
    lint_imports, package_copy, module, statement, contract, chain
):
    _add_import(package_copy / "rlscale" / module, statement)
    proc = _lint(lint_imports, package_copy)
    assert proc.returncode != 0, proc.stdout
    broken = [line for line in proc.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), proc.stdout
    assert chain in proc.stdout
