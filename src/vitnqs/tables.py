"""Tables from run outputs: the run table, the step history and the reproduced Table 1."""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

from vitnqs.sweeps import RUN_COLUMNS, in_sweep

SUMMARY_FIELDS = (
    "n_parameters",
    "energy",
    "energy_error",
    "reference_energy",
    "reference_uncertainty",
    "reference_kind",
    "rel_error",
    "median_step_time_s",
    "total_time_s",
    "device",
)
"""Fields of ``summary.json`` copied into ``runs.csv`` (after the run settings)."""


@cache
def paper_table1() -> pd.DataFrame:
    """Table 1 of the paper, shipped in ``vitnqs/data/paper_table1.csv``."""
    with resources.files("vitnqs").joinpath("data/paper_table1.csv").open() as f:
        table = pd.read_csv(f)
    table["attention"] = table["attention"].str.lower()
    return table


def collect(sweeps: pd.DataFrame, run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run and all per-step rows, keyed by the run settings.

    Args:
        sweeps: the run table of :func:`vitnqs.sweeps.runs_table` (settings and ``sweeps``).
        run_dirs: the run directories, in the order of ``sweeps``' rows.

    Returns:
        ``(runs, history)``.

    """
    rows, histories = [], []
    for (_, settings), run_dir in zip(sweeps.iterrows(), run_dirs, strict=True):
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        stored = {c: summary["config"][c] for c in RUN_COLUMNS}
        expected = {c: settings[c] for c in RUN_COLUMNS}
        if stored != expected:
            raise ValueError(f"{run_dir}/summary.json holds {stored}, expected {expected}")
        rows.append(
            {**expected, "sweeps": settings["sweeps"], "run": Path(run_dir).name}
            | {f: summary[f] for f in SUMMARY_FIELDS}
        )
        history = pd.read_csv(Path(run_dir) / "history.csv")
        histories.append(history.assign(**expected)[[*RUN_COLUMNS, *history.columns]])
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True)


def _combined_sigma(a: float, b: float) -> float:
    return math.hypot(a, b)


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """The reproduced Table 1 beside the paper's values.

    Args:
        runs: ``runs.csv`` as returned by :func:`collect`.

    Returns:
        One row per (L, attention) of the ``table1`` sweep (first seed) and of the paper,
        with the reproduced and the paper's energy, parameters and total time, and the
        energy difference in units of the combined error bar; a side without a value at
        that L stays empty.

    """
    ours = in_sweep(runs, "table1").sort_values(["L", "attention", "seed"])
    ours = ours.groupby(["L", "attention"], as_index=False).first()
    paper = paper_table1().rename(
        columns={
            "energy_per_site": "paper_energy",
            "energy_error": "paper_energy_error",
            "parameters": "paper_parameters",
            "total_time_hours_a100_5000_steps": "paper_time_h",
        }
    )[["L", "attention", "paper_energy", "paper_energy_error", "paper_parameters", "paper_time_h"]]
    # outer: the paper's rows stay even where this scale has no run at that L
    table = ours.merge(paper, on=["L", "attention"], how="outer")
    table["J2"] = table["J2"].fillna(0.5)
    table["layers"] = table["layers"].fillna(4)
    for column in ("layers", "steps", "samples", "n_parameters", "paper_parameters"):
        table[column] = table[column].astype("Int64")
    table["time_h"] = table["total_time_s"] / 3600
    table["difference_sigma"] = [
        (row.energy - row.paper_energy) / _combined_sigma(row.energy_error, row.paper_energy_error)
        if pd.notna(row.paper_energy)
        else math.nan
        for row in table.itertuples()
    ]
    order = {"t5": 0, "decoupled": 1, "factored": 2}
    table = table.sort_values(
        ["L", "attention"], key=lambda s: s.map(order) if s.name == "attention" else s
    )
    return table[
        ["L", "J2", "layers", "attention", "steps", "samples",
         "energy", "energy_error", "paper_energy", "paper_energy_error", "difference_sigma",
         "n_parameters", "paper_parameters", "time_h", "paper_time_h", "device"]
    ].reset_index(drop=True)  # fmt: skip


def _energy(value: float, error: float) -> str:
    """``-0.503216(8)``-style value with the error in the last digits."""
    if pd.isna(value):
        return ""
    if not error or pd.isna(error):
        return f"{value:.6f}"
    # one significant digit of the error, two if it starts with 1 or 2 (as in the paper)
    digits = -math.floor(math.log10(error))
    if error * 10**digits < 2.5:
        digits += 1
    digits = max(0, digits)
    return f"{value:.{digits}f}({round(error * 10**digits):d})"


def table1_text(table: pd.DataFrame, fmt: str) -> str:
    """Table 1 as Markdown (``fmt="md"``) or LaTeX (``fmt="tex"``)."""
    names = {"t5": "T5", "decoupled": "Decoupled", "factored": "Factored"}

    def optional(column: str, fmt: str) -> list[str]:
        return ["" if pd.isna(v) else fmt.format(v) for v in table[column]]

    shown = pd.DataFrame(
        {
            "L": table["L"],
            "attention": table["attention"].map(names),
            "energy": list(map(_energy, table.energy, table.energy_error)),
            "paper energy": list(map(_energy, table.paper_energy, table.paper_energy_error)),
            "diff. (sigma)": optional("difference_sigma", "{:+.1f}"),
            "parameters": optional("n_parameters", "{:,.0f}"),
            "paper parameters": optional("paper_parameters", "{:,.0f}"),
            "time (h)": optional("time_h", "{:.3g}"),
            "paper time (h, A100)": optional("paper_time_h", "{:g}"),
        }
    )
    if fmt == "md":
        return shown.to_markdown(index=False) + "\n"
    return shown.to_latex(index=False, escape=True)
