"""Write files so that a reader (or a resumed run) never sees a half-written one: write a temp
file in the same folder, fsync, then rename over the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, _default_file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
