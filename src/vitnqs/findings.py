"""The paper's findings, checked on the pipeline's tables (``results/tables/findings.csv``).

One row per claim and case, with the numbers, the criterion and the result: ``pass``,
``fail`` (also when runs are missing: a claim never disappears) or ``info`` (numbers
printed beside a claim, with no criterion). The claims of Rende and Viteritti (2025):

* *Comparable accuracy* (Figure 2): the three attentions reach final relative errors
  within :data:`AGREEMENT_FACTOR` of each other, each below :data:`ACCURACY_BOUNDS`.
  Seed means, with half the range over seeds as the error bar.
* *Input independence emerges* (Figure 4): the input dependence of the T5 weights and of
  the Decoupled softmax term falls to at most :data:`DEPENDENCE_RATIO` of its initial
  value; the least-squares fit ``a I + c`` of the sample-averaged softmax term (the
  caption's "identity shifted by a constant") is printed as information.
* *Factored is cheaper* (Figure 3, Table 1): its median time per step is the lowest at
  every L, from timings made one run at a time (:mod:`vitnqs.timing`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vitnqs.config import ATTENTIONS, RESULTS_VERSION
from vitnqs.tables import in_sweep

ACCURACY_BOUNDS = {0.0: 1e-2, 0.5: 3e-2}
"""Largest final relative error accepted at each J2 (none at other J2)."""
AGREEMENT_FACTOR = 2.0
"""Largest accepted ratio between the attentions' final relative errors."""
DEPENDENCE_RATIO = 0.5
"""Largest accepted ratio of input dependence, optimized over initial."""

COLUMNS = ("claim", "case", "numbers", "criterion", "result")
"""Columns of ``findings.csv``."""

NAMES = {"t5": "T5", "decoupled": "Decoupled", "factored": "Factored"}
ACCURACY = "comparable accuracy (Fig. 2)"
INDEPENDENCE = "input independence emerges (Fig. 4)"
IDENTITY_FIT = "softmax term ~ a I + c (Fig. 4 caption)"
COST = "Factored is cheaper (Fig. 3, Table 1)"
SYMMETRIZED = "beyond the paper: symmetrized network"
STALE = "runs of the current code"


def _result(passed: bool) -> str:
    return "pass" if passed else "fail"


def seed_mean(values: pd.Series) -> tuple[float, float]:
    """Mean over seeds and half the range over seeds (0 for one seed); NaN if any is NaN."""
    if values.empty or values.isna().any():
        return math.nan, math.nan
    return float(values.mean()), float(values.max() - values.min()) / 2


