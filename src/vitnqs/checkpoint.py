"""Checksummed checkpoints with a fallback copy, and the lock of a run directory.

A checkpoint directory holds :data:`vitnqs.rundir.CHECKPOINT` (newest) and
:data:`vitnqs.rundir.PREVIOUS_CHECKPOINT` (the one before). Each file is a magic line, the SHA-256
of the payload and the msgpack payload, so truncation and bit flips are detected.
An unreadable file is renamed aside (``*.corrupt-<time>``), never deleted, and the
previous checkpoint is used. :func:`lock_run_dir` keeps a second process out of a run
directory that one is working in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitnqs import files
from vitnqs.rundir import CHECKPOINT, LOCK, PREVIOUS_CHECKPOINT

MAGIC = b"VITNQS-CHECKPOINT v1\n"


class RunDirBusy(Exception):
    """Another process holds the run directory's lock; nothing was touched."""


class CheckpointError(Exception):
    """A checkpoint file exists but cannot be read."""


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Atomically write a new checkpoint, keeping the current one as the previous."""
    from flax.serialization import msgpack_serialize  # flax imports JAX: only when needed

    directory = Path(directory)
    data = msgpack_serialize(payload)
    blob = MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data
    current = directory / CHECKPOINT
    files.write_atomic(current, blob, previous=directory / PREVIOUS_CHECKPOINT)
    return current


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint file.

    Raises:
        CheckpointError: if the file is truncated, corrupt or not a checkpoint.

    """
    from flax.serialization import msgpack_restore

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
    unreadable = []
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = directory / name
        if not path.exists():
            continue
        try:
            return read_checkpoint(path)
        except (CheckpointError, OSError) as error:
            aside = files.set_aside(path, "corrupt")
            unreadable.append(aside.name)
            print(
                f"[vitnqs] WARNING: checkpoint {path} is unreadable ({error}); "
                f"moved it to {aside.name}",
                file=sys.stderr,
            )
    if unreadable:
        print(
            f"[vitnqs] WARNING: no readable checkpoint left in {directory} "
            f"({', '.join(unreadable)} set aside): the run starts over from step 0",
            file=sys.stderr,
        )
    return None


def discard_current(directory: Path) -> None:
    """Drop the current checkpoint for the previous one (or none): it holds a bad state."""
    directory = Path(directory)
    if (directory / PREVIOUS_CHECKPOINT).exists():
        os.replace(directory / PREVIOUS_CHECKPOINT, directory / CHECKPOINT)
    elif (directory / CHECKPOINT).exists():
        os.remove(directory / CHECKPOINT)
    files.fsync_dir(directory)


@contextlib.contextmanager
def lock_run_dir(directory: Path) -> Iterator[None]:
    """Hold ``directory/run.lock`` for the duration, or fail at once if another process does.

    ``flock``: the kernel drops the lock when the holder exits, however it exits, so a
    crashed run leaves no stale lock; on NFS Linux maps it to a POSIX lock that all clients
    see. The file names the holder (host, pid, SLURM job) for the error message of the next.
    Where the file system has no locks at all, the run goes on with a warning.

    Raises:
        RunDirBusy: the lock is held, naming the holder; the directory is left as it was.

    """
    path = Path(directory) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                print(
                    f"[vitnqs] WARNING: cannot lock {path} ({error}); nothing stops a second "
                    "process from working in this directory at the same time",
                    file=sys.stderr,
                )
                yield
                return
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirBusy(
                f"{directory} is in use by another process ({holder}); this one stops and "
                "touches nothing. Wait for that run to end, or stop it (scancel JOBID for a "
                "SLURM job), then rerun to resume from its checkpoint."
            ) from None
        job = os.environ.get("SLURM_JOB_ID")
        holder = (
            f"pid {os.getpid()} on {platform.node()}"
            + (f", SLURM job {job}" if job else "")
            + f", since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
