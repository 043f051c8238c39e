"""Files written whole or not at all: the one implementation the engine, the HTTP API and the client share
(the client imports it from here; this module imports nothing of either).

:func:`replace_atomically` and :func:`write_atomic` write into a temporary file in the destination's
directory (same file system, so the rename is atomic), flush and fsync it, set its mode and move it over the
destination with :func:`os.replace`, then fsync the directory (best effort) so the rename survives a crash.
A reader sees the old file or the whole new one, never part of one; on any error the temporary file is
removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replace_atomically(
    path: Path, mode: int = 0o600, suffix: str = ".tmp"
) -> Iterator[tuple[BinaryIO, Path]]:
    """Yield ``(handle, temporary_path)`` for the new contents of ``path``; when the block ends without an
    error, the temporary file (named ``.<name>.<random><suffix>`` beside ``path``) is flushed, fsync'ed, given
    ``mode`` and moved over ``path``.

    Write through ``handle``, or (closing nothing) let another writer fill ``temporary_path`` by name; the
    handle is flushed and fsync'ed either way.

    Raises:
        OSError: the temporary file cannot be created, written or moved (it is removed).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` whole or not at all (:func:`replace_atomically`), with ``mode``.

    Raises:
        OSError: the file cannot be written; ``path`` is unchanged and no temporary file is left.
    """
    with replace_atomically(path, mode) as (handle, _tmp):
        handle.write(data)
