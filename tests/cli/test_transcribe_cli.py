"""``stenod transcribe`` as a user runs it: a real process, so exit codes, stdout/stderr split and
one-line errors are what a shell sees. tiny.en wherever the model does not matter."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from stenod.models import resolve_model_or_raise
from tests.conftest import CORPUS, JFK, JFK_TEXT
from tests.media import silence_wav, text_file, truncated_copy, zero_length_wav
from tests.synth import SPEAKER_A_TEXT, SPEAKER_B_TEXT, encode, two_speaker_call
from tests.wer_utils import normalize, wer

STENOD = Path(sys.executable).with_name("stenod")
SHORT = CORPUS / "ljspeech-lj001/audio/LJ001-0002.wav"  # 1.9 s: "in being comparatively modern."
SHORT_TEXT = "in being comparatively modern"
LONG = CORPUS / "longform-en/audio/earnings22_1_4482311_3_62.wav"  # 60 s
SUMMARY = re.compile(
    r"^(?P<name>.+): (?P<audio>\d+\.\d) s audio in (?P<proc>\d+\.\d\d) s "
    r"\(RTF (?P<rtf>\d+\.\d{3}), (\d+\.\dx real time|-)\), language (?P<lang>[a-z]+)$"
)


def stenod(*args: str, cache_dir: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    environ.update({"HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), **(env or {})})
    return subprocess.run(
        [str(STENOD), *args], capture_output=True, text=True, env=environ, timeout=300, check=False, **kwargs
    )


def summaries(stderr: str) -> dict[str, re.Match[str]]:
    return {m["name"]: m for line in stderr.splitlines() if (m := SUMMARY.match(line))}


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_clean_stderr(stderr: str) -> None:
    """Only summary lines, one-line errors and the final "wrote ..." line: no traceback, no log
    noise, no wrapped lines."""
    assert "Traceback" not in stderr
    for line in stderr.splitlines():
        assert SUMMARY.match(line) or line.startswith(("error: ", "wrote ")), line


# --- happy paths ------------------------------------------------------------------------------


def test_local_model_folder_prints_transcript_and_one_summary_line(cache_dir: Path) -> None:
    folder = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    result = stenod("transcribe", "--model", str(folder), "--vad", str(JFK), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert normalize(result.stdout) == normalize(JFK_TEXT)
    assert_clean_stderr(result.stderr)
    (summary,) = summaries(result.stderr).values()
    assert summary["name"] == "jfk.flac" and summary["audio"] == "11.0" and summary["lang"] == "en"
    assert float(summary["rtf"]) == pytest.approx(float(summary["proc"]) / 11.0, abs=0.002)


def test_default_model_is_bundled_base_offline(cache_dir: Path) -> None:
    result = stenod("transcribe", str(JFK), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert normalize(result.stdout) == normalize(JFK_TEXT)
    assert "," in result.stdout  # base punctuates where tiny.en does not: it really is base


def test_output_dir_writes_every_format(tmp_path: Path, cache_dir: Path) -> None:
    quiet = silence_wav(tmp_path / "quiet.wav", 5.0)
    out = tmp_path / "out"
    result = stenod(
        "transcribe", "-m", "tiny.en", "--format", "txt,json,verbose_json,srt,vtt,tsv", "--output-dir", str(out),
        "--word-timestamps", str(JFK), str(quiet), cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert set(summaries(result.stderr)) == {"jfk.flac", "quiet.wav"}
    exts = ("txt", "json", "verbose.json", "srt", "vtt", "tsv")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.{e}" for stem in ("jfk", "quiet") for e in exts)

    assert normalize((out / "jfk.txt").read_text()) == normalize(JFK_TEXT)
    body = json.loads((out / "jfk.json").read_text())
    assert list(body) == ["text"] and normalize(Transcription.model_validate(body).text) == normalize(JFK_TEXT)
    verbose = TranscriptionVerbose.model_validate_json((out / "jfk.verbose.json").read_text())
    assert verbose.language == "english" and verbose.duration == pytest.approx(11.0)
    assert verbose.words and normalize(" ".join(w.word for w in verbose.words)) == normalize(JFK_TEXT)
    assert (out / "jfk.srt").read_text().startswith("1\n00:00:00,000 --> ")
    assert (out / "jfk.vtt").read_text().startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert (out / "jfk.tsv").read_text().startswith("start\tend\ttext\n0\t")

    # No speech still gets its files, with empty text.
    assert json.loads((out / "quiet.json").read_text()) == {"text": ""}
    assert (out / "quiet.txt").read_text() == ""
    assert TranscriptionVerbose.model_validate_json((out / "quiet.verbose.json").read_text()).text == ""
    assert (out / "quiet.vtt").read_text() == "WEBVTT\n\n"


def test_output_dir_that_is_a_file(tmp_path: Path, cache_dir: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    result = stenod("transcribe", "-m", "tiny.en", "-o", str(blocker), str(SHORT), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""  # a usage error, found before the model loads
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [f"error: --output-dir {blocker}: cannot write there (File exists)"]


def test_unwritable_output_file_fails_that_file_only(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    (out / "LJ001-0002.txt").mkdir(parents=True)  # something already sits where the output goes
    result = stenod("transcribe", "-m", "tiny.en", "-o", str(out), str(SHORT), str(JFK), cache_dir=cache_dir)
    assert result.returncode == 1
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [f"error: {SHORT}: cannot write output to {out}: Is a directory"]
    assert normalize((out / "jfk.txt").read_text()) == normalize(JFK_TEXT)
    assert sorted(p.name for p in out.iterdir()) == ["LJ001-0002.txt", "jfk.txt"]  # no temp files left
    assert list(summaries(result.stderr)) == ["jfk.flac"]


def test_decoding_flags(cache_dir: Path) -> None:
    result = stenod(
        "transcribe", "-m", "tiny.en", "--language", "en", "--task", "transcribe", "--beam-size", "2",
        "--temperature", "0.2", "--initial-prompt", "President Kennedy, 1961.", "--threads", "1",
        "--compute-type", "float32", "--no-vad", "--format", "verbose_json", str(JFK), cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    verbose = TranscriptionVerbose.model_validate_json(result.stdout)
    assert normalize(verbose.text) == normalize(JFK_TEXT)
    assert verbose.segments and all(s.temperature >= 0.2 for s in verbose.segments)


def test_progress_bar_only_for_long_files(cache_dir: Path) -> None:
    """On a terminal, a file over 30 s gets a progress bar; a short one does not."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    environ.update(HF_HUB_OFFLINE="1", STENOD_MODEL__CACHE_DIR=str(cache_dir), TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen(
        [str(STENOD), "transcribe", "-m", "tiny.en", str(SHORT), str(LONG)],
        stdout=subprocess.DEVNULL, stderr=slave, env=environ,
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode()
    short_done = text.index("LJ001-0002.wav: 1.9 s audio in")
    assert "%" not in text[:short_done]
    long_part = text[short_done:]
    assert re.search(r"earnings22_1_4482311_3_62\.wav \(2/2\) ━+.* 100%", long_part)
    assert "earnings22_1_4482311_3_62.wav: 59.6 s audio in" in long_part