def accuracy_rows(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Comparable accuracy: one row per (L, J2, layers) panel of the ``fig2`` sweep."""
    rows = []
    fig2 = in_sweep(runs, "fig2")
    for (L, J2, layers), panel in fig2.groupby(["L", "J2", "layers"], sort=True):
        seeds = panel["seed"].nunique()
        case = f"L={L}, J2={J2:g}, {layers} layer(s), {seeds} seed(s)"
        bound = ACCURACY_BOUNDS.get(float(J2))
        criterion = f"largest / smallest <= {AGREEMENT_FACTOR:g}" + (
            f" and each <= {bound:g}" if bound is not None else " (no bound set at this J2)"
        )
        stats = {a: seed_mean(panel.loc[panel["attention"] == a, "rel_error"]) for a in ATTENTIONS}
        missing = [NAMES[a] for a, (mean, _) in stats.items() if math.isnan(mean)]
        numbers = ", ".join(
            f"{NAMES[a]} {mean:.2e} +- {spread:.1e}"
            for a, (mean, spread) in stats.items()
            if not math.isnan(mean)
        )
        if missing:
            rows.append(
                {"claim": ACCURACY, "case": case, "criterion": criterion, "result": "fail",
                 "numbers": f"{numbers}; missing or without reference: {', '.join(missing)}"}
            )  # fmt: skip
            continue
        means = [mean for mean, _ in stats.values()]
        ratio = max(means) / min(means)
        passed = ratio <= AGREEMENT_FACTOR and (bound is None or max(means) <= bound)
        # an empty CSV cell reads as NaN
        remedies = panel["remedies"] if "remedies" in panel else pd.Series(None, panel.index)
        remedied = panel[remedies.notna() & (remedies.astype(str) != "")]
        notes = "".join(
            f"; {NAMES[r.attention]} seed {r.seed} {r.remedies}" for r in remedied.itertuples()
        )
        for column, words in (("jump", "jumped at"), ("collapse", "collapsed:")):
            if column not in panel:  # runs.csv of older code
                continue
            marked = panel[panel[column].fillna("").astype(str) != ""]
            notes += "".join(
                f"; {NAMES[r.attention]} seed {r.seed} {words} {getattr(r, column)}"
                for r in marked.itertuples()
            )
        rows.append(
            {"claim": ACCURACY, "case": case, "criterion": criterion, "result": _result(passed),
             "numbers": f"{numbers}; largest / smallest {ratio:.2f}{notes}"}
        )  # fmt: skip
    return rows


def identity_fit(matrix: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit ``matrix ~ a I + c``: ``(a, c, residual)``.

    ``c`` is the mean of the off-diagonal entries and ``a + c`` that of the diagonal ones;
    ``residual`` is the root-mean-square misfit over the standard deviation of the entries
    (0 for an exact ``a I + c``, about 1 when the fit explains nothing).
    """
    n = matrix.shape[0]
    diagonal = np.eye(n, dtype=bool)
    c = float(matrix[~diagonal].mean())
    a = float(matrix[diagonal].mean()) - c
    misfit = matrix - (a * np.eye(n) + c)
    spread = float(matrix.std())
    constant = spread <= 1e-12 * float(np.abs(matrix).max())  # the fit is undefined
    residual = math.nan if constant else float(np.sqrt((misfit**2).mean()) / spread)
    return a, c, residual


def independence_rows(dependence: pd.DataFrame, maps: pd.DataFrame) -> list[dict[str, str]]:
    """Input independence of the ``fig4`` runs, and the ``a I + c`` fit as information."""
    rows = []
    criterion = f"optimized / initial <= {DEPENDENCE_RATIO:g}"
    for attention, term, label in (("t5", "alpha", "T5 weights"),
                                   ("decoupled", "softmax", "Decoupled softmax term")):  # fmt: skip
        table = dependence[(dependence["attention"] == attention) & (dependence["term"] == term)]
        if table.empty:
            rows.append({"claim": INDEPENDENCE, "case": label, "criterion": criterion,
                         "result": "fail", "numbers": "missing: no fig4 run"})  # fmt: skip
            continue
        for (L, J2, layers, layer), cell in table.groupby(["L", "J2", "layers", "layer"]):
            stage = cell.groupby("stage")["input_dependence"].mean()  # over seeds
            initial, optimized = stage.get("initial", math.nan), stage.get("optimized", math.nan)
            ratio = optimized / initial
            rows.append(
                {"claim": INDEPENDENCE,
                 "case": f"{label}, L={L}, J2={J2:g}, {layers} layer(s), layer {layer + 1}",
                 "numbers": f"initial {initial:.3g}, optimized {optimized:.3g}, "
                            f"ratio {ratio:.2f}",
                 "criterion": criterion, "result": _result(ratio <= DEPENDENCE_RATIO)}
            )  # fmt: skip
    softmax = maps[(maps["attention"] == "decoupled") & (maps["term"] == "softmax_mean")]
    if "seed" in softmax:
        softmax = softmax[softmax["seed"] == softmax["seed"].min()]
    for (L, J2, layers, layer), cell in softmax.groupby(["L", "J2", "layers", "layer"]):
        fits = []
        for stage in ("initial", "optimized"):
            values = cell[cell["stage"] == stage].sort_values(["i", "j"])["value"].to_numpy()
            n = math.isqrt(len(values))
            a, c, residual = identity_fit(values.reshape(n, n))
            fits.append(f"{stage}: a {a:+.3f}, c {c:.3f}, residual {residual:.2f}")
        rows.append(
            {"claim": IDENTITY_FIT,
             "case": f"Decoupled, L={L}, J2={J2:g}, {layers} layer(s), layer {layer + 1}",
             "numbers": "; ".join(fits),
             "criterion": "information: least-squares fit of the sample-averaged term; "
                          "residual = rms misfit / std of its entries",
             "result": "info"}
        )  # fmt: skip
    return rows


def cost_rows(step_times: pd.DataFrame) -> list[dict[str, str]]:
    """Factored cheaper: one row per lattice size (and architecture) of the timed runs."""
    rows = []
    criterion = "Factored's median time per step is the lowest (timed one run at a time)"
    keys = ["L", "J2", "layers", "d", "heads", "samples"]
    for key, group in step_times.groupby(keys, sort=True):
        settings = dict(zip(keys, key, strict=True))
        case = "L={L}, {layers} layer(s), d={d}, M={samples}".format(**settings)
        times = {
            a: float(group.loc[group["attention"] == a, "median_step_time_s"].median())
            for a in ATTENTIONS
            if (group["attention"] == a).any()
        }
        numbers = ", ".join(f"{NAMES[a]} {t:.3g} s" for a, t in times.items())
        others = [t for a, t in times.items() if a != "factored"]
        if "factored" not in times or not others:
            rows.append({"claim": COST, "case": case, "criterion": criterion, "result": "fail",
                         "numbers": f"{numbers}; missing attentions"})  # fmt: skip
            continue
        ratio = times["factored"] / min(others)
        rows.append(
            {"claim": COST, "case": case, "criterion": criterion, "result": _result(ratio < 1),
             "numbers": f"{numbers}; Factored / fastest other {ratio:.2f}"}
        )  # fmt: skip
    return rows


def symmetrized_rows(symmetrized: pd.DataFrame) -> list[dict[str, str]]:
    """Beyond the paper: plain and symmetrized relative errors per Table 1 case (info)."""
    rows = []
    criterion = "information only: error of the plain / the symmetrized network (> 1: better)"
    for (L, J2, layers), case in symmetrized.groupby(["L", "J2", "layers"], sort=True):
        parts = []
        for attention in ATTENTIONS:
            mine = case[case["attention"] == attention]
            if mine.empty or mine["rel_error"].isna().all():
                continue
            plain, sym = mine["plain_rel_error"].mean(), mine["rel_error"].mean()
            parts.append(f"{NAMES[attention]} {plain:.2e} -> {sym:.2e} ({plain / sym:.2f}x)")
        rows.append(
            {"claim": SYMMETRIZED, "case": f"L={L}, J2={J2:g}, {layers} layer(s)",
             "numbers": "; ".join(parts) or "no reference energy: see the V-scores in Table 1",
             "criterion": criterion, "result": "info"}
        )  # fmt: skip
    return rows


def stale_rows(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Runs made by an older version of what a run computes: a failing row naming them."""
    if "results_version" not in runs:
        return []
    stale = runs[runs["results_version"] < RESULTS_VERSION]
    if stale.empty:
        return []
    names = ", ".join(
        f"{NAMES[r.attention]} L={r.L} J2={r.J2:g} {r.layers} layer(s) seed {r.seed} "
        f"(v{r.results_version})"
        for r in stale.itertuples()
    )
    return [
        {"claim": STALE, "case": f"{len(stale)} run(s)", "numbers": names, "result": "fail",
         "criterion": f"every run made by results version {RESULTS_VERSION} (docs/"
         "development.md: 'Results made by older code')"}
    ]  # fmt: skip


def findings(
    runs: pd.DataFrame,
    dependence: pd.DataFrame,
    maps: pd.DataFrame,
    step_times: pd.DataFrame,
    symmetrized: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """All claims, one row per case.

    Args:
        runs: ``runs.csv``.
        dependence: ``attention_dependence.csv``.
        maps: ``attention_maps.csv``.
        step_times: ``step_times.csv`` (timings made one run at a time).
        symmetrized: ``symmetrized.csv`` (beyond the paper), if available.

    Returns:
        The table with :data:`COLUMNS`.

    """
    rows = [
        *stale_rows(runs),
        *accuracy_rows(runs),
        *independence_rows(dependence, maps),
        *cost_rows(step_times),
        *([] if symmetrized is None else symmetrized_rows(symmetrized)),
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def findings_markdown(table: pd.DataFrame) -> str:
    """The findings as a Markdown table (printed by the pipeline; copied into the README)."""
    return table.to_markdown(index=False) + "\n"
