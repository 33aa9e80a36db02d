"""A run directory: the names of its files, its history, and reading a finished run.

One optimization writes into its directory (``results/runs/<run>/``, named by its
settings, :func:`vitnqs.config.run_name`):

* :data:`HISTORY`: one row per step (:data:`HISTORY_COLUMNS`);
* :data:`SUMMARY`: settings, parameter count, final energy, timings, versions, device;
  its presence marks the run finished;
* :data:`INIT_PARAMS` and :data:`PARAMS`: initial and final parameters;
* :data:`CHECKPOINT` and :data:`PREVIOUS_CHECKPOINT`: the state to resume from
  (:mod:`vitnqs.checkpoint`); :data:`LOCK`: held while a process works there;
* :data:`DIVERGENCES`: the run's divergences and their remedies (a rerun from the last
  checkpoint), :data:`REMEDIES` its jumps and collapses remedied in place;
* :data:`SYMMETRIZED`: the symmetrized evaluation (beyond the paper), and
  :data:`FINETUNED`, the symmetrized fine-tuning's own directory below it.

This module is the only one that spells these names. It imports neither JAX nor
NetKet, except :func:`load_run`, which rebuilds the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from vitnqs import files
from vitnqs.config import ConfigError, RunConfig

SUMMARY = "summary.json"
HISTORY = "history.csv"
PARAMS = "params.msgpack"
INIT_PARAMS = "init_params.msgpack"
CHECKPOINT = "checkpoint.msgpack"
PREVIOUS_CHECKPOINT = "checkpoint.prev.msgpack"
LOCK = "run.lock"
DIVERGENCES = "divergences.json"
REMEDIES = "remedies.json"
"""The run's in-run remedies of jumps and collapses (:mod:`vitnqs.stability`)."""
SYMMETRIZED = "symmetrized.json"
FINETUNED = "finetuned"
"""The symmetrized fine-tuning's directory inside a run's (``snakemake beyond``)."""
VOUCHED = (HISTORY, PARAMS, INIT_PARAMS)
"""The files of a finished run whose size and SHA-256 its summary records
(:func:`vouch`), checked by every reader (:func:`check_finished`)."""

HISTORY_COLUMNS = (
    "step",
    "energy",
    "energy_error",
    "energy_variance",
    "rel_error",
    "acceptance",
    "r_hat",
    "lr",
    "update_scale",
    "time_s",
)
"""Columns of :data:`HISTORY`: mean, error of the mean and variance of the local energy
per site ``E_loc / N`` (S.S units), relative error to the reference, acceptance,
split-R-hat over an exponential window of past steps (empty when NetKet gives none),
learning rate of the schedule, the factor on the step's update (the bounded step and the
jump remedy, :class:`vitnqs.stability.StepControl`; 1 when off) and wall time of the step
in seconds."""
HISTORY_DEFAULTS = {"update_scale": 1.0}
"""Values of the columns that older runs' checkpoints lack (a checkpoint written before a
column existed still resumes)."""


def write_history(path: Path, rows: list[dict[str, float]], rewrite: bool = False) -> None:
    """Append ``rows`` to a history file, or write it anew (with its header).

    Args:
        path: the run's :data:`HISTORY`.
        rows: rows with the :data:`HISTORY_COLUMNS`.
        rewrite: replace the file (else append, creating it if needed); a rewritten file
            is synced to disk before this returns (the summary vouches for it next).

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


class DamagedRun(Exception):
    """A finished run's files do not match what its summary recorded; it counts as unfinished.

    Attributes:
        path: the file that fails the check.

    """

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = Path(path)


def file_record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, as a summary records them."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def vouch(directory: Path, history_rows: int | None, names=VOUCHED) -> dict[str, Any]:
    """What a summary records of the run's files: their sizes, hashes and history rows.

    Args:
        directory: the run directory (its files written and synced).
        history_rows: the rows of :data:`HISTORY` (``None``: the run has none).
        names: the files to record.

    """
    record = {name: file_record(Path(directory) / name) for name in names}
    if history_rows is not None:
        record["history_rows"] = history_rows
    return record


def _history_rows(path: Path) -> int:
    """Data rows of a history file (lines after the header; a cut last line counts)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return max(0, lines - 1)


