"""FastAPI dependencies: app state, API-key check, uploads with the client's file name."""

from __future__ import annotations

import hmac
import io
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import Depends, Request, UploadFile

from stenod.api.state import AppState
from stenod.errors import AuthenticationError, EmptyAudioError, ServiceUnavailableError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.stenod
    return state


State = Annotated[AppState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> None:
    keys = state.settings.server.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(token.encode(), k.get_secret_value().encode()) for k in keys):
        raise AuthenticationError("invalid API key")


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
