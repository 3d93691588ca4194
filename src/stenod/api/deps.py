"""FastAPI dependencies: app state, API-key check (-> the caller's :class:`Principal`), uploads
with the client's file name."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import Depends, Request, UploadFile

from stenod.api.ratelimit import KeyQuota
from stenod.api.state import AppState
from stenod.errors import EmptyAudioError, PermissionDeniedError, ServiceUnavailableError
from stenod.storage.key_store import KeyPolicy

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
    """The key is one of ``[server] admin_api_keys`` or was created with ``stenod keys create --admin``."""
    key_id: str | None = None
    """The ``stenod keys`` id (``key_...``); ``None`` for keys from the settings."""
    policy: KeyPolicy | None = None
    """The key's limits; ``None``: unlimited."""


def tenant_for_static_key(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def require_api_key(request: Request, state: State) -> Principal:
    """The auth dependency: checks the Bearer key (settings keys, or ``stenod keys`` keys when
    ``[server] key_store`` is on), counts the request against the key's requests-per-minute, and
    returns the caller. The key's X-RateLimit headers go on the response (see the middleware).

    Raises:
        AuthenticationError: keys are required and the request has none or a wrong one (401).
        RateLimitedError: over the key's requests per minute (429).
    """
    identity = state.auth.authenticate(request.headers.get("authorization"))
    if identity is None:
        return Principal(tenant_id=ANONYMOUS_TENANT)
    principal = Principal(tenant_id=identity.tenant_id, admin=identity.admin, key_id=identity.key_id,
                          policy=identity.policy)
    if identity.key_id is not None and identity.policy is not None:
        headers = state.limits.hit_request(identity.key_id, identity.policy)
        if headers:
            request.scope.setdefault("state", {})["rate_limit_headers"] = headers
        request.scope.setdefault("state", {})["quota"] = KeyQuota(state.limits, identity.key_id, identity.policy)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_api_key)]


def quota_of(request: Request) -> KeyQuota | None:
    """The calling key's audio-minutes and concurrency quota (set by :func:`require_api_key`)."""
    return request.scope.get("state", {}).get("quota")


def require_admin(request: Request, state: State) -> None:
    """Admin routes (``/load``) need an admin key (``[server] admin_api_keys`` or a ``stenod keys
    create --admin`` key); with none configured they are refused, so no client can switch the
    model of an open server.

    Raises:
        AuthenticationError: no or unknown key (401).
        PermissionDeniedError: a valid key that is not an admin key, or no admin key possible (403).
    """
    server = state.settings.server
    if not server.admin_api_keys and not server.key_store:
        raise PermissionDeniedError("this route needs an admin API key; the server has none configured "
                                    "([server] admin_api_keys)")
    identity = state.auth.authenticate(request.headers.get("authorization"))
    if identity is None or not identity.admin:
        raise PermissionDeniedError("this route needs an admin API key")


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
