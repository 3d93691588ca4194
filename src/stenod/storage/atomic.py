"""Write files so that a reader (or a resumed run) never sees a half-written one: write a temp
file in the same folder, fsync, optionally verify it, then rename over the target. The one place
that does this for transcripts, manifests' summaries, assembled models and converted ggml files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_file_mode: int | None = None


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file (0666 & ~umask); mkstemp's is 0600. Read once:
    reading the umask means setting it, which must not race with other threads more than once."""
    global _file_mode
    if _file_mode is None:
        umask = os.umask(0o022)
        os.umask(umask)
        _file_mode = 0o666 & ~umask
    return _file_mode


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort (some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, *, verify: Callable[[Path], object] | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block and ``verify`` succeed.

    Raising inside the block (or from ``verify``, which gets the complete temp file) removes the
    temp file and leaves any existing ``path`` untouched, KeyboardInterrupt included.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: str | bytes) -> None:
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
