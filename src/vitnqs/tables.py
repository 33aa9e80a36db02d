"""Tables from run outputs: the run table, the step history and the reproduced Table 1."""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from vitnqs import stability
from vitnqs.config import RUN_COLUMNS, RunConfig
from vitnqs.estimates import OLDER_EVALUATION, VARIANCE_TARGET, v_score
from vitnqs.references import literature_reference
from vitnqs.rundir import HISTORY, SUMMARY, SYMMETRIZED, check_same_run, read_checked

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


def in_sweep(table: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Rows of a runs table (with a ``sweeps`` column) that belong to ``sweep``."""
    return table[table["sweeps"].str.split(";").map(lambda names: sweep in names)]


def collect(sweeps: pd.DataFrame, run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run and all per-step rows, keyed by the run settings.

    Every run's files are checked against its summary first (:func:`vitnqs.rundir.read_checked`).
    ``runs`` has the configured learning rate ``lr`` and the one the run finished with,
    ``lr_effective`` (after its divergence remedies); ``history`` the rate of each step,
    ``step_lr``, beside the configured ``lr``.

    Args:
        sweeps: the run table of :func:`vitnqs.sweeps.runs_table` (settings and ``sweeps``).
        run_dirs: the run directories, in the order of ``sweeps``' rows.

    Returns:
        ``(runs, history)``.

    Raises:
        DamagedRun: a run's files do not match its summary; the message names the file.
        ConfigError: a run directory holds another run than its row.

    """
    rows, histories = [], []
    for (_, settings), run_dir in zip(sweeps.iterrows(), run_dirs, strict=True):
        summary = read_checked(run_dir)  # a damaged run is never read (DamagedRun)
        expected = {c: settings[c] for c in RUN_COLUMNS}
        check_same_run(RunConfig.from_row(expected), summary["config"], Path(run_dir) / SUMMARY)
        rows.append(
            {**expected, "sweeps": settings["sweeps"], "run": Path(run_dir).name}
            | {f: summary[f] for f in SUMMARY_FIELDS}
            | {"lr_effective": expected["lr"] * summary.get("lr_factor", 1.0)}
            | {"remedies": remedies(summary)}
            | _v_score(summary)
            # runs made before the version was recorded are version 1
            | {"results_version": summary.get("results_version", 1)}
        )
        # the run's per-step rate keeps its own name beside the configured one
        history = pd.read_csv(Path(run_dir) / HISTORY).rename(columns={"lr": "step_lr"})
        rows[-1] |= troubles(history)
        histories.append(history.assign(**expected)[[*RUN_COLUMNS, *history.columns]])
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True)


SYMMETRIZED_FIELDS = {
    **{field: field for field in (
        "energy", "energy_error", "energy_variance", "v_score", "v_score_error", "unreliable",
        "rel_error", "plain_rel_error", "plain_v_score", "n_ops", "eval_time_s",
        "eval_time_in_steps", "r_hat",
    )},
    "samples": "eval_samples",  # not the run's M, a run column the tables join on
}  # fmt: skip
"""Fields of a run's ``symmetrized.json`` (:func:`vitnqs.evaluation.evaluate_symmetrized`)
copied into ``symmetrized.csv``, and their columns there."""


def _v_score(summary: dict) -> dict:
    """The plain network's V-score, its uncertainty, and why it is unreliable.

    ``v_score`` (E_inf = 0, the V-score benchmark's convention), ``v_score_error`` and
    ``eval_unreliable`` ("" when reliable).

    Summaries of older versions hold no V-score: it is computed from their variance and
    marked, without an uncertainty.
    """
    if "v_score" in summary:
        return {f: summary[f] for f in ("v_score", "v_score_error", "eval_unreliable")}
    if summary.get("energy_variance") is None:
        score = math.nan
    else:
        score = v_score(summary["energy"], summary["energy_variance"], summary["config"]["L"] ** 2)
    return {"v_score": score, "v_score_error": math.nan, "eval_unreliable": OLDER_EVALUATION}


