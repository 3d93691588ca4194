"""/docs and /redoc work offline: every script, style and icon they load is served by stenod."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from stenod.api.app import create_app
from stenod.settings import Settings


@pytest.fixture()
def client(tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
    # No lifespan (no `with`): nothing loads; the docs need no model.
    return TestClient(create_app(Settings(model={"cache_dir": tmp_path}, server={"preload": False})))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client: TestClient, page: str) -> None:
    html = (client.get(page)).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: ['\"]([^'\"]+)['\"]", html)
    assert urls, html
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 100, url


def test_swagger_bundle_is_javascript(client: TestClient) -> None:
    response = client.get("/docs-assets/swagger-ui-bundle.js")
    assert response.status_code == 200 and "javascript" in response.headers["content-type"]
    assert (client.get("/docs-assets/../../etc/passwd")).status_code == 404
