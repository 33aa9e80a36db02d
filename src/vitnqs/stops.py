"""How a run stops: its exit codes, the exceptions behind them, and signal handling.

Importing neither JAX nor NetKet, so that the command line can install the signal
handlers (:class:`StopSignals`) before it loads them: a SIGTERM at any moment before
a run's summary is written ends the run with :data:`EXIT_INTERRUPTED`.
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
EXIT_DAMAGED_RUN = 65
"""A finished run's files do not match its summary (sysexits' EX_DATAERR); the message
names the file and the repair."""
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
    """Signal handlers for the length of a command: it stops at its next safe point.

    By default a signal is only recorded (:attr:`received`): nothing is raised inside
    JAX's or NetKet's code (a start-up interrupted inside JAX's backend discovery would
    fail with another error). The command looks at its safe points (:meth:`check`:
    after start-up, before and after the steps; the run loop at every step boundary,
    :class:`vitnqs.loop.StepMonitor`). Inside :meth:`immediate` (the final evaluation: no
    state to save, the rerun repeats it) a signal raises :class:`Interrupted` at once.
    A second Ctrl-C always stops at once.

    The command line installs them before it imports anything heavy
    (``python -m vitnqs``: ``vitnqs/__main__.py``), so that a SIGTERM at any moment
    before a run's summary is written ends it with :data:`EXIT_INTERRUPTED`.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._immediate = False
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
        if self._immediate:
            raise Interrupted(f"received {name}: rerun the same command to resume")
        print(f"\n[vitnqs] {name} received: stopping at the next safe point", file=sys.stderr)

    def check(self, where: str) -> None:
        """Raise :class:`Interrupted` if a stop signal was received.

        Args:
            where: what the command was doing, for the message (``"during start-up"``).

        """
        if self.received is not None:
            raise Interrupted(
                f"received {signal_name(self.received)} {where}: rerun the same command to resume"
            )

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """Within this block a signal raises :class:`Interrupted` at once (one pending too)."""
        self.check("before the final evaluation")
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False
