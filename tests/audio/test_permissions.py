"""A file the service's user may not read is a clear error, not a crash. Tests run as root (who can
read anything), so the check runs in a forked child that has dropped to ``nobody``."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stenod.audio import decode_audio, probe_audio
from stenod.errors import AudioDecodeError
from tests.conftest import JFK, skip_or_fail


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder ``nobody`` can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="stenod-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(paths: list[Path]) -> list[str]:
    """In a forked child running as ``nobody``: probe and decode each path; one line per path, the
    error message or ``ok``. Everything the child needs is imported before the fork."""
    nobody = pwd.getpwnam("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os._exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            lines = []
            for path in paths:
                try:
                    probe_audio(path)
                    decode_audio(path)
                    lines.append("ok")
                except AudioDecodeError as exc:
                    lines.append(exc.message)
            os.write(write_fd, "\n".join(lines).encode())
        except BaseException as exc:  # report anything else as a line the test will show
            os.write(write_fd, f"child failed: {type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output.splitlines()


def test_unreadable_file_is_a_permission_error_for_a_non_root_user(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root to drop to nobody (tests run as root in CI)")
    readable = shared_dir / "readable.flac"
    locked = shared_dir / "locked.flac"
    shutil.copyfile(JFK, readable)
    shutil.copyfile(JFK, locked)
    readable.chmod(0o644)
    locked.chmod(stat.S_IWUSR)  # owner (root) may write, nobody may read
    assert _as_nobody([readable, locked]) == ["ok", f"{locked}: permission denied"]
