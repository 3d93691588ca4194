"""ASGI middleware: request ids and access logs, and the upload size limit enforced while the
body arrives (a Content-Length over the limit is refused before a byte of body is read)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import anyio.to_thread
import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stenod.api.auth import Authenticator
from stenod.errors import AuthenticationError, DatabaseUnavailableError, UploadTooLargeError
from stenod.observability.logging import REQUEST_ID_HEADER, valid_request_id
from stenod.settings import Settings
from stenod.storage.sql import is_database_unavailable

logger = logging.getLogger("stenod.access")

MULTIPART_SLACK_BYTES = 64 * 1024
"""Room for multipart headers and the small form fields around the file."""


class RequestContextMiddleware:
    """Give every request an id (the caller's ``X-Request-ID`` if sane), bind it to every log
    line of the request, return it in the response, and write one access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = valid_request_id(headers.get(REQUEST_ID_HEADER.lower())) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                extra = [(REQUEST_ID_HEADER.encode(), request_id.encode())]
                # The calling key's requests-per-minute window (set by the auth dependency).
                present = {k.lower() for k, _ in message["headers"]}
                for name, value in (scope.get("state", {}).get("rate_limit_headers") or {}).items():
                    if name.lower().encode() not in present:
                        extra.append((name.encode(), value.encode()))
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            # The server cancels what is still running when its shutdown grace period ends:
            # answer in the error shape (never uvicorn's plain-text 500), then let the task end.
            if started_response:
                raise
            await _send_error(send_with_id, 503, "server shut down before this request finished; retry",
                              "service_unavailable", "unavailable", retry_after=5)
            status = 503
        finally:
            logger.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000,
                extra={"status": status},
            )
            structlog.contextvars.clear_contextvars()


class UploadLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` on the upload routes, without buffering."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, paths: frozenset[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes + MULTIPART_SLACK_BYTES
        self.limit_mb = max_bytes / 1e6
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, declared)
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 ourselves, then tell the app the client is gone so it
            # stops parsing (raising here would be turned into a 400 by the form parser).
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await self._reject(send, received)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _message(self, size: int) -> str:
        return f"upload of {size / 1e6:.1f} MB exceeds the limit of {self.limit_mb:g} MB"

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            {"error": {"message": self._message(size), "type": "invalid_request_error", "param": "file",
                       "code": UploadTooLargeError.code}}
        ).encode()
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, status: int, message: str, error_type: str, code: str, *,
                      retry_after: int | None = None, extra_headers: list[tuple[bytes, bytes]] | None = None,
                      close: bool = True) -> None:
    body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra_headers or [])]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


DATABASE_RETRY_AFTER_S = 5

METRICS_PATHS = ("/metrics",)
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs-assets")


def protected_prefixes(settings: Settings) -> tuple[str, ...]:
    """Paths that need a key by the settings: /metrics and the OpenAPI docs, when asked for and
    authentication is on (without keys there is nothing to check)."""
    server = settings.server
    if not (server.api_keys or server.admin_api_keys or server.key_store):
        return ()
    return (METRICS_PATHS if server.protect_metrics else ()) + (DOCS_PATHS if server.protect_docs else ())


class ProtectedPathsMiddleware:
    """401 (with ``WWW-Authenticate``) for requests to ``prefixes`` without a valid key: for
    /metrics and the docs, which have no auth dependency of their own."""

    def __init__(self, app: ASGIApp, *, auth: Authenticator, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.auth = auth
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not any(path == p or path.startswith(p + "/") for p in self.prefixes):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None)
        try:
            await anyio.to_thread.run_sync(self.auth.authenticate, header)
        except AuthenticationError as exc:
            await _send_error(send, 401, exc.message, exc.error_type, exc.code or "invalid_api_key",
                              extra_headers=[(b"www-authenticate", b'Bearer realm="stenod"')], close=False)
            return
        except SQLAlchemyError as exc:  # the key store's database is down: 503, not a 500
            if not is_database_unavailable(exc):
                raise
            await _send_error(send, 503, "the job database cannot be reached; retry later", "service_unavailable",
                              DatabaseUnavailableError.code, retry_after=DATABASE_RETRY_AFTER_S, close=False)
            return
        await self.app(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