def collect_symmetrized(sweeps: pd.DataFrame, run_dirs: list[Path]) -> pd.DataFrame:
    """One row per run: its settings and its symmetrized evaluation (``symmetrized.json``)."""
    rows = []
    for (_, settings), run_dir in zip(sweeps.iterrows(), run_dirs, strict=True):
        result = json.loads((Path(run_dir) / SYMMETRIZED).read_text())
        rows.append(
            {c: settings[c] for c in RUN_COLUMNS}
            | {column: result.get(field, math.nan) for field, column in SYMMETRIZED_FIELDS.items()}
            | {"unreliable": result.get("unreliable", OLDER_EVALUATION)}
        )
    return pd.DataFrame(rows)


def remedies(summary: dict) -> str:
    """What a run's remedies changed, for the tables: empty if it needed none.

    Its divergences (resumed from the last checkpoint with half the learning rate) and its
    in-run remedies of jumps and collapses (:mod:`vitnqs.stability`).
    """
    parts = [
        f"diverged at step {d['step']}, resumed with lr x{d['lr_factor'] / 2:g}"
        for d in summary.get("divergences", [])
    ]
    return "; ".join([*parts, *map(stability.describe, summary.get("remedies", []))])


def troubles(history: pd.DataFrame) -> dict[str, str]:
    """The jump and the collapse of a run's history, in words (empty: none).

    A jump as :func:`vitnqs.stability.find_jump` defines it, remedied or not; a collapse:
    the acceptance of the last window below :data:`vitnqs.stability.COLLAPSE_ACCEPTANCE`.
    """
    jump = stability.find_jump(history["energy"], history["energy_error"])
    acceptance = history["acceptance"].to_numpy()
    return {
        "jump": "" if jump is None else f"step {jump.step} (+{jump.sigmas:.1f} sigma)",
        "collapse": (
            f"acceptance {acceptance[-stability.WINDOW :].mean():.3f} at the end"
            if stability.collapsed(acceptance)
            else ""
        ),
    }


def _combined_sigma(a: float, b: float) -> float:
    return math.hypot(a, b)


PAPER_HYPERPARAMETERS = ("d", "heads", "b", "samples", "steps", "lr", "diag_shift")
"""Settings that, with the layers, make a run one of the paper's (defaults of RunConfig)."""


def at_paper_settings(runs: pd.DataFrame) -> pd.Series:
    """Whether each run uses the paper's hyperparameters (:class:`RunConfig`'s defaults)."""
    paper = RunConfig(attention="factored", L=6, J2=0.5, layers=4)
    same = pd.Series(True, index=runs.index)
    for name in PAPER_HYPERPARAMETERS:
        same &= (runs[name] - getattr(paper, name)).abs() <= 1e-12 * abs(getattr(paper, name))
    return same


def _settings(row) -> str:
    return f"d {row.d}, h {row.heads}, M {row.samples}, {row.steps} steps"


