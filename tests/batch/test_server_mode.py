"""``stenod batch --server``: against a real ``stenod serve`` process on a free port."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ServerProcess, start_server
from tests.batch.conftest import MISC, make_good_dir, stenod_exe


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("batch-server"), cache_dir, "--model", "tiny.en",
                          "--host", "127.0.0.1", "--slots", "2")
    yield server
    server.stop()


def test_server_mode_transcribes_renders_locally_and_reports_bad_files(
    tiny_server: ServerProcess, mixed_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), "COLUMNS": "200"}
    done = subprocess.run(
        [stenod_exe(), "batch", str(mixed_dir), "-o", str(out), "-r", "--server", tiny_server.url, "-m", "tiny.en",
         "--concurrency", "2", "--formats", "json,srt,vtt,txt,verbose_json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "failed b_corrupt.flac: server answered 415" in done.stderr
    assert "failed f_empty.mp3: server answered 400: file is empty" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files_ok"], summary["files_failed"]) == (4, 3)
    assert "He was not" in (out / "c_austen.txt").read_text()
    assert (out / "sub" / "a_libri.vtt").read_text().startswith("WEBVTT")
    verbose = json.loads((out / "e_take.verbose.json").read_text())
    assert verbose["language"] == "english" and verbose["segments"]
    assert "-->" in (out / "a_libri.srt").read_text()


def test_server_mode_word_cues_ask_the_server_for_word_times(
    tiny_server: ServerProcess, tmp_path: Path, cache_dir: Path
) -> None:
    src = make_good_dir(tmp_path / "in", {"c.wav": MISC / "sense_and_sensibility_01_austen_64kb-0880.wav"})
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), "COLUMNS": "200"}
    done = subprocess.run(
        [stenod_exe(), "batch", str(src), "-o", str(out), "--server", tiny_server.url, "-m", "tiny.en",
         "--formats", "vtt,verbose_json", "--word-cues", "--word-timestamps"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cues = [b.splitlines()[1] for b in (out / "c.vtt").read_text().removeprefix("WEBVTT").strip().split("\n\n")]
    assert len(cues) >= 5 and all(len(c.split()) == 1 for c in cues), cues
    assert [w["word"].strip() for w in json.loads((out / "c.verbose.json").read_text())["words"]] == cues


def test_server_mode_fails_fast_when_nothing_listens(mixed_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([stenod_exe(), "batch", str(mixed_dir), "-o", str(tmp_path / "out"),
                           "--server", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in done.stderr
