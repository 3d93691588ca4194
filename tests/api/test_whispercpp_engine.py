"""A real server on the whisper.cpp engine: transcribes, and survives being asked to load broken
ggml files (a 400 from ``/load``, never a dead process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import JFK, JFK_TEXT, require_module
from tests.wer_utils import normalize

require_module("_pywhispercpp")


ADMIN_KEY = "sk-admin-wcpp"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def tiny_q8(cache_dir: Path) -> Path:
    from stenod.models import resolve_model_or_raise
    from stenod.models.ggml_cache import ensure_ggml_model_or_raise

    resolved = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    return ensure_ggml_model_or_raise(resolved, cache_dir=cache_dir, quantize="q8_0").path


@pytest.fixture(scope="module")
def wcpp_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, tiny_q8: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("wcpp-server"), cache_dir, "--model", str(tiny_q8),
                       "--engine", "whisper.cpp", "--admin-key", ADMIN_KEY, env={"GGML_NO_BACKTRACE": "1"})
    yield srv
    srv.stop()


def _inference(srv: ServerProcess) -> httpx.Response:
    with JFK.open("rb") as f:
        return httpx.post(f"{srv.url}/inference", files={"file": ("jfk.flac", f, "audio/flac")},
                          data={"response_format": "json"}, headers=ADMIN, timeout=180)


def test_inference_on_whisper_cpp(wcpp_server: ServerProcess, tiny_q8: Path) -> None:
    response = _inference(wcpp_server)
    assert response.status_code == 200, response.text
    assert normalize(response.json()["text"]) == normalize(JFK_TEXT)
    health = httpx.get(f"{wcpp_server.url}/health", timeout=10).json()
    assert health["default_model"] == str(tiny_q8)


def test_corrupt_ggml_load_is_a_400_and_the_server_keeps_serving(
    wcpp_server: ServerProcess, tiny_q8: Path, tmp_path: Path
) -> None:
    data = tiny_q8.read_bytes()
    truncated = tmp_path / "ggml-truncated.bin"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbage = tmp_path / "ggml-garbage.bin"
    garbage.write_bytes(b"lmgg" + np.random.default_rng(1).bytes(512 * 1024))
    for path, reason in ((truncated, "truncated"), (garbage, "")):
        response = httpx.post(f"{wcpp_server.url}/load", data={"model": str(path)}, headers=ADMIN, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert str(path) in error["message"] and reason in error["message"]
        assert wcpp_server.proc.poll() is None, wcpp_server.log()[-3000:]
    health = httpx.get(f"{wcpp_server.url}/health", timeout=10).json()
    assert health["default_model"] == str(tiny_q8)
    response = _inference(wcpp_server)
    assert response.status_code == 200 and normalize(response.json()["text"]) == normalize(JFK_TEXT)


def test_server_logs_stay_json(wcpp_server: ServerProcess) -> None:
    import json

    lines = [line for line in wcpp_server.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)  # no whisper.cpp/ggml prints mixed into the structured log
