"""Crash-safe file writes: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    The bytes go to a hidden temporary file beside ``path``, are synced to disk, and the
    temporary file is renamed over ``path``; the directory is synced too.

    Args:
        path: destination.
        data: the bytes to write.
        previous: if given, an existing ``path`` is first renamed to it.

    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if previous is not None and path.exists():
        os.replace(path, previous)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Sync a directory's entries (renames and new files) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
