"""Every bad input gets the right status and OpenAI's error shape, and the app keeps serving.

In-process (``create_app`` + ``httpx.ASGITransport``) with the fake engine of tests/api/fakes.py:
uploads are really decoded and probed, so audio errors are the real ones; only the speech model is
fake. Real-process behaviour (signals, raw uploads, the openai client) is in the other modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stenod.api.state import AppState
from tests.api.fakes import FakeEngines, app_client, fake_settings, metric_value
from tests.conftest import CORPUS, JFK
from tests.media import text_file, truncated_copy, zero_length_wav

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MEDIUM = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def strict(cache_dir: Path, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    settings = fake_settings(cache_dir, tmp_path, server={"api_keys": KEY}, audio={"max_duration_s": 30})
    async with app_client(settings, FakeEngines()) as pair:
        yield pair


async def post(client: httpx.AsyncClient, path: Path | None, *, endpoint: str = "/v1/audio/transcriptions",
               headers: dict[str, str] | None = None, **data: str) -> httpx.Response:
    files = {"file": (path.name, path.read_bytes())} if path is not None else None
    return await client.post(endpoint, files=files, data={"model": "whisper-1", **data},
                             headers=AUTH if headers is None else headers)


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


async def test_missing_key_is_401(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    err = assert_error(await post(strict[0], JFK, headers={}), 401, "invalid_api_key")
    assert "Bearer" in err["message"]


async def test_wrong_key_is_401(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    assert_error(await post(strict[0], JFK, headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")


async def test_health_needs_no_key_and_the_right_key_works(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    client, _ = strict
    assert (await client.get("/health")).status_code == 200
    r = await post(client, JFK)
    assert r.status_code == 200 and r.json()["text"] == "segment 0 segment 1 segment 2"


async def test_bad_audio(strict: tuple[httpx.AsyncClient, AppState], tmp_path: Path) -> None:
    client, _ = strict
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert "empty.wav" in assert_error(await post(client, empty), 400, "empty_audio")["message"]
    assert "notes.wav" in assert_error(await post(client, text_file(tmp_path / "notes.wav")), 415, "invalid_audio")["message"]
    cut = truncated_copy(JFK, tmp_path / "cut.flac")
    assert "truncated" in assert_error(await post(client, cut), 415, "invalid_audio")["message"]
    assert_error(await post(client, zero_length_wav(tmp_path / "zero.wav")), 400, "empty_audio")
    assert "30" in assert_error(await post(client, MEDIUM), 413, "audio_too_long")["message"]


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        ({"language": "xx"}, 400, "unknown_language", "language"),
        ({"response_format": "docx"}, 400, None, "response_format"),
        ({"temperature": "3"}, 400, None, "temperature"),
        ({"temperature": "warm"}, 422, None, "temperature"),
        ({"timestamp_granularities[]": "word"}, 400, None, "timestamp_granularities[]"),
        ({"language": "de"}, 400, None, "language"),  # tiny.en is English-only
        ({"model": "large-v3"}, 404, "model_not_found", None),
    ],
)
async def test_bad_fields(strict: tuple[httpx.AsyncClient, AppState], fields: dict[str, str], status: int,
                          code: str | None, param: str | None) -> None:
    assert_error(await post(strict[0], JFK, **fields), status, code, param)


async def test_missing_file(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    assert_error(await post(strict[0], None), 422, param="file")


async def test_translate_on_english_only_model(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    err = assert_error(await post(strict[0], JFK, endpoint="/v1/audio/translations"), 400, param="task")
    assert "English-only" in err["message"]


async def test_unknown_route_is_404_in_error_shape(strict: tuple[httpx.AsyncClient, AppState]) -> None:
    assert_error(await strict[0].get("/v1/nothing-here"), 404)


async def test_errors_are_counted_and_the_app_keeps_serving(strict: tuple[httpx.AsyncClient, AppState],
                                                            tmp_path: Path) -> None:
    client, _ = strict
    for _ in range(3):
        await post(client, text_file(tmp_path / "notes.wav"))
        await post(client, JFK, language="xx")
    metrics = (await client.get("/metrics")).text
    # Decode failures are counted by the service; a bad field is refused before it (no model label).
    assert metric_value(metrics, "stenod_errors_total", status="415") == 3
    r = await post(client, JFK, response_format="text")
    assert r.status_code == 200 and r.text.strip() == "segment 0 segment 1 segment 2"