# --- models -----------------------------------------------------------------------------------


def test_hub_model_offline(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "large-v3", str(JFK), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""  # a bad --model value, as in batch
    assert_clean_stderr(result.stderr)
    (line,) = errors(result.stderr)
    assert "'large-v3' is not available offline" in line
    assert "Bundled models: base, tiny.en" in line and "--model /path/to/folder" in line


def test_path_that_is_not_a_model(tmp_path: Path, cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", str(tmp_path), str(JFK), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [f"error: --model: {tmp_path} is not a model folder: expected a CTranslate2 model "
                                     "(model.bin, config.json, tokenizer.json), a transformers Whisper folder (config.json, "
                                     "model.safetensors) or a whisper.cpp ggml .bin file"]


def test_unwritable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    result = stenod("transcribe", str(SHORT), cache_dir=blocker)
    assert result.returncode == 1 and result.stdout == ""
    assert_clean_stderr(result.stderr)
    (line,) = errors(result.stderr)
    assert line.startswith(f"error: cannot assemble bundled model 'base' into {blocker}/models/")


# --- bad input: one run with every bad file and a good one in the middle ----------------------

BAD_CASES = {
    "empty": ("empty.wav", "file is empty (0 bytes)"),
    "not-audio": ("notes.wav", "not a readable audio file"),
    "truncated-flac": ("half.flac", "audio is truncated or corrupt"),
    "truncated-mp3": ("half.mp3", "audio is truncated or corrupt"),
    "truncated-wav": ("half.wav", "audio is truncated or corrupt"),
    "zero-length": ("zero.wav", "audio has no samples (zero length)"),
    "nonexistent": ("missing.wav", "no such file"),
    "directory": ("folder.wav", "is a directory, not an audio file"),
    "unreadable": ("locked.flac", "permission denied"),
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[dict[str, Path], subprocess.CompletedProcess[str]]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.wav").touch()
    text_file(d / "notes.wav")
    truncated_copy(JFK, d / "half.flac")
    mp3 = encode(d / "whole.mp3", np.zeros((1, 16_000 * 11), dtype=np.float32) + 0.01, codec="libmp3lame", rate=44_100)
    truncated_copy(mp3, d / "half.mp3")
    truncated_copy(CORPUS / "ljspeech-lj001/audio/LJ001-0001.wav", d / "half.wav")
    zero_length_wav(d / "zero.wav")
    (d / "folder.wav").mkdir()
    locked = d / "locked.flac"
    locked.write_bytes(JFK.read_bytes())
    locked.chmod(0)
    paths = {case: d / name for case, (name, _) in BAD_CASES.items()}
    order = [*list(paths.values())[:4], SHORT, *list(paths.values())[4:]]
    return paths, stenod("transcribe", "-m", "tiny.en", *map(str, order), cache_dir=cache_dir)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_error(bad_run, case: str) -> None:  # type: ignore[no-untyped-def]
    paths, result = bad_run
    path, reason = paths[case], BAD_CASES[case][1]
    if case == "unreadable" and os.access(path, os.R_OK):
        # Tests run as root here, and root reads a mode-000 file: it is transcribed, not refused.
        assert "locked.flac" in summaries(result.stderr)
        return
    mentioning = [line for line in result.stderr.splitlines() if str(path) in line]
    assert len(mentioning) == 1 and mentioning[0].startswith(f"error: {path}: {reason}"), mentioning
    assert result.returncode == 1


def test_bad_inputs_do_not_stop_the_run(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, result = bad_run
    assert_clean_stderr(result.stderr)
    assert "LJ001-0002.wav" in summaries(result.stderr)
    assert normalize(SHORT_TEXT) in normalize(result.stdout)
    assert result.returncode == 1


def test_audio_longer_than_the_limit(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "tiny.en", str(JFK), str(SHORT), cache_dir=cache_dir,
                    env={"STENOD_AUDIO__MAX_DURATION_S": "5"})
    assert result.returncode == 1
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [f"error: {JFK}: audio is 11.0 s long; the limit is 5 s"]
    assert normalize(result.stdout) == normalize(SHORT_TEXT)


def test_unknown_language(cache_dir: Path) -> None:
    # The language applies to the whole run, so it is refused before any file is opened.
    result = stenod("transcribe", "-m", "tiny.en", "--language", "xx", str(SHORT), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [
        "error: --language: unknown language 'xx'; use a code (de) or an English name (german), or auto"
    ]


def test_translate_on_english_only_model(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "tiny.en", "--task", "translate", str(SHORT), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""  # refused before any file is read
    assert_clean_stderr(result.stderr)
    (line,) = errors(result.stderr)
    assert line == ("error: --model tiny.en is English-only and cannot translate; use a multilingual model "
                    "such as --model base")


# --- diarization ------------------------------------------------------------------------------


def test_diarize_two_channel_call_and_refuse_mono(tmp_path: Path, cache_dir: Path) -> None:
    call, _ = two_speaker_call(tmp_path / "call.wav")
    out = tmp_path / "out"
    result = stenod(
        "transcribe", "-m", "tiny.en", "--diarize", "--format", "txt,json,verbose_json,srt,vtt",
        "--output-dir", str(out), str(SHORT), str(call), cache_dir=cache_dir,
    )
    assert result.returncode == 1  # the mono file failed
    assert_clean_stderr(result.stderr)
    assert errors(result.stderr) == [
        f"error: {SHORT}: diarization needs a two-channel recording (one speaker per channel); this file has 1 channel"
    ]
    assert "call.wav" in summaries(result.stderr)
    assert not list(out.glob("LJ001-0002.*"))

    lines = (out / "call.txt").read_text().splitlines()
    assert [line.split("] ")[0] + "]" for line in lines] == ["[SPEAKER 1]", "[SPEAKER 2]"]
    assert wer([SPEAKER_A_TEXT], [lines[0].split("] ", 1)[1]]) <= 0.25
    assert wer([SPEAKER_B_TEXT], [lines[1].split("] ", 1)[1]]) <= 0.25
    speakers = [s["speaker"] for s in json.loads((out / "call.json").read_text())["segments"]]
    assert speakers[0] == "SPEAKER 1" and speakers[-1] == "SPEAKER 2" and speakers == sorted(speakers)
    verbose = TranscriptionVerbose.model_validate_json((out / "call.verbose.json").read_text())
    assert [s.model_extra["speaker"] for s in verbose.segments or []] == speakers  # type: ignore[index]
    for name in ("call.srt", "call.vtt"):
        cue_texts = [line for line in (out / name).read_text().splitlines() if line.startswith("[SPEAKER")]
        assert [t.split("]")[0] + "]" for t in cue_texts] == [f"[{s}]" for s in speakers]
