"""Helpers for the deployment tests: the shipped files under deploy/, and the real tools that check
them (nginx, Prometheus, promtool, systemd-analyze from Debian packages installed by
scripts/ci-deps.sh; docker-compose, hadolint, kubernetes-validate from requirements.lock).

A missing tool skips on a developer's machine and fails under CI=true, where scripts/ci-deps.sh and
requirements.lock must have installed it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def tool_or_skip(name: str) -> str:
    """Absolute path of a command-line tool: the test venv's bin folder first (PyPI tools), then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found:
        return found
    message = f"{name} not installed (scripts/ci-deps.sh installs the Debian ones, requirements.lock the rest)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
