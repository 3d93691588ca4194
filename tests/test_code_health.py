"""The code-health gates, run as tests so CI (``scripts/test.sh``) enforces them: ruff (lint rules in
pyproject.toml), mypy (strict on the core packages, lenient elsewhere) and import-linter (the layer
rules of docs/ARCHITECTURE.md). Each failure prints the tool's own report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{tool} is not installed in {BIN}; pip install -r requirements.lock", pytrace=False)
    # The tree under test first, so a worktree is checked rather than the editable install.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(exe), *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-8000:]


def test_ruff() -> None:
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, _report(result)


def test_mypy() -> None:
    result = _run("mypy", "--cache-dir", str(REPO_ROOT / ".mypy_cache"))
    assert result.returncode == 0, _report(result)


def test_import_layers() -> None:
    result = _run("lint-imports", "--no-cache")
    assert result.returncode == 0, _report(result)
    assert "0 broken" in result.stdout, _report(result)
