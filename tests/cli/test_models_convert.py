"""``stenod models convert SRC --to ggml`` and ``stenod transcribe --engine whisper.cpp`` with a
bundled model (converted on first use into the model cache)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app
from stenod.models.ggml import validate_ggml_file
from tests.conftest import JFK, JFK_TEXT
from tests.wer_utils import normalize

runner = CliRunner()


@pytest.fixture()
def env(cache_dir: Path) -> dict[str, str]:
    return {"STENOD_MODEL__CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}


def _invoke(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return runner.invoke(app, args, env=env)


def _bundled_dir(name: str, cache_dir: Path) -> Path:
    from stenod.models import resolve_model_or_raise

    return resolve_model_or_raise(name, cache_dir=cache_dir, offline=True).path


def test_convert_bundled_default_name_in_cwd(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke(["models", "convert", "tiny.en", "--to", "ggml", "--quantize", "q5_0"], env)
    assert result.exit_code == 0, result.output
    out = tmp_path / "ggml-tiny.en-q5_0.bin"
    info = validate_ggml_file(out)
    assert info.weight_type == "q5_0" and info.hparams.n_vocab == 51864
    assert "wrote ggml-tiny.en-q5_0.bin" in result.output and "English-only" in result.output


def test_convert_folder_to_explicit_output(tmp_path: Path, env: dict[str, str], cache_dir: Path) -> None:
    folder = tmp_path / "my-tiny"
    shutil.copytree(_bundled_dir("tiny.en", cache_dir), folder)
    (folder / "vocabulary.txt").unlink()  # tokenizer.json alone is enough
    out = tmp_path / "out" / "custom.bin"
    out.parent.mkdir()
    result = _invoke(["models", "convert", str(folder), "--output", str(out)], env)
    assert result.exit_code == 0, result.output
    assert validate_ggml_file(out).weight_type == "f16"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--quantize", "q4_1"], 2, "--quantize must be one of f16, q8_0, q5_0"),
        (["--to", "onnx"], 2, "choose ggml or hf"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], code: int, message: str, env: dict[str, str]) -> None:
    result = _invoke(["models", "convert", "tiny.en", *args], env)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


def _fake_model(tmp_path: Path, cache_dir: Path, model_bin: bytes) -> Path:
    folder = tmp_path / "fake"
    folder.mkdir()
    src = _bundled_dir("tiny.en", cache_dir)
    for side in ("config.json", "vocabulary.txt"):
        shutil.copy(src / side, folder / side)
    (folder / "model.bin").write_bytes(model_bin)
    return folder


@pytest.mark.parametrize("kind", ["truncated", "not-whisper"])
def test_bad_model_bin_is_rejected_cleanly(kind: str, tmp_path: Path, env: dict[str, str], cache_dir: Path) -> None:
    real = (_bundled_dir("tiny.en", cache_dir) / "model.bin").read_bytes()
    payload = real[: len(real) // 3] if kind == "truncated" else b"\x06\x00\x00\x00" + b"\x00" * 64
    folder = _fake_model(tmp_path, cache_dir, payload)
    out = tmp_path / "x.bin"
    result = _invoke(["models", "convert", str(folder), "-o", str(out)], env)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot convert"), result.output
    assert "model.bin" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".x.bin*"))


def test_missing_source_and_ggml_source(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(["models", "convert", str(tmp_path / "nope")], env)
    assert result.exit_code == 1 and "does not exist" in result.output
    monkeypatch.chdir(tmp_path)
    assert _invoke(["models", "convert", "tiny.en", "-q", "q8_0"], env).exit_code == 0
    result = _invoke(["models", "convert", str(tmp_path / "ggml-tiny.en-q8_0.bin")], env)
    assert result.exit_code == 1 and "already a ggml file" in result.output


def test_transcribe_with_whisper_cpp_engine_needs_no_manual_conversion(env: dict[str, str]) -> None:
    # A real process: the engine is native code (and this is what a user runs).
    proc = subprocess.run(
        [sys.executable, "-m", "stenod", "transcribe", "--model", "tiny.en", "--engine", "whisper.cpp",
         "--threads", "1", str(JFK)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False,
        env={**os.environ, **env, "GGML_NO_BACKTRACE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert normalize(proc.stdout) == normalize(JFK_TEXT)
    assert "whisper_" not in proc.stderr and "ggml_" not in proc.stderr  # native logs stay quiet
    assert Path(env["STENOD_MODEL__CACHE_DIR"], "ggml", "tiny.en-q8_0.bin").is_file()
