"""``stenod bench engines`` on a real model: one configuration, two short files, few repeats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.bench.schema import EngineBenchResult, json_schema, load_result_or_raise
from stenod.cli.main import app

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
JFK = CORPUS / "en-misc-short" / "audio" / "jfk.flac"
SHORT_LIBRISPEECH = CORPUS / "librispeech-clean100-a" / "audio" / "19-198-0000.flac"  # "NORTHANGER ABBEY", ~2 s


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("bench-engines")
    result = CliRunner().invoke(app, [
        "bench", "engines", "--models", "tiny.en", "--threads", "1", "--compute-types", "int8",
        "--file", str(JFK), "--file", str(SHORT_LIBRISPEECH), "--repeats", "2", "--warmup", "1",
        "--output-dir", str(out),
    ], env={"STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 0, result.output
    return result.output, out


def _result(out: Path) -> EngineBenchResult:
    parsed = load_result_or_raise((out / "result.json").read_text())
    assert isinstance(parsed, EngineBenchResult)
    return parsed


def test_result_json_follows_the_schema(tiny_run: tuple[str, Path]) -> None:
    _, out = tiny_run
    raw = json.loads((out / "result.json").read_text())
    assert raw["schema_version"] == 1 and raw["kind"] == "engines"
    result = _result(out)
    assert result.command.startswith("stenod bench engines --models tiny.en")
    assert result.host.usable_cores >= 1 and result.host.cpu_model
    assert result.host.gpu_names == [] or all(result.host.gpu_names)
    assert [Path(f.file).name for f in result.files] == ["jfk.flac", "19-198-0000.flac"]
    # every key of the file is declared in the published schema
    props = json_schema()["$defs"]["EngineBenchResult"]["properties"]  # type: ignore[index]
    assert set(raw) <= set(props)


def test_rtf_is_inference_time_over_audio_duration(tiny_run: tuple[str, Path]) -> None:
    run = _result(tiny_run[1]).runs[0]
    assert run.status == "ok", run.error
    assert run.rtf is not None and run.inference_s is not None
    assert run.audio_s == pytest.approx(sum(f.audio_s for f in run.files), abs=0.01)
    assert run.files[0].audio_s == pytest.approx(11.0, abs=0.05)
    assert run.rtf.n == 2 and run.inference_s.n == 2
    assert run.rtf.median == pytest.approx(run.inference_s.median / run.audio_s, rel=1e-6)
    assert run.rtf.min <= run.rtf.median <= run.rtf.max
    for f in run.files:
        assert f.rtf.median == pytest.approx(f.inference_s.median / f.audio_s, rel=1e-6)
    # one pass is the sum of the files' times, so its median lies within the files' summed range
    assert sum(f.inference_s.min for f in run.files) <= run.inference_s.median + 1e-9
    assert run.inference_s.median <= sum(f.inference_s.max for f in run.files) + 1e-9
    assert run.cpu_s is not None and run.cpu_rtf is not None and run.cpu_s.median > 0
    assert run.cpu_rtf.median == pytest.approx(run.cpu_s.median / run.audio_s, rel=1e-6)
    assert run.speed_x == pytest.approx(1 / run.rtf.median)
    assert run.total_s == pytest.approx(run.load_s + run.decode_s + run.inference_s.median)


def test_memory_is_measured_and_accuracy_scored(tiny_run: tuple[str, Path]) -> None:
    run = _result(tiny_run[1]).runs[0]
    assert run.rss_before_load_mb is not None and run.rss_after_load_mb is not None and run.peak_rss_mb is not None
    assert 0 < run.rss_before_load_mb < run.rss_after_load_mb <= run.peak_rss_mb
    assert run.peak_rss_mb < 4096
    assert run.load_s > 0 and run.warmup_s > 0
    assert run.wer_files == 2 and run.wer is not None and run.wer < 0.15
    assert "fellow Americans" in run.files[0].hypothesis


def test_markdown_table_and_plot_are_written(tiny_run: tuple[str, Path]) -> None:
    output, out = tiny_run
    assert "| tiny.en | faster-whisper | cpu | int8 | 1 |" in output
    assert "RTF median (min-max)" in (out / "result.md").read_text()
    png = out / "rtf_vs_threads.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_reprints_a_saved_result(tiny_run: tuple[str, Path]) -> None:
    result = CliRunner().invoke(app, ["bench", "report", str(tiny_run[1] / "result.json")])
    assert result.exit_code == 0
    assert "| tiny.en | faster-whisper | cpu | int8 | 1 |" in result.output


def test_unknown_model_is_an_error_row_and_a_failed_exit(tmp_path: Path, cache_dir: Path) -> None:
    result = CliRunner().invoke(app, [
        "bench", "engines", "--models", "no-such-model", "--threads", "1", "--compute-types", "int8",
        "--file", str(SHORT_LIBRISPEECH), "--repeats", "1", "--no-plots", "--output-dir", str(tmp_path),
    ], env={"STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 1
    assert "unknown model 'no-such-model'" in result.output
    assert "no configuration could run" in result.output
    run = _result(tmp_path).runs[0]
    assert run.status == "error" and run.error and run.rtf is None


def test_missing_corpus_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "engines", "--corpus", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "not a directory" in result.output


def test_published_schema_matches_the_code() -> None:
    published = json.loads((REPO / "docs" / "bench-result.schema.json").read_text())
    assert published == json_schema(), "regenerate with: stenod bench schema > docs/bench-result.schema.json"
    out = subprocess.run([str(Path(sys.executable).parent / "stenod"), "bench", "schema"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == published


def test_result_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"schema_version": 99, "kind": "engines"}))
    result = CliRunner().invoke(app, ["bench", "report", str(bad)])
    assert result.exit_code == 2
    assert "schema_version 99" in result.output


def test_whisper_cpp_engine_is_measured_on_converted_weights(tmp_path: Path, cache_dir: Path) -> None:
    result = CliRunner().invoke(app, [
        "bench", "engines", "--models", "tiny.en", "--engines", "whisper.cpp", "--threads", "1",
        "--compute-types", "int8", "--file", str(SHORT_LIBRISPEECH), "--repeats", "1", "--no-plots",
        "--output-dir", str(tmp_path),
    ], env={"STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 0, result.output
    run = _result(tmp_path).runs[0]
    assert (run.engine, run.status) == ("whisper.cpp", "ok"), run.error
    assert run.rtf is not None and run.peak_rss_mb is not None and run.peak_rss_mb > 0
    assert run.wer is not None and run.wer < 0.5


def test_cuda_without_a_gpu_is_an_error_row(tmp_path: Path, cache_dir: Path) -> None:
    from stenod.bench.host import gpu_names

    if gpu_names():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(app, [
        "bench", "engines", "--models", "tiny.en", "--devices", "cuda", "--threads", "1",
        "--compute-types", "float16", "--file", str(SHORT_LIBRISPEECH), "--no-plots", "--output-dir", str(tmp_path),
    ], env={"STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 1
    assert "no CUDA device found" in result.output
    run = _result(tmp_path).runs[0]
    assert (run.device, run.status, run.gpu_name) == ("cuda", "error", None)


@pytest.mark.slow
def test_int8_costs_less_cpu_and_memory_than_float32_at_equal_accuracy(tmp_path: Path, cache_dir: Path) -> None:
    """The measurement behind the CPU default compute type (docs/BENCHMARKS.md), on CPU time,
    which holds on a shared machine where wall-clock RTF does not."""
    result = CliRunner().invoke(app, [
        "bench", "engines", "--models", "tiny.en", "--threads", "1", "--compute-types", "int8,float32",
        "--corpus", str(CORPUS / "librispeech-clean100-a"), "--limit", "4", "--file", str(JFK),
        "--repeats", "2", "--no-plots", "--output-dir", str(tmp_path),
    ], env={"STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 0, result.output
    int8, float32 = _result(tmp_path).runs
    assert int8.cpu_rtf is not None and float32.cpu_rtf is not None
    assert int8.cpu_rtf.median < float32.cpu_rtf.median
    assert int8.peak_rss_mb is not None and float32.peak_rss_mb is not None
    assert int8.peak_rss_mb < float32.peak_rss_mb
    assert int8.wer is not None and float32.wer is not None
    assert abs(int8.wer - float32.wer) < 0.02
