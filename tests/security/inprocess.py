"""Talk to an app built by ``create_app(settings)`` in this process, over httpx's ASGI transport:
for API checks where a real server process adds nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from stenod.api.app import create_app
from stenod.settings import Settings


def make_app(cache_dir: Path, **sections: dict[str, Any]) -> FastAPI:
    """An app on tiny.en (loaded lazily, only if a request gets that far) with ``sections``
    overriding settings, e.g. ``server={"api_keys": ["k"]}``."""
    model = {"name": "tiny.en", "cache_dir": cache_dir, **sections.pop("model", {})}
    server = {"slots": 1, "preload": False, **sections.pop("server", {})}
    return create_app(Settings(model=model, server=server, **sections))


def request(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return asyncio.run(arequest(app, method, path, **kwargs))


async def arequest(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://stenod.test", timeout=120) as client:
        return await client.request(method, path, **kwargs)


def upload(app: FastAPI, data: bytes, *, filename: str = "clip.wav", endpoint: str = "/v1/audio/transcriptions",
           headers: dict[str, str] | None = None, **fields: str) -> httpx.Response:
    return request(app, "POST", endpoint, files={"file": (filename, data)}, data=fields, headers=headers or {})


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error  # type: ignore[no-any-return]
