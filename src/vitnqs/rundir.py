"""A run directory: the names of its files, its history, and reading a finished run.

One optimization writes into its directory (``results/runs/<run>/``, named by its
settings, :func:`vitnqs.sweeps.run_space`):

* :data:`HISTORY`: one row per step (:data:`HISTORY_COLUMNS`);
* :data:`SUMMARY`: settings, parameter count, final energy, timings, versions, device;
  its presence marks the run finished;
* :data:`INIT_PARAMS` and :data:`PARAMS`: initial and final parameters;
* :data:`CHECKPOINT` and :data:`PREVIOUS_CHECKPOINT`: the state to resume from
  (:mod:`vitnqs.checkpoint`); :data:`LOCK`: held while a process works there;
* :data:`DIVERGENCES`: the run's divergences and their remedies;
* :data:`SYMMETRIZED`: the symmetrized evaluation (beyond the paper), and
  :data:`FINETUNED`, the symmetrized fine-tuning's own directory below it.

This module is the only one that spells these names. It imports neither JAX nor
NetKet, except :func:`load_run`, which rebuilds the network.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from vitnqs.config import ConfigError, RunConfig

SUMMARY = "summary.json"
HISTORY = "history.csv"
PARAMS = "params.msgpack"
INIT_PARAMS = "init_params.msgpack"
CHECKPOINT = "checkpoint.msgpack"
PREVIOUS_CHECKPOINT = "checkpoint.prev.msgpack"
LOCK = "run.lock"
DIVERGENCES = "divergences.json"
SYMMETRIZED = "symmetrized.json"
FINETUNED = "finetuned"
"""The symmetrized fine-tuning's directory inside a run's (``snakemake beyond``)."""

HISTORY_COLUMNS = (
    "step",
    "energy",
    "energy_error",
    "energy_variance",
    "rel_error",
    "acceptance",
    "r_hat",
    "lr",
    "time_s",
)
"""Columns of :data:`HISTORY`: mean, error of the mean and variance of the local energy
per site ``E_loc / N`` (S.S units), relative error to the reference, acceptance,
split-R-hat over an exponential window of past steps (empty when NetKet gives none),
learning rate and wall time of the step in seconds."""


def write_history(path: Path, rows: list[dict[str, float]], rewrite: bool = False) -> None:
    """Append ``rows`` to a history file, or write it anew (with its header).

    Args:
        path: the run's :data:`HISTORY`.
        rows: rows with the :data:`HISTORY_COLUMNS`.
        rewrite: replace the file (else append, creating it if needed).

    """
    new = rewrite or not path.exists()
    with open(path, "w" if new else "a") as f:
        if new:
            f.write(",".join(HISTORY_COLUMNS) + "\n")
        for row in rows:
            f.write(
                ",".join("" if _isnan(row[c]) else _cell(c, row[c]) for c in HISTORY_COLUMNS) + "\n"
            )
        f.flush()


def _isnan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(column: str, value: float) -> str:
    return str(int(value)) if column == "step" else repr(float(value))


def check_same_run(config: RunConfig, stored: dict[str, Any], where: Path) -> None:
    """Refuse to mix runs: a file in the directory must hold this very configuration.

    Raises:
        ConfigError: naming the settings that differ.

    """
    mine = dataclasses.asdict(config)
    diffs = [
        f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in mine.items() if stored.get(k) != v
    ]
    if diffs:
        raise ConfigError(
            "out",
            f"{where} belongs to a run with other settings ({'; '.join(diffs)}); use another "
            "output directory (nothing was changed)",
        )


def read_finished(config: RunConfig, directory: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``directory`` (checked to be this run), else ``None``.

    A :data:`SUMMARY` that cannot be read (truncated, say) makes the run unfinished: it
    is reported, and the run resumes from its checkpoint and writes it anew.
    """
    path = Path(directory) / SUMMARY
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
        stored = summary["config"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        print(
            f"[vitnqs] WARNING: {path} is unreadable ({type(error).__name__}: {error}); the "
            "run counts as unfinished and resumes from its checkpoint",
            file=sys.stderr,
        )
        return None
    check_same_run(config, stored, path)
    return summary


def read_summary(directory: Path) -> dict[str, Any]:
    """The :data:`SUMMARY` of a finished run (or of its fine-tuned stage)."""
    return json.loads((Path(directory) / SUMMARY).read_text())


def load_run(directory: str | Path, params_file: str = PARAMS) -> tuple[dict[str, Any], Any, Any]:
    """Summary, rebuilt :class:`~vitnqs.models.ViT` and parameters of a finished run.

    Args:
        directory: a run directory (or a fine-tuned stage, which holds the inner ViT's
            parameters under the same names).
        params_file: :data:`PARAMS` (trained) or :data:`INIT_PARAMS` (initial).

    Returns:
        ``(summary, model, params)`` with ``params`` the ``params`` collection.

    """
    import flax
    import jax
    import jax.numpy as jnp

    from vitnqs.models import ViT

    directory = Path(directory)
    summary = read_summary(directory)
    c = RunConfig.from_row(summary["config"])
    dtype = jnp.dtype(summary.get("options", {}).get("network_dtype", "float64"))
    model = ViT(c.attention, c.layers, c.d, c.heads, c.b, dtype=dtype)
    template = model.init(jax.random.key(0), jnp.ones((1, c.n_sites), dtype=jnp.float64))
    params = flax.serialization.from_bytes(
        template["params"], (directory / params_file).read_bytes()
    )
    return summary, model, params
