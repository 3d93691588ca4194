"""The browser page at ``/``: plain HTML, CSS and JavaScript shipped inside the package (no CDN,
no front-end build), talking to the job API like any other client.

The page holds no data and needs no key to load; every call it makes goes through the API's own
authentication. A strict Content-Security-Policy allows only this origin (plus ``blob:`` audio for
playing the user's own upload), so a transcript can never run script in the page.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from stenod.languages import LANGUAGE_NAMES

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> str:
    return resources.files("stenod.api").joinpath("web", name).read_text(encoding="utf-8")


@cache
def _index() -> str:
    options = "".join(
        f'<option value="{code}">{html.escape(name.title())}</option>'
        for code, name in sorted(LANGUAGE_NAMES.items(), key=lambda item: item[1])
    )
    return _asset("index.html").replace("<!--LANGUAGE_OPTIONS-->", options)


@router.get("/")
def index() -> HTMLResponse:
    return HTMLResponse(_index(), headers=SECURITY_HEADERS)


@router.get("/web/{name}")
def asset(name: str) -> Response:
    # Only the fixed asset names: the path parameter never reaches the file system.
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response(status_code=404)
    return Response(_asset(name), media_type=media_type, headers=SECURITY_HEADERS)
