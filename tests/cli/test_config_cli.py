"""``stenod config`` and the configuration error contract as a user meets them: a real process,
warnings for typos (file and line), one ``error:`` line naming the flag, variable or file:line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from stenod.cli.main import app


class _Run:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def stenod(*args: str, cache_dir: Path, env: dict[str, str] | None = None) -> _Run:
    """In-process (typer's runner): these commands load no model, and a process start costs seconds."""
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STENOD_")}
    environ.update({"HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), **(env or {})})
    result = CliRunner().invoke(app, list(args), env=environ)
    return _Run(result.exit_code, result.stdout, result.stderr)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_toml_keys_and_env_vars_are_warned_with_file_and_line(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "stenod.toml", '[model]\nname = "tiny.en"\nthread = 2\n\n[servr]\nport = 1\n')
    run = stenod("config", "show", "--config", str(cfg), cache_dir=tmp_path, env={"STENOD_MODEL__THREDS": "3"})
    assert run.returncode == 0, run.stderr
    assert f"warning: {cfg}:3: unknown key 'thread' in [model], ignored (did you mean 'threads'?)" in run.stderr
    assert f"warning: {cfg}:5: unknown section [servr], ignored (did you mean 'server'?)" in run.stderr
    assert "warning: environment variable STENOD_MODEL__THREDS is not a stenod setting" in run.stderr
    assert "STENOD_MODEL__THREADS" in run.stderr
    assert json.loads(run.stdout)["model"]["name"] == "tiny.en"


def test_bad_toml_names_file_line_and_column(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.toml", '[model]\nname = tiny\n')
    run = stenod("config", "show", "--config", str(cfg), cache_dir=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {cfg}:2:8: invalid TOML: Invalid value"


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    run = stenod("config", "show", cache_dir=tmp_path, env={"STENOD_CONFIG_FILE": str(tmp_path / "nope.toml")})
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'nope.toml'}: config file not found"


def test_bad_values_name_where_they_were_set(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.toml", '[model]\n\nengine = "foo"\n')
    from_file = stenod("config", "show", "--config", str(cfg), cache_dir=tmp_path)
    assert from_file.returncode == 2
    assert from_file.stderr.startswith(f"error: {cfg}:3: [model] engine: invalid value 'foo'")
    from_env = stenod("config", "show", cache_dir=tmp_path, env={"STENOD_SERVER__PORT": "abc"})
    assert from_env.returncode == 2 and from_env.stderr.startswith("error: STENOD_SERVER__PORT: invalid value 'abc'")
    from_flag = stenod("serve", "--engine", "bar", cache_dir=tmp_path)
    assert from_flag.returncode == 2
    assert from_flag.stderr.startswith("error: --engine: invalid value 'bar'"), from_flag.stderr
    for run in (from_file, from_env, from_flag):
        assert len(run.stderr.strip().splitlines()) == 1 and "model.engine" not in run.stderr


def test_show_prints_values_in_effect(tmp_path: Path) -> None:
    run = stenod("config", "show", cache_dir=tmp_path, env={"STENOD_SERVER__API_KEYS": "sk-secret-1"})
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["model"]["offline"] is True  # HF_HUB_OFFLINE=1 in the test environment
    assert data["model"]["threads"] >= 1 and data["server"]["slots"] >= 1 and data["batch"]["workers"] >= 1
    assert {"model.offline", "model.threads", "server.slots"} <= set(data["auto"])
    assert "sk-secret-1" not in run.stdout
    pinned = stenod("config", "show", cache_dir=tmp_path,
                    env={"STENOD_MODEL__THREADS": "3", "STENOD_SERVER__SLOTS": "5"})
    data = json.loads(pinned.stdout)
    assert (data["model"]["threads"], data["server"]["slots"]) == (3, 5)
    assert "model.threads" not in data["auto"] and "server.slots" not in data["auto"]


def test_worker_pool_is_checked_before_anything_starts(tmp_path: Path) -> None:
    """``stenod worker --pool`` (or STENOD_JOBS__WORKER_POOL) takes threads or prefork only; a bad
    one is a usage error naming where it came from, before the broker or the model is touched."""
    run = stenod("worker", "--pool", "solo", "--broker-url", "redis://127.0.0.1:1/0", cache_dir=tmp_path)
    assert run.returncode == 2 and "--pool" in run.stderr and "threads" in run.stderr, run.stderr
    run = stenod("worker", "--broker-url", "redis://127.0.0.1:1/0", cache_dir=tmp_path,
                 env={"STENOD_JOBS__WORKER_POOL": "gevent"})
    assert run.returncode == 2 and "STENOD_JOBS__WORKER_POOL" in run.stderr, run.stderr
