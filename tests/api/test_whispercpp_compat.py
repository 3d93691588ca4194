"""whisper.cpp server compatibility: its README's curl commands, run verbatim with curl."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import CORPUS, JFK, skip_or_fail
from tests.wer_utils import normalize


@pytest.fixture(autouse=True)
def _curl() -> None:
    if shutil.which("curl") is None:
        skip_or_fail("curl is not installed")

JFK_WORDS = normalize("And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.")


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=120, check=True)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_inference_curl_verbatim(server: ServerProcess) -> None:
    # whisper.cpp examples/server/README.md
    code, body = curl(
        f"127.0.0.1:{server.port}/inference",
        "-H", "Content-Type: multipart/form-data",
        "-F", f"file=@{JFK}",
        "-F", "temperature=0.0",
        "-F", "temperature_inc=0.2",
        "-F", "response_format=json",
    )
    assert code == 200, body
    assert normalize(json.loads(body)["text"]) == JFK_WORDS


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json"])
def test_inference_formats(server: ServerProcess, fmt: str) -> None:
    code, body = curl(f"127.0.0.1:{server.port}/inference", "-F", f"file=@{JFK}", "-F", f"response_format={fmt}")
    assert code == 200, body
    if fmt == "verbose_json":
        assert json.loads(body)["segments"]
    elif fmt == "vtt":
        assert body.startswith("WEBVTT")
    elif fmt == "srt":
        assert body.startswith("1\n00:00:00,000 --> ")
    else:
        assert normalize(body) == JFK_WORDS


def test_inference_translate_flag(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "base", "--slots", "1")
    try:
        clip = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-006.ogg"
        code, body = curl(f"127.0.0.1:{srv.port}/inference", "-F", f"file=@{clip}", "-F", "translate=true",
                          "-F", "response_format=json")
        assert code == 200, body
        assert {"students", "grammar"} & set(normalize(json.loads(body)["text"]).split())
    finally:
        srv.stop()


def test_load_switches_model_and_failed_load_keeps_old(tmp_path: Path, cache_dir: Path) -> None:
    # /load switches the model for every client: it needs an admin key (issue 16).
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--admin-key", "sk-admin")
    admin = ("-H", "Authorization: Bearer sk-admin")
    try:
        code, body = curl(f"127.0.0.1:{srv.port}/load", "-F", "model=base")
        assert code == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"

        # A failed load returns an error and leaves the current model serving.
        code, body = curl(f"127.0.0.1:{srv.port}/load", *admin, "-H", "Content-Type: multipart/form-data",
                          "-F", f"model={tmp_path}/ggml-missing.bin")
        assert code in (400, 404), body
        assert "error" in json.loads(body)
        assert httpx.get(f"{srv.url}/health").json()["default_model"] == "tiny.en"
        code, body = curl(f"127.0.0.1:{srv.port}/inference", *admin, "-F", f"file=@{JFK}")
        assert code == 200 and normalize(json.loads(body)["text"]) == JFK_WORDS

        # A corrupt model folder fails to load without taking the process down.
        broken = tmp_path / "broken-model"
        broken.mkdir()
        (broken / "model.bin").write_bytes(b"\x00" * 1024)
        (broken / "config.json").write_text("{}")
        code, body = curl(f"127.0.0.1:{srv.port}/load", *admin, "-F", f"model={broken}")
        assert code == 400, body
        assert srv.proc.poll() is None

        # The seed's load command with a real model path switches the default.
        tiny_path = httpx.get(f"{srv.url}/health").json()["models"][0]["model"]
        assert tiny_path == "tiny.en"
        code, body = curl(f"127.0.0.1:{srv.port}/load", *admin, "-H", "Content-Type: multipart/form-data", "-F", "model=base")
        assert code == 200, body
        health = httpx.get(f"{srv.url}/health").json()
        assert health["default_model"] == "base"
        clip = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-006.ogg"
        code, body = curl(f"127.0.0.1:{srv.port}/inference", *admin, "-F", f"file=@{clip}", "-F", "response_format=verbose_json")
        assert code == 200 and json.loads(body)["language"] == "german"
    finally:
        srv.stop()
