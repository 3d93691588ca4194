"""``stenod bench recommend``: sizing from measured RTF, memory and WER."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app

# model, compute, threads, RTF, peak RSS MB, WER (on a 2-core machine)
ROWS = [
    ("tiny.en", "int8", 1, 0.05, 300.0, 0.060),
    ("tiny.en", "int8", 2, 0.035, 310.0, 0.060),
    ("base", "int8", 1, 0.12, 450.0, 0.045),
    ("base", "int8", 2, 0.08, 460.0, 0.045),
    ("base", "float32", 1, 0.25, 700.0, 0.044),
]


@pytest.fixture
def result_file(tmp_path: Path, engine_result: Callable[..., object]) -> Path:
    path = tmp_path / "engines.json"
    path.write_text(engine_result(ROWS).model_dump_json())  # type: ignore[attr-defined]
    return path


def _recommend(path: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = CliRunner().invoke(app, ["bench", "recommend", str(path), "--json", *args])
    return result.exit_code, json.loads(result.output)


def test_picks_the_most_accurate_model_that_fits_and_the_cheapest_way_to_run_it(result_file: Path) -> None:
    code, rec = _recommend(result_file, "--target-audio-hours-per-hour", "10", "--latency-budget-s", "10")
    assert code == 0
    chosen = rec["chosen"]
    # base float32 is 0.1 point better but within tolerance of base int8, which is twice as fast
    assert (chosen["model"], chosen["compute_type"]) == ("base", "int8")
    # 2 cores: 2 slots x 1 thread (2 x 1/0.12 x 0.7 = 11.7 audio s/s) beat 1 slot x 2 threads (8.75)
    assert chosen["threads_per_slot"] == 1 and chosen["slots_per_machine"] == 2
    assert chosen["capacity_audio_s_per_s"] == pytest.approx(2 / 0.12 * 0.7)
    assert chosen["machines"] == 1
    assert chosen["latency_s"] == pytest.approx(0.12 * 30)
    # weights once plus one working set (peak - after load = 50 MB) per extra slot
    assert chosen["memory_mb"] == pytest.approx(450 + 50)


def test_more_load_means_more_machines(result_file: Path) -> None:
    _, rec = _recommend(result_file, "--target-audio-hours-per-hour", "100", "--latency-budget-s", "10")
    assert rec["chosen"]["model"] == "base"
    assert rec["chosen"]["machines"] == 9  # ceil(100 / 11.67)


def test_tight_latency_budget_falls_back_to_a_faster_model(result_file: Path) -> None:
    # base needs >= 0.08 x 30 = 2.4 s per 30 s request; tiny.en 1.05 s at 2 threads
    _, rec = _recommend(result_file, "--latency-budget-s", "2")
    assert rec["chosen"]["model"] == "tiny.en"
    assert any("latency" in r for r in rec["reasons"])


def test_memory_limit_excludes_configurations(result_file: Path) -> None:
    _, rec = _recommend(result_file, "--max-memory-gb", "0.4")
    assert rec["chosen"]["model"] == "tiny.en"
    assert rec["chosen"]["memory_mb"] <= 0.4 * 1024


def test_more_cores_give_more_slots(result_file: Path) -> None:
    # 16 x 1 thread: 16 / 0.12 x 0.7 = 93 audio s/s, one machine; 8 x 2 threads: 70, two machines
    _, rec = _recommend(result_file, "--cores", "16", "--target-audio-hours-per-hour", "90")
    assert rec["chosen"]["slots_per_machine"] == 16 and rec["chosen"]["machines"] == 1
    # when both need the same number of machines, the lower latency (more threads per call) wins
    _, rec = _recommend(result_file, "--cores", "16", "--target-audio-hours-per-hour", "100")
    assert rec["chosen"]["machines"] == 2 and rec["chosen"]["threads_per_slot"] == 2


def test_nothing_fits_is_explained_with_exit_1(result_file: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "recommend", str(result_file), "--latency-budget-s", "0.5"])
    assert result.exit_code == 1
    assert "no measured configuration fits" in result.output
    assert "tiny.en faster-whisper cpu/int8 t=2" in result.output  # the fastest one is named


def test_table_output_names_the_choice(result_file: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "recommend", str(result_file)])
    assert result.exit_code == 0
    assert "Recommendation: model base (faster-whisper, cpu/int8), 1 thread(s) per slot, 2 slot(s) per machine, 1 machine(s)." in result.output
    assert "**chosen**" in result.output


def test_server_result_is_refused(tmp_path: Path, server_result: Callable[..., object]) -> None:
    path = tmp_path / "server.json"
    path.write_text(server_result([(1, 10.0, 1.0, 0)]).model_dump_json())  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["bench", "recommend", str(path)])
    assert result.exit_code == 2
    assert "needs a `stenod bench engines` result" in result.output


def test_equal_machine_count_prefers_lower_wer_over_lower_latency(
    tmp_path: Path, engine_result: Callable[..., object]
) -> None:
    path = tmp_path / "tie.json"
    # both need one machine for 5 audio h/h; tiny is faster, base is 0.3 points more accurate
    path.write_text(engine_result([("tiny.en", "int8", 1, 0.10, 300.0, 0.044),
                                   ("base", "int8", 1, 0.15, 400.0, 0.041)]).model_dump_json())  # type: ignore[attr-defined]
    _, rec = _recommend(path, "--target-audio-hours-per-hour", "5")
    assert rec["chosen"]["model"] == "base" and rec["chosen"]["machines"] == 1


def test_states_sample_size_languages_and_the_serve_command(result_file: Path) -> None:
    code, rec = _recommend(result_file)
    assert code == 0
    assert rec["sample"].startswith("measured on 1 file(s), 1.7 min of audio (1 with reference transcripts)")
    assert "small sample" in rec["sample"] and rec["reasons"][0] == rec["sample"]
    assert rec["chosen"]["languages"] == "multilingual (99)"
    assert rec["serve_command"] == ("stenod serve --model base --engine faster-whisper --device cpu "
                                    "--compute-type int8 --threads 1 --slots 2")
    table = CliRunner().invoke(app, ["bench", "recommend", str(result_file)]).output
    assert "| tiny.en faster-whisper cpu/int8 t=1 | en |" in table
    assert "small sample" in table
    assert "Run it on each machine with:\n  stenod serve --model base" in table


def test_an_english_only_choice_is_said_so(result_file: Path) -> None:
    _, rec = _recommend(result_file, "--latency-budget-s", "2")
    assert rec["chosen"]["model"] == "tiny.en" and rec["chosen"]["languages"] == "en"
    assert any("tiny.en is English-only" in r for r in rec["reasons"])


def test_the_serve_command_it_prints_is_accepted_by_serve(result_file: Path) -> None:
    """Every flag of the printed command exists and takes that value (checked up to settings)."""
    import shlex

    from stenod.cli.common import build_settings

    _, rec = _recommend(result_file)
    args = shlex.split(rec["serve_command"])[2:]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    settings = build_settings(None, model={"name": pairs["--model"], "engine": pairs["--engine"],
                                           "device": pairs["--device"], "compute_type": pairs["--compute-type"],
                                           "threads": int(pairs["--threads"])},
                              server={"slots": int(pairs["--slots"])})
    assert (settings.model.threads, settings.server.slots) == (1, 2)
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert all(flag in help_text for flag in pairs)
