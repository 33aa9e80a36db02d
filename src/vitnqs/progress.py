"""Progress on stderr: a live bar in a terminal, a plain line every few percent otherwise."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

PLAIN_EVERY_PERCENT = 5
"""Batch jobs (no terminal) get one line per this many percent of the run."""


def _describe(row: dict[str, float]) -> str:
    text = f"E/N={row['energy']:.6f}({row['energy_error']:.1e})"
    if not math.isnan(row["rel_error"]):
        text += f" rel.err={row['rel_error']:.2e}"
    return text


class Progress:
    """Report optimization progress; one instance per invocation."""

    def __init__(self, total_steps: int, enabled: bool = True, stream=None):
        self.total = total_steps
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.bar: tqdm | None = None
        self.first_step = 0
        self.started = 0.0
        self.next_report = 0

    def start(self, step: int) -> None:
        """Begin reporting at ``step`` (non-zero when resuming)."""
        self.first_step = step
        self.started = time.perf_counter()
        every = max(1, self.total * PLAIN_EVERY_PERCENT // 100)
        self.next_report = step  # report the first step, then every few percent
        self.every = every
        if self.enabled and self.interactive:
            self.bar = tqdm(total=self.total, initial=step, file=self.stream, dynamic_ncols=True)

    def update(self, row: dict[str, float]) -> None:
        """Report the step just finished (``row`` as in ``history.csv``)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(_describe(row), refresh=False)
            self.bar.update(1)
            return
        step = int(row["step"])
        done = step + 1
        if step >= self.next_report or done == self.total:
            rate = (time.perf_counter() - self.started) / max(1, done - self.first_step)
            eta = rate * (self.total - done)
            print(
                f"[vitnqs] step {done}/{self.total} ({100 * done / self.total:.0f}%) "
                f"{_describe(row)} | {rate:.2f} s/step, ETA {_hms(eta)}",
                file=self.stream,
                flush=True,
            )
            self.next_report = step + self.every

    def close(self) -> None:
        """Close the bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
