"""How a run stops: its exit codes, the exceptions behind them, and signal handling.

Importing neither JAX nor NetKet, so that the command line can install the signal
handlers (:class:`StopSignals`) before it loads them: a SIGTERM at any moment before
``summary.json`` is written ends the run with :data:`EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_BAD_INPUT = 2
"""Invalid options, or a directory holding a different run; nothing was written."""
EXIT_DIVERGED = 3
"""The energy or the parameters left their bounds; the last good checkpoint is kept."""
EXIT_BUSY = 73
"""Another process holds the run directory's lock; nothing was touched."""
EXIT_IO = 74
"""A file could not be read or written (sysexits' EX_IOERR); the message names it."""
EXIT_INTERRUPTED = 75
"""A signal stopped the run; rerun the same command to resume from its checkpoint."""
EXIT_BAD_SETUP = 78
"""The machine cannot run the run as asked (``--device gpu`` without a usable GPU, or too
little GPU memory; sysexits' EX_CONFIG); nothing was written."""

SIGNALS = (signal.SIGTERM, signal.SIGURG, signal.SIGUSR1, signal.SIGINT)
"""The signals that stop a run with a checkpoint: termination, preemption, SLURM's warning
before the time limit (SIGURG, see ``workflow/rules/common.smk``) and Ctrl-C."""


class Interrupted(Exception):
    """A signal asked the run to stop (after writing a checkpoint, inside the step loop)."""


class Diverged(RuntimeError):
    """The energy or the parameters left their bounds; the last good checkpoint is kept."""


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    return signal.Signals(signum).name


class StopSignals:
    """Signal handlers for the length of a run: stop at once, or at the next step.

    Outside :meth:`deferred` a signal raises :class:`Interrupted` where the program is
    (start-up, the final evaluation: nothing is lost, the last checkpoint stands). Inside
    it, the signal is recorded in :attr:`received` for the step loop to checkpoint and
    stop at the next step boundary. A second Ctrl-C always stops at once.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        name = signal_name(signum)
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.received = signum
        if not self._deferring:
            raise Interrupted(f"received {name} outside the step loop: rerun to resume")
        print(f"\n[vitnqs] {name} received: checkpointing after this step", file=sys.stderr)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block signals wait for the step loop (:attr:`received`)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
