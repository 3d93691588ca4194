"""What ``stenod transcribe`` accepts as input, and where each input's outputs go.

Inputs: a file path, ``-`` for standard input (``ffmpeg ... -f wav - | stenod transcribe -``), or an
``http(s)://`` URL, downloaded into memory under the same size limit the server puts on uploads
(``audio.max_file_mb``), checked from Content-Length and again while bytes arrive.

Outputs: one stem per input, never shared: ``a/x.mp3`` and ``b/x.flac`` become ``x.mp3.*`` and
``x.flac.*``, and ``a/x.wav`` and ``b/x.wav`` become ``a-x.wav.*`` and ``b-x.wav.*`` (batch does the
same for its folders), so no result silently overwrites another.
"""

from __future__ import annotations

import io
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from stenod.errors import InputError, UploadTooLargeError

STDIN = "-"
DOWNLOAD_TIMEOUT_S = 60.0
DOWNLOAD_CHUNK_BYTES = 1 << 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DownloadError(InputError):
    """A URL input could not be fetched (network error, HTTP error status)."""

    code = "download_failed"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One command-line input as given."""

    arg: str
    """The argument: a path, ``-`` or a URL; used in messages."""

    @property
    def is_stdin(self) -> bool:
        return self.arg == STDIN

    @property
    def is_url(self) -> bool:
        return self.arg.lower().startswith(("http://", "https://"))

    @property
    def file_name(self) -> str:
        """The name outputs are derived from: the file name, the URL's last path part, or ``stdin``."""
        if self.is_stdin:
            return "stdin"
        if self.is_url:
            name = PurePosixPath(unquote(urlparse(self.arg).path)).name
            return _safe(name) or "download"
        name = PurePosixPath(self.arg.replace("\\", "/")).name
        return name if name not in ("", ".", "..") else "input"

    @property
    def parent_name(self) -> str:
        if self.is_stdin or self.is_url:
            return _safe(urlparse(self.arg).hostname or "") if self.is_url else ""
        return PurePosixPath(self.arg.replace("\\", "/")).parent.name


def _safe(name: str) -> str:
    """A name from the network made safe for a file name: no separators, no leading dots."""
    return _UNSAFE.sub("_", name).lstrip("._")[:120]


def output_stems(inputs: Sequence[InputSpec]) -> list[str]:
    """One distinct output stem per input, in order; see the module docstring."""
    stems = [PurePosixPath(i.file_name).stem or i.file_name for i in inputs]
    counts = Counter(stems)
    stems = [i.file_name if counts[s] > 1 else s for s, i in zip(stems, inputs, strict=True)]
    counts = Counter(stems)
    out: list[str] = []
    for stem, spec in zip(stems, inputs, strict=True):
        if counts[stem] > 1 and spec.parent_name:
            stem = f"{spec.parent_name}-{stem}"
        out.append(stem)
    # Still equal (the same path twice, two URLs with one name): number them, first one plain.
    seen: Counter[str] = Counter()
    unique: list[str] = []
    for stem in out:
        seen[stem] += 1
        unique.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return unique


def read_stdin(stdin: BinaryIO | None = None) -> BinaryIO:
    """All of standard input as a named in-memory file (FFmpeg needs to seek)."""
    data = (stdin or sys.stdin.buffer).read()
    buffer = io.BytesIO(data)
    buffer.name = "stdin"
    return buffer


def download_or_raise(url: str, *, max_bytes: int, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> BinaryIO:
    """Fetch ``url`` into memory, refusing more than ``max_bytes`` (from Content-Length, else while
    reading).

    Raises:
        DownloadError: connection failure, timeout, or an HTTP error status.
        UploadTooLargeError: the body is larger than ``max_bytes``.
    """
    import httpx

    limit_mb = max_bytes / 1e6
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response:
            if response.status_code >= 400:
                raise DownloadError(f"{url}: download failed: HTTP {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UploadTooLargeError(
                    f"{url}: {int(declared) / 1e6:.1f} MB is more than the {limit_mb:g} MB limit (audio.max_file_mb)")
            buffer = io.BytesIO()
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                buffer.write(chunk)
                if buffer.tell() > max_bytes:
                    raise UploadTooLargeError(f"{url}: more than the {limit_mb:g} MB limit (audio.max_file_mb)")
    except httpx.HTTPError as exc:
        raise DownloadError(f"{url}: download failed: {exc or type(exc).__name__}") from exc
    buffer.seek(0)
    buffer.name = url
    return buffer
