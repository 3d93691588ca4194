"""FastAPI dependencies: app state, API-key check (-> the caller's :class:`Principal`), uploads
with the client's file name."""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import Depends, Request, UploadFile
from pydantic import SecretStr

from stenod.api.state import AppState
from stenod.errors import AuthenticationError, EmptyAudioError, PermissionDeniedError, ServiceUnavailableError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.stenod
    return state


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
    """The key is one of ``[server] admin_api_keys``."""


def tenant_for_static_key(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _matching_key(token: str, keys: list[SecretStr]) -> str | None:
    # Compare against every key (no early exit), in constant time per key.
    found: str | None = None
    for key in keys:
        secret = key.get_secret_value()
        if hmac.compare_digest(token.encode(), secret.encode()):
            found = secret
    return found


def _matches(token: str, keys: list[SecretStr]) -> bool:
    return _matching_key(token, keys) is not None


def require_api_key(request: Request, state: State) -> Principal:
    """The auth dependency: checks the Bearer key and returns the caller.

    Raises:
        AuthenticationError: keys are configured and the request has none or a wrong one.
    """
    server = state.settings.server
    keys = [*server.api_keys, *server.admin_api_keys]
    if not keys:
        return Principal(tenant_id=ANONYMOUS_TENANT)
    token = _bearer_token(request)
    if token is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    secret = _matching_key(token, keys)
    if secret is None:
        raise AuthenticationError("invalid API key")
    return Principal(tenant_id=tenant_for_static_key(secret), admin=_matches(token, server.admin_api_keys))


CurrentPrincipal = Annotated[Principal, Depends(require_api_key)]


def require_admin(request: Request, state: State) -> None:
    """Admin routes (``/load``) need one of ``[server] admin_api_keys``; with none configured
    they are refused, so no client can switch the model of an open server.

    Raises:
        AuthenticationError: no or unknown key (401).
        PermissionDeniedError: a valid key that is not an admin key, or no admin key configured (403).
    """
    server = state.settings.server
    if not server.admin_api_keys:
        raise PermissionDeniedError("this route needs an admin API key; the server has none configured "
                                    "([server] admin_api_keys)")
    token = _bearer_token(request)
    if token is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <admin key>'")
    if _matches(token, server.admin_api_keys):
        return
    if _matches(token, server.api_keys):
        raise PermissionDeniedError("this route needs an admin API key")
    raise AuthenticationError("invalid API key")


def refuse_when_draining(state: State) -> None:
    if state.draining:
        raise ServiceUnavailableError("server is shutting down; retry on another instance",
                                      retry_after_s=state.scheduler.drain_retry_after_s)


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

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._file.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def named_upload_or_raise(upload: UploadFile) -> NamedUpload:
    if upload.size == 0:
        raise EmptyAudioError(f"{upload.filename or 'upload'}: file is empty (0 bytes)", param="file")
    return NamedUpload(upload)
