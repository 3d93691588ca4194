"""FastAPI dependencies: app state, API-key check (-> the caller's :class:`Principal`), uploads
with the client's file name."""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from typing import Annotated, BinaryIO

from fastapi import Depends, Request, UploadFile

from stenod.api.state import AppState
from stenod.errors import AuthenticationError, EmptyAudioError, ServiceUnavailableError


def get_state(request: Request) -> AppState:
    return request.app.state.stenod  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]


ANONYMOUS_TENANT = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. Jobs belong to ``tenant_id``: another tenant gets 404 for them.

    ``tenant_id`` never contains the key itself: for a configured static key it is a prefix of the
    key's SHA-256 (stable across restarts and servers, so several API servers agree), and
    ``"anonymous"`` when authentication is off.
    """

    tenant_id: str
    admin: bool = False
    """Reserved for operator-wide views (all tenants); no route grants it yet."""


def tenant_for_static_key(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def require_api_key(request: Request, state: State) -> Principal:
    """The auth dependency: checks the Bearer key and returns the caller.

    Raises:
        AuthenticationError: keys are configured and the request has none or a wrong one.
    """
    keys = state.settings.server.api_keys
    if not keys:
        return Principal(tenant_id=ANONYMOUS_TENANT)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    for key in keys:
        secret = key.get_secret_value()
        if hmac.compare_digest(token.encode(), secret.encode()):
            return Principal(tenant_id=tenant_for_static_key(secret))
    raise AuthenticationError("invalid API key")


CurrentPrincipal = Annotated[Principal, Depends(require_api_key)]


def refuse_when_draining(state: State) -> None:
    if state.draining:
        raise ServiceUnavailableError("server is shutting down; retry on another instance")


class NamedUpload(io.RawIOBase):
    """The upload's spooled file, carrying the client's file name so errors can name it."""

    def __init__(self, upload: UploadFile) -> None:
        super().__init__()
        self._file: BinaryIO = upload.file
        self.name = upload.filename or "upload"
        self._file.seek(0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def named_upload_or_raise(upload: UploadFile) -> NamedUpload:
    if upload.size == 0:
        raise EmptyAudioError(f"{upload.filename or 'upload'}: file is empty (0 bytes)", param="file")
    return NamedUpload(upload)
