"""Where a setting comes from: defaults < TOML file < STENOD_* environment < command-line flags, and
secrets never printed by ``stenod config show``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app
from stenod.settings import load_settings

SECRETS = ("sk-from-toml-1", "sk-from-env-2", "sk-batch-3")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No STENOD_* variable of the developer's shell leaks into these tests (restored afterwards)."""
    for key in [k for k in os.environ if k.startswith("STENOD_")]:
        monkeypatch.delenv(key)
    yield monkeypatch


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "stenod.toml"
    path.write_text(
        '[model]\nname = "base"\nthreads = 2\nbeam_size = 3\n\n'
        '[server]\nport = 9000\nqueue_size = 7\napi_keys = ["sk-from-toml-1"]\n\n'
        '[batch]\nserver_api_key = "sk-batch-3"\n',
        encoding="utf-8",
    )
    return path


def test_file_then_environment_then_flags(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    config = _toml(tmp_path)
    only_file = load_settings(config_file=config)
    assert (only_file.model.name, only_file.model.threads, only_file.server.port) == ("base", 2, 9000)
    assert only_file.model.engine == "auto"  # not in the file: the default

    clean_env.setenv("STENOD_MODEL__THREADS", "3")
    clean_env.setenv("STENOD_SERVER__PORT", "9001")
    with_env = load_settings(config_file=config)
    assert (with_env.model.name, with_env.model.threads, with_env.server.port) == ("base", 3, 9001)
    assert with_env.server.queue_size == 7 and with_env.model.beam_size == 3  # file values the env leaves alone

    # CLI flags arrive as overrides; None means "flag not given" and keeps the lower sources.
    with_flags = load_settings(config_file=config, model={"threads": 4, "name": None}, server={"port": 9002})
    assert (with_flags.model.name, with_flags.model.threads, with_flags.server.port) == ("base", 4, 9002)
    assert with_flags.server.queue_size == 7


def test_config_file_from_the_environment(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STENOD_CONFIG_FILE", str(_toml(tmp_path)))
    assert load_settings().model.name == "base"
    other = tmp_path / "other.toml"
    other.write_text('[model]\nname = "tiny.en"\n', encoding="utf-8")
    assert load_settings(config_file=other).model.name == "tiny.en"  # --config wins over the variable


def test_config_show_reports_the_merge_and_redacts_secrets(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    env = {"STENOD_SERVER__API_KEYS": "sk-from-env-2", "STENOD_MODEL__THREADS": "3", "HF_HUB_OFFLINE": "1",
           "STENOD_MODEL__CACHE_DIR": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, ["config", "show", "--config", str(_toml(tmp_path))], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["model"]["name"], data["model"]["threads"], data["server"]["port"]) == ("base", 3, 9000)
    assert data["server"]["api_keys"] and all(k == "**********" for k in data["server"]["api_keys"])
    assert data["batch"]["server_api_key"] == "**********"
    for secret in SECRETS:
        assert secret not in result.output
