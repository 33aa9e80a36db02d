"""Crash-safe file writes: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def write_atomic(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    The bytes go to a hidden temporary file beside ``path``, are synced to disk, and the
    temporary file is renamed over ``path``; the directory is synced too.

    Args:
        path: destination.
        data: the bytes to write.
        previous: if given, an existing ``path`` is first renamed to it.

    Raises:
        OSError: naming ``path`` (a full disk, a read-only directory); no temporary file
            is left behind.

    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def fsync_dir(directory: Path) -> None:
    """Sync a directory's entries (renames and new files) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: Path, why: str) -> Path:
    """Rename a file that cannot be used to ``<name>.<why>-<time>`` beside it; never delete.

    Returns:
        The new path.

    """
    path = Path(path)
    aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    return aside
