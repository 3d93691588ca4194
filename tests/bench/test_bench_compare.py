"""``stenod bench compare A.json B.json``: ratios of matched rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app


def _write(path: Path, result: object) -> Path:
    path.write_text(result.model_dump_json())  # type: ignore[attr-defined]
    return path


def test_engine_ratios(tmp_path: Path, engine_result: Callable[..., object]) -> None:
    a = _write(tmp_path / "a.json", engine_result([("tiny.en", "int8", 1, 0.10, 300.0, 0.06),
                                                   ("base", "int8", 1, 0.20, 400.0, 0.05)]))
    b = _write(tmp_path / "b.json", engine_result([("tiny.en", "int8", 1, 0.05, 330.0, 0.06),
                                                   ("base", "int8", 2, 0.10, 400.0, 0.05)]))
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert len(rows) == 1  # base t=1 and base t=2 are different configurations
    assert rows[0]["key"] == "tiny.en faster-whisper cpu/int8 t=1"
    assert rows[0]["ratios"]["rtf"] == pytest.approx(0.5)
    assert rows[0]["ratios"]["peak_rss_mb"] == pytest.approx(1.1)
    assert rows[0]["ratios"]["wer"] == pytest.approx(1.0)

    table = CliRunner().invoke(app, ["bench", "compare", str(a), str(b)])
    assert table.exit_code == 0
    assert "| tiny.en faster-whisper cpu/int8 t=1 | 0.1 | 0.05 | 0.50 |" in table.output


def test_server_ratios(tmp_path: Path, server_result: Callable[..., object]) -> None:
    a = _write(tmp_path / "a.json", server_result([(1, 10.0, 2.0, 0), (4, 20.0, 4.0, 10)]))
    b = _write(tmp_path / "b.json", server_result([(1, 15.0, 1.0, 0), (4, 30.0, 6.0, 5)]))
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r["ratios"] for r in json.loads(result.output)["rows"]}
    assert rows["concurrency 1"]["throughput_audio_s_per_s"] == pytest.approx(1.5)
    assert rows["concurrency 1"]["p95_s"] == pytest.approx(0.5)
    assert rows["concurrency 1"]["error_rate"] is None  # 0 errors in A: no ratio, not a division by zero
    assert rows["concurrency 4"]["p95_s"] == pytest.approx(1.5)
    assert rows["concurrency 4"]["error_rate"] == pytest.approx(0.5)


def test_different_kinds_cannot_be_compared(
    tmp_path: Path, engine_result: Callable[..., object], server_result: Callable[..., object]
) -> None:
    a = _write(tmp_path / "a.json", engine_result([("tiny.en", "int8", 1, 0.1, 300.0, None)]))
    b = _write(tmp_path / "b.json", server_result([(1, 10.0, 2.0, 0)]))
    result = CliRunner().invoke(app, ["bench", "compare", str(a), str(b)])
    assert result.exit_code == 2
    assert "cannot compare a engines result with a server result" in result.output


def test_not_a_result_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["bench", "compare", str(bad), str(bad)])
    assert result.exit_code == 2
    assert "not JSON" in result.output
    missing = CliRunner().invoke(app, ["bench", "compare", str(tmp_path / "none.json"), str(bad)])
    assert missing.exit_code == 2 and "No such file" in missing.output