def check_finished(directory: Path, summary: dict[str, Any]) -> None:
    """Check a finished run's files against what its summary recorded.

    A summary of this code records the size and SHA-256 of every file in
    :data:`VOUCHED` and the history's row count (:func:`vouch`); one written before
    that records none, and only the history's rows are checked against the run's steps.

    Raises:
        DamagedRun: naming the file, what differs and how to repair it.

    """
    directory = Path(directory)
    repair = (
        "rerun the run's command (or the same snakemake command, which reruns it): it "
        "restores the run's files from its last checkpoint and redoes the final evaluation"
    )
    files = summary.get("files")
    if files is None:
        if "finetune" in summary:
            return  # a fine-tuned stage of older code: nothing recorded
        files = {"history_rows": summary["config"]["steps"]}
    for name, expected in files.items():
        if name == "history_rows":
            continue
        path = directory / name
        if not path.exists():
            raise DamagedRun(f"{path} is missing; {repair}", path)
        found = file_record(path)
        if found != expected:
            raise DamagedRun(
                f"{path} does not match the run's {SUMMARY} ({found['bytes']} bytes, "
                f"{expected['bytes']} recorded; the content differs); {repair}",
                path,
            )
    if "history_rows" in files:
        path = directory / HISTORY
        rows = _history_rows(path) if path.exists() else 0
        if rows != files["history_rows"]:
            raise DamagedRun(
                f"{path} has {rows} rows where the run took {files['history_rows']} steps; "
                f"{repair}",
                path,
            )


def read_checked(directory: Path) -> dict[str, Any]:
    """The summary of a finished run whose files pass :func:`check_finished`.

    Raises:
        DamagedRun: a file does not match the summary.
        FileNotFoundError: the run has no summary (it is not finished).

    """
    summary = read_summary(directory)
    check_finished(directory, summary)
    return summary


def read_records(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A run's records of remedies (:data:`DIVERGENCES`, :data:`REMEDIES`): a JSON list.

    An unreadable file is set aside (renamed), like a corrupt checkpoint, and the run goes
    on as if it had none.

    Args:
        path: the file (none yet: no records).
        keys: the keys every record holds.

    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and set(keys) <= r.keys() for r in records
        ):
            raise ValueError(f"not a list of records with {', '.join(keys)}")
        return records
    except (ValueError, UnicodeDecodeError) as error:
        aside = files.set_aside(path, "corrupt")
        print(
            f"[vitnqs] WARNING: {path} is unreadable ({error}); moved it to {aside.name}: "
            "the run goes on as if it held no record",
            file=sys.stderr,
        )
        return []


def check_same_run(config: RunConfig, stored: dict[str, Any], where: Path) -> None:
    """Refuse to mix runs: a file in the directory must hold this very configuration.

    Raises:
        ConfigError: naming the settings that differ.

    """
    mine = dataclasses.asdict(config)
    # a setting added after the file was written holds its default there
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    diffs = [
        f"{k}: {stored.get(k, defaults[k])!r} there, {v!r} now"
        for k, v in mine.items()
        if stored.get(k, defaults[k]) != v
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
    try:
        check_finished(directory, summary)
    except DamagedRun as error:
        print(f"[vitnqs] WARNING: {error}; the run counts as unfinished", file=sys.stderr)
        return None
    return summary


def read_summary(directory: Path) -> dict[str, Any]:
    """The :data:`SUMMARY` of a finished run (or of its fine-tuned stage)."""
    return json.loads((Path(directory) / SUMMARY).read_text())


def load_run(directory: str | Path, params_file: str = PARAMS) -> tuple[dict[str, Any], Any, Any]:
    """Summary, rebuilt :class:`~vitnqs.models.ViT` and parameters of a finished run.

    The run's files are checked first (:func:`read_checked`).

    Args:
        directory: a run directory (or a fine-tuned stage, which holds the inner ViT's
            parameters under the same names).
        params_file: :data:`PARAMS` (trained) or :data:`INIT_PARAMS` (initial).

    Returns:
        ``(summary, model, params)`` with ``params`` the ``params`` collection.

    Raises:
        DamagedRun: the run's files do not match its summary.

    """
    import flax
    import jax
    import jax.numpy as jnp

    from vitnqs.models import ViT

    directory = Path(directory)
    summary = read_checked(directory)
    c = RunConfig.from_row(summary["config"])
    dtype = jnp.dtype(summary.get("options", {}).get("network_dtype", "float64"))
    model = ViT(c.attention, c.layers, c.d, c.heads, c.b, dtype=dtype)
    template = model.init(jax.random.key(0), jnp.ones((1, c.n_sites), dtype=jnp.float64))
    params = flax.serialization.from_bytes(
        template["params"], (directory / params_file).read_bytes()
    )
    return summary, model, params
