"""A newcomer's first hour with ``stenod transcribe``, through the real command (a subprocess, and a
pseudo-terminal for Ctrl-C): distinct output names, the paths written, a writability check before
any work, stdin and URL inputs, headers between several results on stdout, whisper.cpp's flags,
language names, subtitle and decoding flags, warnings, and "interrupted after N of M files"."""

from __future__ import annotations

import http.server
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_config_cli import stenod as stenod_in_process
from tests.cli.test_transcribe_cli import JFK, LONG, SHORT, SHORT_TEXT, STENOD, errors, stenod
from tests.wer_utils import normalize

GERMAN = JFK.parents[2] / "multilingual-fleurs" / "audio" / "fleurs-de-000.ogg"


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


@pytest.fixture()
def two_x(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.flac"
    shutil.copy(SHORT, a)
    shutil.copy(JFK, b)
    return a, b


def test_same_names_never_overwrite_and_written_paths_are_listed(tmp_path: Path, two_x, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    result = stenod("transcribe", "-m", "tiny.en", str(two_x[0]), str(two_x[1]), "-o", str(out), "--formats", "txt,srt",
                    cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x.flac.srt", "x.flac.txt", "x.wav.srt", "x.wav.txt"]
    assert normalize((out / "x.wav.txt").read_text()) == normalize(SHORT_TEXT)
    assert "country" in (out / "x.flac.txt").read_text()
    last = result.stderr.strip().splitlines()[-1]
    assert last == "wrote " + " ".join(str(out / n) for n in ("x.wav.txt", "x.wav.srt", "x.flac.txt", "x.flac.srt"))


def test_unwritable_output_fails_before_any_work(tmp_path: Path, cache_dir: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = stenod("transcribe", "-m", "tiny.en", str(SHORT), "-o", str(blocker / "out"), cache_dir=cache_dir)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: --output-dir {blocker / 'out'}: cannot write there (Not a directory)"


def test_stdin_and_several_results_on_stdout_get_headers(cache_dir: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    environ.update(HF_HUB_OFFLINE="1", STENOD_MODEL__CACHE_DIR=str(cache_dir))
    result = subprocess.run([str(STENOD), "transcribe", "-m", "tiny.en", "-", "-f", "txt,json"], input=SHORT.read_bytes(),
                            capture_output=True, env=environ, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    header_txt, text, header_json, body = result.stdout.decode().strip().split("\n")
    assert (header_txt, header_json) == ("==> stdin.txt <==", "==> stdin.json <==")
    assert normalize(text) == normalize(SHORT_TEXT) and json.loads(body)["text"] == text
    single = stenod("transcribe", "-m", "tiny.en", str(SHORT), "-f", "json", cache_dir=cache_dir)
    assert json.loads(single.stdout)["text"]  # one result: bare, so `| jq` works


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[str]:
    shutil.copy(SHORT, tmp_path / "talk one.wav")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_downloaded_within_the_upload_limit(tmp_path: Path, http_root: str, cache_dir: Path) -> None:
    out = tmp_path / "out"
    ok = stenod("transcribe", "-m", "tiny.en", f"{http_root}/talk%20one.wav", f"{http_root}/missing.wav",
                "-o", str(out), cache_dir=cache_dir)
    assert ok.returncode == 1
    assert normalize((out / "talk_one.txt").read_text()) == normalize(SHORT_TEXT)
    assert errors(ok.stderr) == [f"error: {http_root}/missing.wav: download failed: HTTP 404 File not found"]
    small = stenod("transcribe", "-m", "tiny.en", f"{http_root}/talk%20one.wav", cache_dir=cache_dir,
                   env={"STENOD_AUDIO__MAX_FILE_MB": "0.01"})
    assert small.returncode == 1
    (line,) = errors(small.stderr)
    assert "MB is more than the 0.01 MB limit (audio.max_file_mb)" in line


def test_whisper_cpp_flags_work(tmp_path: Path, cache_dir: Path) -> None:
    base = tmp_path / "subs" / "talk"
    result = stenod("transcribe", "-m", "tiny.en", "-f", str(JFK), "-osrt", "-otxt", "-of", str(base),
                    "-ml", "1", "-ot", "2000", "-d", "4000", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("note: read whisper.cpp flags as: -f ")
    srt = (tmp_path / "subs" / "talk.srt").read_text()
    cues = re.findall(r"\d\d:\d\d:(\d\d,\d\d\d) --> \d\d:\d\d:(\d\d,\d\d\d)\n(.+)\n", srt)
    assert cues and all(len(text.split()) == 1 for _, _, text in cues)  # -ml 1: one word per cue
    starts = [float(s.replace(",", ".")) for s, _, _ in cues]
    assert min(starts) >= 2.0 and max(float(e.replace(",", ".")) for _, e, _ in cues) <= 6.01
    assert "ask" in (tmp_path / "subs" / "talk.txt").read_text().lower()  # "ask not" starts about 3.5 s in
    tr = stenod_in_process("transcribe", "-m", "tiny.en", "-tr", str(SHORT), cache_dir=cache_dir)
    assert tr.returncode == 2
    assert errors(tr.stderr) == ["error: --model tiny.en is English-only and cannot translate; use a "
                                 "multilingual model such as --model base"]
    help_text = stenod_in_process("transcribe", "-h", cache_dir=cache_dir)
    assert help_text.returncode == 0 and "Examples:" in help_text.stdout
    unknown = stenod_in_process("transcribe", "-ocsv", str(SHORT), cache_dir=cache_dir)
    assert unknown.returncode == 2 and errors(unknown.stderr) == [
        "error: -ocsv is a whisper.cpp flag stenod has no equivalent for; did you mean --format tsv? "
        "(see 'stenod --help')"]


def test_usage_errors_are_one_line_and_exit_2(cache_dir: Path) -> None:
    cases = {
        ("--language", "klingon"): "error: --language: unknown language",
        ("--formt", "srt"): "error: no such option --formt; did you mean --format",
        ("-m", "no-such-model"): "error: --model: unknown model 'no-such-model'",
        ("--max-line-count", "2"): "error: --max-line-count needs --max-line-width",
        ("--format", "docx"): "error: --format: unknown format 'docx'",
    }
    for args, start in cases.items():  # in-process: these fail before any model loads
        result = stenod_in_process("transcribe", *args, str(SHORT), cache_dir=cache_dir)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(start), result.stderr


def test_language_names_and_warnings_for_flags_that_do_nothing(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "tiny.en", "-l", "English", "--threads", "64", "--word-timestamps",
                    "-f", "srt", "--no-vad", "--vad-threshold", "0.9", str(SHORT), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    found = warnings(result.stderr)
    assert any(w.startswith("warning: --threads 64 is more than the") for w in found), found
    assert any(w.startswith("warning: --word-timestamps has no effect on srt") for w in found), found
    assert "warning: --vad-threshold has no effect with --no-vad" in found
    assert "modern" in result.stdout


def test_english_only_model_on_german_speech_is_warned(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "tiny.en", str(GERMAN), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    (line,) = warnings(result.stderr)
    assert "sounds like German (de" in line and "tiny.en is English-only" in line


def test_detect_language_prints_probabilities(cache_dir: Path) -> None:
    result = stenod("transcribe", "-m", "base", "--detect-language", str(GERMAN), str(JFK), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    german, english = result.stdout.strip().split("\n")
    assert re.match(rf"^{re.escape(str(GERMAN))}: de \(german\) 0\.\d{{3}}; then [a-z]{{2}} 0\.\d{{3}}", german)
    assert english.startswith(f"{JFK}: en (english) ")


def test_ctrl_c_says_what_was_done(tmp_path: Path, cache_dir: Path) -> None:
    """On a terminal: the progress bar shows, Ctrl-C stops the file in progress, and the command
    says how far it got, keeps the finished file's output and exits 130."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    environ.update(HF_HUB_OFFLINE="1", STENOD_MODEL__CACHE_DIR=str(cache_dir), TERM="xterm", COLUMNS="120")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(STENOD), "transcribe", "-m", "tiny.en", "--threads", "1", "-o", str(out), str(SHORT), str(LONG), str(JFK)],
        stdout=slave, stderr=slave, env=environ,
    )
    os.close(slave)
    seen = ""
    sent = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
        if not sent and re.search(r"earnings22\S+ \(2/3\) ━", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)):
            proc.send_signal(signal.SIGINT)
            sent = True
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    assert sent, seen
    assert proc.wait(timeout=60) == 130
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)
    assert "error: interrupted after 1 of 3 files" in text
    assert f"wrote {out / 'LJ001-0002.txt'}" in text
    assert sorted(p.name for p in out.iterdir()) == ["LJ001-0002.txt"]
