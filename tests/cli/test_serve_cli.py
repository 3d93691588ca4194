"""``stenod serve`` on a terminal (a pseudo-terminal): readable log lines, then a "ready, try:
curl ..." line with the real address once the model is loaded; Ctrl-C stops it cleanly (exit 130)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.cli.test_transcribe_cli import STENOD

READY = re.compile(r"stenod ready on (http://127\.0\.0\.1:\d+) \(model tiny\.en, 1 slot\(s\) x 1 thread\(s\)\); try:")


def _read_until(fd: int, pattern: re.Pattern[str], timeout_s: float) -> tuple[str, re.Match[str] | None]:
    out = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096).decode(errors="replace")
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            match = pattern.search(out)
            if match:
                return out, match
    return out, None


def test_serve_on_a_terminal_prints_console_logs_and_a_ready_line(tmp_path: Path, cache_dir: Path) -> None:
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    env.update({"HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(cache_dir), "COLUMNS": "200"})
    proc = subprocess.Popen(
        [str(STENOD), "serve", "--model", "tiny.en", "--port", "0", "--slots", "1", "--threads", "1"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    try:
        out, match = _read_until(master, READY, 120.0)
        assert match, out
        url = match.group(1)
        assert f"curl {url}/v1/audio/transcriptions -F file=@audio.wav -F model=whisper-1" in out
        assert not any(line.lstrip().startswith("{") for line in out.splitlines()), out  # not JSON lines
        assert "ready on" in out and "[info" in out
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        rest, _ = _read_until(master, re.compile(r"Finished server process"), 60.0)
        assert proc.wait(timeout=60) == 130, out + rest  # Ctrl-C: the shell's convention
        assert "Traceback" not in out + rest and "Application shutdown complete" in out + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_serve_off_a_terminal_keeps_json_logs(tmp_path: Path, cache_dir: Path) -> None:
    from tests.api.conftest import start_server

    server = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--threads", "1")
    try:
        httpx.get(f"{server.url}/health", timeout=10)
        # /ready answers as soon as the model is loaded; the announcement follows within a poll
        # interval (serve.READY_POLL_S). Stopped before it, the server never announces.
        deadline = time.monotonic() + 10
        while '"ready on' not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    assert "stenod ready on" not in server.log() and any('"ready on' in line for line in lines)