def table1(
    runs: pd.DataFrame,
    scale: str,
    step_times: pd.DataFrame | None = None,
    symmetrized: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The reproduced Table 1 beside the paper's values and the reference energies.

    Rows are matched to the paper's by (L, J2, layers, attention): the paper's are 4-layer
    runs, so runs with other depths get rows of their own. The difference in units of
    the combined error bar is given only for runs at the paper's settings
    (:func:`at_paper_settings`); other rows name their scale in ``settings`` instead.

    Args:
        runs: ``runs.csv`` as returned by :func:`collect`.
        scale: the preset that made the runs.
        step_times: ``step_times.csv`` (timed one run at a time), if available.
        symmetrized: ``symmetrized.csv`` (beyond the paper: the networks projected on
            the lattice symmetries, :func:`collect_symmetrized`), if available.

    Returns:
        One row per (L, layers, attention) of the ``table1`` sweep (first seed) and of
        the paper, with the reproduced and the paper's energy and relative error, the
        reference energy, parameters, total time and time per step; a side without a
        value in that row stays empty.

    """
    keys = ["L", "J2", "layers", "attention"]
    ours = in_sweep(runs, "table1").sort_values([*keys, "seed"])
    ours = ours.groupby(keys, as_index=False).first()
    ours["paper_settings"] = at_paper_settings(ours)
    ours["settings"] = [
        "paper" if paper else f"{scale}: {_settings(row)}"
        for paper, row in zip(ours["paper_settings"], ours.itertuples(), strict=True)
    ]
    if step_times is not None:
        alone = step_times.rename(columns={"median_step_time_s": "step_time_s"})
        ours = ours.merge(alone[[*RUN_COLUMNS, "step_time_s"]], on=list(RUN_COLUMNS), how="left")
    sym_columns = [
        "sym_energy", "sym_energy_error", "sym_rel_error", "sym_v_score", "sym_v_score_error",
        "sym_unreliable",
    ]  # fmt: skip
    if symmetrized is not None:
        sym = symmetrized.rename(columns={c[4:]: c for c in sym_columns})
        sym = sym.reindex(columns=[*RUN_COLUMNS, *sym_columns])  # older: no V-score error
        ours = ours.merge(sym[[*RUN_COLUMNS, *sym_columns]], on=list(RUN_COLUMNS), how="left")
    else:
        ours = ours.assign(**{c: math.nan for c in sym_columns})
    for column in ("v_score", "v_score_error", "eval_unreliable"):
        if column not in ours:
            ours[column] = math.nan
    paper = paper_table1().rename(
        columns={
            "energy_per_site": "paper_energy",
            "energy_error": "paper_energy_error",
            "parameters": "paper_parameters",
            "total_time_hours_a100_5000_steps": "paper_time_h",
        }
    )[[*keys, "paper_energy", "paper_energy_error", "paper_parameters", "paper_time_h"]]
    # outer: the paper's rows stay even where this scale has no run like them
    table = ours.merge(paper, on=keys, how="outer")
    # the paper's rows at lattices without a run take the reference from the literature
    references = [literature_reference(int(r.L), float(r.J2)) for r in table.itertuples()]
    for column, field in (("reference_energy", "energy"), ("reference_uncertainty", "uncertainty")):
        known = [math.nan if r is None else getattr(r, field) for r in references]
        table[column] = table[column].fillna(pd.Series(known, index=table.index))
    table["paper_settings"] = table["paper_settings"].astype("boolean").fillna(False)
    table["paper_rel_error"] = (
        (table["paper_energy"] - table["reference_energy"]) / table["reference_energy"]
    ).abs()
    for column in ("layers", "steps", "samples", "n_parameters", "paper_parameters"):
        table[column] = table[column].astype("Int64")
    table["time_h"] = table["total_time_s"] / 3600
    if "step_time_s" not in table:
        table["step_time_s"] = math.nan
    table["difference_sigma"] = [
        (row.energy - row.paper_energy) / _combined_sigma(row.energy_error, row.paper_energy_error)
        if row.paper_settings and pd.notna(row.paper_energy)
        else math.nan
        for row in table.itertuples()
    ]
    order = {"t5": 0, "decoupled": 1, "factored": 2}
    table = table.sort_values(
        ["L", "layers", "attention"],
        key=lambda s: s.map(order) if s.name == "attention" else s,
    )
    return table[
        ["L", "J2", "layers", "attention", "settings", "steps", "samples",
         "energy", "energy_error", "rel_error", "reference_energy", "reference_uncertainty",
         "paper_energy", "paper_energy_error", "paper_rel_error", "difference_sigma",
         "n_parameters", "paper_parameters", "time_h", "step_time_s", "paper_time_h", "device",
         "v_score", "v_score_error", "eval_unreliable", "sym_energy", "sym_energy_error",
         "sym_rel_error", "sym_v_score", "sym_v_score_error", "sym_unreliable"]
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


UNRELIABLE_MARK = "†"
"""Marks a V-score, and a difference in error bars, whose variance is not known to
:data:`vitnqs.estimates.VARIANCE_TARGET` (or predates its uncertainty)."""


def _flagged(why: object) -> bool:
    """Whether an ``eval_unreliable`` / ``unreliable`` cell says why a value is unreliable."""
    return isinstance(why, str) and why != ""


def _v_text(value: float, error: float, why: object) -> str:
    """``0.16 ± 0.03``, marked when unreliable."""
    if pd.isna(value):
        return ""
    text = f"{value:.2g}" if pd.isna(error) else f"{value:.2g} ± {error:.1g}"
    return text + (UNRELIABLE_MARK if _flagged(why) else "")


def table1_text(table: pd.DataFrame, fmt: str) -> str:
    """Table 1 as Markdown (``fmt="md"``) or LaTeX (``fmt="tex"``).

    Rows not at the paper's settings show their scale in the difference column, and a
    note above the table says which settings they used.
    """
    names = {"t5": "T5", "decoupled": "Decoupled", "factored": "Factored"}

    def optional(column: str, fmt: str) -> list[str]:
        return ["" if pd.isna(v) else fmt.format(v) for v in table[column]]

    ours = table["settings"].notna()
    off_scale = ours & (table["settings"] != "paper")
    difference = optional("difference_sigma", "{:+.1f}")
    for i in np.flatnonzero(table["eval_unreliable"].map(_flagged)):
        if difference[i]:
            difference[i] += UNRELIABLE_MARK  # the error bar rests on the variance
    for i in np.flatnonzero(off_scale):
        difference[i] = f"({table['settings'].iloc[i].split(':')[0]} scale)"
    shown = pd.DataFrame(
        {
            "L": table["L"],
            "layers": table["layers"],
            "attention": table["attention"].map(names),
            "energy": list(map(_energy, table.energy, table.energy_error)),
            "rel. error": optional("rel_error", "{:.2e}"),
            "paper energy": list(map(_energy, table.paper_energy, table.paper_energy_error)),
            "paper rel. error": optional("paper_rel_error", "{:.2e}"),
            "reference": list(map(_energy, table.reference_energy, table.reference_uncertainty)),
            "diff. (sigma)": difference,
            "parameters": optional("n_parameters", "{:,.0f}"),
            "paper parameters": optional("paper_parameters", "{:,.0f}"),
            "time (h)": optional("time_h", "{:.3g}"),
            "s/step (alone)": optional("step_time_s", "{:.3g}"),
            "paper time (h, A100)": optional("paper_time_h", "{:g}"),
            "V-score": list(
                map(_v_text, table.v_score, table.v_score_error, table.eval_unreliable)
            ),
            "sym. energy": list(map(_energy, table.sym_energy, table.sym_energy_error)),
            "sym. rel. error": optional("sym_rel_error", "{:.2e}"),
            "sym. V-score": list(
                map(_v_text, table.sym_v_score, table.sym_v_score_error, table.sym_unreliable)
            ),
        }
    )
    notes = sorted(set(table.loc[off_scale, "settings"]))
    note = (
        "Not the paper's settings (" + "; ".join(notes) + "): the paper's rows (4 layers, "
        "d 60, h 10, M 6000, 5000 steps, one A100) stand beside them, and no difference "
        "in error bars is given."
        if notes
        else ""
    )
    unreliable = table["eval_unreliable"].map(_flagged) | table["sym_unreliable"].map(_flagged)
    if unreliable.any():
        note += (" " if note else "") + (
            f"{UNRELIABLE_MARK}: the variance, and the V-score and error bar built on it, is "
            f"not known to {VARIANCE_TARGET:.0%} (runs.csv: eval_unreliable; symmetrized.csv: "
            "unreliable)."
        )
    if fmt == "md":
        return (note + "\n\n" if note else "") + shown.to_markdown(index=False) + "\n"
    latex = shown.to_latex(index=False, escape=True)
    return (f"% {note}\n" if note else "") + latex
