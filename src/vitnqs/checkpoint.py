"""Crash-safe files: atomic writes and checksummed checkpoints with a fallback copy.

A checkpoint directory holds ``checkpoint.msgpack`` (newest) and
``checkpoint.prev.msgpack`` (the one before). Each file is a magic line, the SHA-256
of the payload and the msgpack payload, so truncation and bit flips are detected.
An unreadable file is renamed aside (``*.corrupt-<time>``), never deleted, and the
previous checkpoint is used.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from flax.serialization import msgpack_restore, msgpack_serialize

MAGIC = b"VITNQS-CHECKPOINT v1\n"
CURRENT = "checkpoint.msgpack"
PREVIOUS = "checkpoint.prev.msgpack"


class CheckpointError(Exception):
    """A checkpoint file exists but cannot be read."""


def write_atomic(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Atomically write a new checkpoint, keeping the current one as the previous."""
    directory = Path(directory)
    data = msgpack_serialize(payload)
    blob = MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data
    current = directory / CURRENT
    write_atomic(current, blob, previous=directory / PREVIOUS)
    return current


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint file.

    Raises:
        CheckpointError: if the file is truncated, corrupt or not a checkpoint.

    """
    blob = Path(path).read_bytes()
    if not blob.startswith(MAGIC):
        raise CheckpointError("not a vitnqs checkpoint (bad header)")
    header_end = blob.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise CheckpointError("truncated header")
    digest = blob[len(MAGIC) : header_end].decode(errors="replace")
    data = blob[header_end + 1 :]
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError("checksum mismatch (truncated or corrupted file)")
    try:
        return msgpack_restore(data)
    except Exception as error:  # msgpack raises several types
        raise CheckpointError(f"cannot decode payload: {error}") from error


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """Return the newest readable checkpoint in ``directory``, or ``None`` if there is none.

    Unreadable files are reported on stderr and renamed aside.
    """
    directory = Path(directory)
    for name in (CURRENT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            return read_checkpoint(path)
        except (CheckpointError, OSError) as error:
            aside = path.with_name(f"{name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            print(
                f"[vitnqs] WARNING: checkpoint {path} is unreadable ({error}); "
                f"moved it to {aside.name} and trying the previous one",
                file=sys.stderr,
            )
    return None
