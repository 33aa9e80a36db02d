"""Runs that are not lost to a jump or a collapse: the bounded SR step and two remedies.

Runs are lost in two ways the divergence guard (:func:`vitnqs.loop.divergence`) does not
see, because the energy stays finite and inside the spectrum (``docs/stability.md``):

* a **jump**: the energy rises back by far more than its error bars and may never
  recover. :func:`find_jump` is the one definition (the study's table uses it too): the
  mean energy of the last :data:`WINDOW` steps lies above the lowest earlier such mean by
  more than :data:`JUMP_SIGMAS` combined error bars. :class:`vitnqs.loop.JumpGuard` keeps
  the driver's state at its best window and, on a jump, the run returns there with half
  the step (``jump_remedies`` times at most).
* a **collapse**: ``|psi|^2`` concentrates on a few configurations and the Markov chains
  stop moving (acceptance below :data:`COLLAPSE_ACCEPTANCE`, :func:`collapsed`); few-sample
  SR does not leave it, more samples can (``studies/collapse_L4``). The remedy takes
  :data:`COLLAPSE_SAMPLES_FACTOR` times more samples per step from the same chains
  (``collapse_remedies`` times at most).

The **bounded step** (``max_update``) limits each SR update in SR's own metric: the
predicted change of the wave function on the step's samples, ``||O (lr dθ)||^2 / M``
with the centred log-derivatives ``O``, stays at most ``max_update``
(:class:`vitnqs.loop.StepControl`; one Jacobian-vector product per step). The factor it
applies, and the jump remedy's, are the history's ``update_scale``.

All three are off by default (run settings of :class:`vitnqs.config.RunConfig` that name
a run directory only when set, :func:`vitnqs.config.run_name`). This module holds the
definitions and imports neither JAX nor NetKet (the tables mark jumps with it); the run
loop's parts are in :mod:`vitnqs.loop`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

WINDOW = 10
"""Steps per window of the jump test: single steps' error bars dip to 1e-4 at J2 = 0, so a
running-minimum test on single steps would flag every healthy run."""
JUMP_SIGMAS = 3.0
"""A window mean this many combined error bars above the best earlier one is a jump."""
COLLAPSE_ACCEPTANCE = 0.1
"""A window mean acceptance below this is a collapse (healthy runs: 0.2-0.5)."""
COLLAPSE_SAMPLES_FACTOR = 4
"""The collapse remedy multiplies the samples per step by this (M = 1024 rescued the
4 x 4 Decoupled run that M = 128 and 256 left collapsed, ``studies/collapse_L4``)."""


class Remedy(Exception):  # noqa: N818 (an event that the run remedies, not an error)
    """A jump or a collapse that the run remedies in place (:func:`vitnqs.optimize.optimize`)."""

    def __init__(self, record: dict[str, Any]):
        super().__init__(record["event"])
        self.record = record


@dataclasses.dataclass(frozen=True)
class Jump:
    """A jump of a run's energy (see :func:`find_jump`)."""

    step: int
    """The last step of the window that rose."""
    best_step: int
    """The last step of the lowest earlier window."""
    best_mean: float
    """Mean energy per site of that window."""
    mean: float
    """Mean energy per site of the window that rose."""
    sigmas: float
    """The rise in combined error bars."""


def window_means(energies: Sequence[float], errors: Sequence[float], window: int = WINDOW):
    """Means of sliding windows of ``window`` steps and their error bars.

    Returns:
        ``(means, errors)``, arrays of length ``len(energies) - window + 1``: entry ``k``
        covers steps ``k .. k + window - 1``; the error of a mean is
        ``sqrt(sum err_i^2) / window``.

    """
    e, s = np.asarray(energies, float), np.asarray(errors, float)
    if len(e) < window:
        return np.empty(0), np.empty(0)
    kernel = np.ones(window) / window
    means = np.convolve(e, kernel, mode="valid")
    errs = np.sqrt(np.convolve(s**2, kernel, mode="valid") / window)
    return means, errs


def find_jump(
    energies: Sequence[float],
    errors: Sequence[float],
    window: int = WINDOW,
    sigmas: float = JUMP_SIGMAS,
) -> Jump | None:
    """The first jump of a history, or ``None``.

    A jump: the mean energy of a window of ``window`` steps lies above the lowest mean of
    the windows before it (ending at least one step earlier) by more than ``sigmas``
    combined error bars ``hypot(err_window, err_best)``.

    Args:
        energies: energy per site of each step.
        errors: its error of the mean.
        window: steps per window.
        sigmas: the threshold.

    """
    means, errs = window_means(energies, errors, window)
    best = None
    for k in range(len(means)):
        if best is not None:
            rise = (means[k] - means[best]) / math.hypot(errs[k], errs[best])
            if rise > sigmas:
                return Jump(k + window - 1, best + window - 1, means[best], means[k], rise)
        if best is None or means[k] < means[best]:
            best = k
    return None


def collapsed(acceptances: Sequence[float], window: int = WINDOW) -> bool:
    """Whether the mean acceptance of the last ``window`` steps is below the threshold."""
    if len(acceptances) < window:
        return False
    return float(np.mean(acceptances[-window:])) < COLLAPSE_ACCEPTANCE


def describe(record: dict[str, Any]) -> str:
    """A remedy record in words, for the tables (``remedies`` of ``runs.csv``)."""
    if record["event"] == "jump":
        return (
            f"jumped at step {record['step']} (+{record['sigmas']:.1f} sigma), back to step "
            f"{record['returned_to']} with the update x{record['update_factor']:g}"
        )
    return (
        f"collapsed at step {record['step']} (acceptance {record['acceptance']:.3f}), "
        f"{record['samples']} samples per step after"
    )
