"""Files the pool writes where others can write too (the logs directory workers mount, the
artifacts folder): opened without following symlinks, regular files only.

A day's log replaced by a symlink must not be written through to the file it names, and a
symlink to ``/dev/zero`` among last month's logs must not become an archive without end. Each
function raises :class:`OSError` (``ELOOP`` for a symlink, ``EINVAL`` for a non-regular file)
and the callers treat it as they treat a full disk.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600  # artifacts: a page's screenshot and console may hold what a test typed
PRIVATE_FOLDER = 0o700


def safe_name(test_run_id: str) -> str:
    """A test run id as a folder name (ids are validated; this sanitizes again): ``run`` when empty."""
    return (re.sub(r"[^A-Za-z0-9_.@+-]", "_", test_run_id).lstrip(".") or "run")[:128]


def _open(path: Path, flags: int, mode: int) -> int:
    # O_NONBLOCK: a FIFO put where a log belongs must not hang the writer until someone reads
    # it (it changes nothing for a regular file).
    descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return descriptor


def append_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Append ``text`` (UTF-8) to the regular file ``path``, creating it with ``mode``."""
    descriptor = _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    with os.fdopen(descriptor, "ab") as handle:
        handle.write(text.encode("utf-8"))


def open_for_reading(path: Path) -> BinaryIO:
    """The regular file ``path`` for reading (binary)."""
    return os.fdopen(_open(path, os.O_RDONLY, 0), "rb")


def private_folder(path: Path) -> Path:
    """``path`` and its missing parents created 0700; an existing ``path`` is made 0700 too,
    and one that is a symlink is refused."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    if path.is_symlink():
        raise OSError(errno.ELOOP, "a symlink where a folder belongs", str(path))
    os.chmod(path, PRIVATE_FOLDER)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, a new or regular file, readable by its owner only (0600)."""
    descriptor = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(descriptor, PRIVATE_FILE)  # an older file keeps its mode through O_TRUNC
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
