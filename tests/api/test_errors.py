"""Every bad input gets the right status and OpenAI's error shape; the server stays up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import CORPUS, JFK
from tests.media import text_file, truncated_copy, zero_length_wav

KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MEDIUM = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory.mktemp("strict"), cache_dir, "--model", "tiny.en", "--api-key", KEY,
        env={"STENOD_AUDIO__MAX_DURATION_S": "30"},
    )
    yield srv
    srv.stop()


def post(server: ServerProcess, path: Path | None, *, endpoint: str = "/v1/audio/transcriptions",
         headers: dict[str, str] | None = None, **data: str) -> httpx.Response:
    files = {"file": (path.name, path.read_bytes())} if path is not None else None
    return httpx.post(f"{server.url}{endpoint}", files=files, data={"model": "whisper-1", **data},
                      headers=AUTH if headers is None else headers, timeout=120)


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_missing_key_is_401(strict_server: ServerProcess) -> None:
    err = assert_error(post(strict_server, JFK, headers={}), 401, "invalid_api_key")
    assert "Bearer" in err["message"]


def test_wrong_key_is_401(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")


def test_health_needs_no_key(strict_server: ServerProcess) -> None:
    assert httpx.get(f"{strict_server.url}/health").status_code == 200


def test_right_key_works(strict_server: ServerProcess) -> None:
    assert post(strict_server, JFK).status_code == 200


def test_empty_file(strict_server: ServerProcess, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    err = assert_error(post(strict_server, empty), 400, "empty_audio")
    assert "empty.wav" in err["message"]


def test_not_audio(strict_server: ServerProcess, tmp_path: Path) -> None:
    err = assert_error(post(strict_server, text_file(tmp_path / "notes.wav")), 415, "invalid_audio")
    assert "notes.wav" in err["message"]


def test_truncated_audio(strict_server: ServerProcess, tmp_path: Path) -> None:
    cut = truncated_copy(JFK, tmp_path / "cut.flac")
    err = assert_error(post(strict_server, cut), 415, "invalid_audio")
    assert "truncated" in err["message"]


def test_zero_length_audio(strict_server: ServerProcess, tmp_path: Path) -> None:
    assert_error(post(strict_server, zero_length_wav(tmp_path / "zero.wav")), 400, "empty_audio")


def test_audio_longer_than_limit(strict_server: ServerProcess) -> None:
    err = assert_error(post(strict_server, MEDIUM), 413, "audio_too_long")
    assert "30" in err["message"]


def test_unknown_language(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, language="xx"), 400, "unknown_language", "language")


def test_bad_response_format(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, response_format="docx"), 400, param="response_format")


def test_temperature_out_of_range(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, temperature="3"), 400, param="temperature")


def test_temperature_not_a_number(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, temperature="warm"), 422, param="temperature")


def test_missing_file(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, None), 422, param="file")


def test_word_timestamps_need_verbose_json(strict_server: ServerProcess) -> None:
    r = httpx.post(f"{strict_server.url}/v1/audio/transcriptions", headers=AUTH, timeout=60,
                   files={"file": ("jfk.flac", JFK.read_bytes())},
                   data={"model": "whisper-1", "timestamp_granularities[]": "word"})
    assert_error(r, 400, param="timestamp_granularities[]")


def test_translate_on_english_only_model(strict_server: ServerProcess) -> None:
    err = assert_error(post(strict_server, JFK, endpoint="/v1/audio/translations"), 400, param="task")
    assert "English-only" in err["message"]


def test_non_english_language_on_english_only_model(strict_server: ServerProcess) -> None:
    assert_error(post(strict_server, JFK, language="de"), 400, param="language")


def test_unknown_model(strict_server: ServerProcess) -> None:
    err = assert_error(post(strict_server, JFK, model="large-v3"), 404, "model_not_found")
    assert "tiny.en" in err["message"]


def test_unknown_route_is_404_in_error_shape(strict_server: ServerProcess) -> None:
    assert_error(httpx.get(f"{strict_server.url}/v1/nothing-here"), 404)


def test_server_survives_all_of_the_above(strict_server: ServerProcess) -> None:
    assert strict_server.proc.poll() is None
    r = post(strict_server, JFK, response_format="text")
    assert r.status_code == 200 and "country" in r.text
