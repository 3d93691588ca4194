"""``stenod batch`` as a user runs it: real processes, exit codes, messages, files on disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stenod.cli.main import app
from tests.batch.conftest import LIBRI, MISC, make_good_dir, stenod_exe

DEADLINE_S = 120.0
CORPUS_LONG = LIBRI.parent.parent / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"


def _env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), "COLUMNS": "200"}


def _batch(args: list[str], cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stenod_exe(), "batch", *args], capture_output=True, text=True, env=_env(cache_dir),
                          timeout=DEADLINE_S)


def _leftovers(out: Path) -> list[str]:
    """Temp files or outputs without their siblings: what a clean stop must never leave."""
    return [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_two_workers_end_to_end_with_a_corrupt_file_in_the_middle(mixed_dir: Path, tmp_path: Path,
                                                                   cache_dir: Path) -> None:
    out = tmp_path / "out"
    done = _batch([str(mixed_dir), "-o", str(out), "--recursive", "--workers", "2", "-m", "tiny.en",
                   "--formats", "txt,srt"], cache_dir)
    assert done.returncode == 1, done.stderr  # some files failed
    assert "failed b_corrupt.flac: audio is truncated or corrupt" in done.stderr
    assert "failed d_notes.wav: not a readable audio file" in done.stderr
    assert "failed f_empty.mp3: file is empty (0 bytes)" in done.stderr
    assert "2 worker processes x 1 thread" in done.stderr
    assert "7: 4 ok, 3 failed" in done.stdout
    assert sorted(p.name for p in out.glob("*.txt")) == ["a_libri.txt", "c_austen.txt", "e_take.txt"]
    assert (out / "sub" / "a_libri.srt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files_ok"], summary["files_failed"], summary["files_total"]) == (4, 3, 7)

    rerun = _batch([str(mixed_dir), "-o", str(out), "--recursive", "-m", "tiny.en", "--formats", "txt,srt"], cache_dir)
    assert rerun.returncode == 1  # the failures still stand
    assert "0 to transcribe" in rerun.stderr
    assert "rerun with --retry-failed" in rerun.stderr


def test_ctrl_c_finishes_in_flight_work_and_a_rerun_completes_the_rest(tmp_path: Path, cache_dir: Path) -> None:
    src = make_good_dir(tmp_path / "in", {
        "1.flac": LIBRI / "1447-130550-0000.flac", "2.flac": LIBRI / "403-126855-0000.flac",
        "3.flac": LIBRI / "19-198-0000.flac", "4.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav",
        "5.wav": MISC / "sense_and_sensibility_01_austen_64kb-0930.wav",
    })
    out = tmp_path / "out"
    args = [str(src), "-o", str(out), "--workers", "1", "-m", "tiny.en"]
    proc = subprocess.Popen([stenod_exe(), "batch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(cache_dir))
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + DEADLINE_S
    while not (manifest.is_file() and manifest.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the first file finished
    stdout, stderr = proc.communicate(timeout=DEADLINE_S)

    assert proc.returncode == 130, stderr
    assert "Ctrl-C: finishing the files in flight" in stderr
    assert "(interrupted)" in stdout
    assert re.search(r"^error: interrupted after \d of 5 files \(rerun the same command to resume\)$", stderr, re.M), stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["files_pending"] >= 1
    assert summary["files_ok"] + summary["files_pending"] == 5
    assert _leftovers(out) == []
    done = {f["filename"] for f in summary["files"] if f["status"] == "ok"}
    for name in done:  # every finished file has all its outputs; nothing else has any
        assert all((out / f"{Path(name).stem}.{ext}").is_file() for ext in ("json", "srt", "vtt", "txt"))
    assert len(list(out.glob("*.txt"))) == len(done)

    rerun = _batch(args, cache_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} already done or kept, {5 - len(done)} to transcribe" in rerun.stderr
    final = json.loads((out / "summary.json").read_text())
    assert (final["files_ok"], final["files_from_earlier_run"], final["interrupted"]) == (5, len(done), False)
    assert len(list(out.glob("*.txt"))) == 5


@pytest.mark.slow
def test_second_ctrl_c_abandons_in_flight_files_without_partial_outputs(tmp_path: Path, cache_dir: Path) -> None:
    src = make_good_dir(tmp_path / "in", {"a.flac": LIBRI / "1447-130550-0000.flac",
                                          "b.wav": CORPUS_LONG, "c.wav": CORPUS_LONG})
    out = tmp_path / "out"
    proc = subprocess.Popen([stenod_exe(), "batch", str(src), "-o", str(out), "--workers", "2", "-m", "tiny.en"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache_dir))
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + DEADLINE_S
    while not (manifest.is_file() and manifest.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130
    assert "abandoning" in stderr and "leaked" not in stderr
    assert _leftovers(out) == [] and not list(out.glob("b.*")) and not list(out.glob("c.*"))
    assert json.loads((out / "summary.json").read_text())["files_pending"] == 2



@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/folder", "-o", "{out}"], "not a folder"),
        (["{src}", "-o", "{out}", "--formats", "txt,docx"], "unknown format 'docx'"),
        (["{src}", "-o", "{out}", "--language", "klingon"], "--language: unknown language 'klingon'"),
        (["{src}", "-o", "{out}", "--task", "summarize"], "'summarize' is not one of 'transcribe', 'translate'"),
        (["{src}", "-o", "{out}", "--server", "http://x", "--batch-size", "8"], "cannot be combined with --server"),
        (["{src}", "-o", "{out}", "--model", "no-such-model-anywhere"], "no-such-model-anywhere"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    argv = [a.format(src=tmp_path / "src", out=tmp_path / "out") for a in args]
    result = CliRunner().invoke(app, ["batch", *argv])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error: ")]) == 1


def test_batch_size_runs_one_process_with_the_batched_pipeline(tmp_path: Path, cache_dir: Path) -> None:
    src = make_good_dir(tmp_path / "in", {"1.flac": LIBRI / "1447-130550-0000.flac",
                                          "2.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav"})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(src), "-o", str(out), "-m", "tiny.en", "--batch-size", "4",
                                      "--formats", "vtt"],
                                env={"STENOD_MODEL__CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert "batched pipeline batch size 4" in result.output
    assert "He was not" in (out / "2.vtt").read_text()
    assert json.loads((out / "summary.json").read_text())["files_ok"] == 2


def _worker_pids(batch_pid: int) -> set[int]:
    """The pool's worker processes (spawned children running ``spawn_main``, not the resource tracker)."""
    import psutil

    pids: set[int] = set()
    for child in psutil.Process(batch_pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            pids.add(child.pid)
    return pids


def test_a_worker_process_that_dies_on_a_file_fails_that_file_only(tmp_path: Path, cache_dir: Path) -> None:
    """A real worker process killed (as the OOM killer would) while a file is in flight, twice: the
    batch retries the file alone once, then records it as failed and finishes the others with a
    fresh pool; exit code 1 because a file failed."""
    src = make_good_dir(tmp_path / "in", {"a_long.wav": CORPUS_LONG, "b.flac": LIBRI / "1447-130550-0000.flac",
                                          "c.flac": LIBRI / "403-126855-0000.flac"})
    out = tmp_path / "out"
    proc = subprocess.Popen([stenod_exe(), "batch", str(src), "-o", str(out), "--workers", "1", "-m", "tiny.en",
                             "--formats", "txt"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(cache_dir))
    killed: set[int] = set()
    deadline = time.monotonic() + DEADLINE_S
    try:
        # One worker, files in name order: until a result is recorded, a_long.wav is the file in flight.
        while len(killed) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "batch ended before its worker was killed"
            manifest = out / "manifest.jsonl"
            assert not (manifest.is_file() and "a_long" in manifest.read_text()), "a_long.wav finished first"
            for pid in _worker_pids(proc.pid) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    assert "failed a_long.wav: the worker process died while transcribing this file" in stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {f["filename"]: f["status"] for f in summary["files"]}
    assert status == {"a_long.wav": "failed", "b.flac": "ok", "c.flac": "ok"}, stdout
    assert sorted(p.name for p in out.glob("*.txt")) == ["b.txt", "c.txt"]
    assert _leftovers(out) == []


def test_subtitle_and_word_flags_shape_every_output(tmp_path: Path, cache_dir: Path) -> None:
    """The same subtitle controls as ``stenod transcribe``: one-word cues need word times, which the
    batch asks the engine for, and verbose_json carries the words when --word-timestamps is given."""
    src = make_good_dir(tmp_path / "in", {"2.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav"})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(src), "-o", str(out), "-m", "tiny.en", "--batch-size", "2",
                                      "--formats", "srt,verbose_json,txt", "--max-len", "1", "--word-timestamps"],
                                env={"STENOD_MODEL__CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    cues = [b.splitlines()[2] for b in (out / "2.srt").read_text().strip().split("\n\n")]
    assert len(cues) >= 5 and all(len(c.split()) == 1 for c in cues), cues
    words = [w["word"].strip() for w in json.loads((out / "2.verbose.json").read_text())["words"]]
    assert words == cues
    assert "He was not" in (out / "2.txt").read_text()


def test_subtitle_flags_warn_when_no_subtitle_format_is_written(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "src"), "-o", str(tmp_path / "out"),
                                      "--formats", "txt", "--max-line-width", "40"])
    assert result.exit_code == 0, result.output
    assert "--max-line-width only shape srt, vtt and tsv cues; no effect on txt" in result.output
    bad = CliRunner().invoke(app, ["batch", str(tmp_path / "src"), "-o", str(tmp_path / "out"),
                                   "--max-line-count", "2"])
    assert bad.exit_code == 2 and "--max-line-count needs --max-line-width" in bad.output
