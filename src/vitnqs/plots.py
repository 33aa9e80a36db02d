"""Figures of the paper, drawn from the pipeline's tables only.

Every figure uses :func:`use_style`, the paper's encoding of the attentions
(:data:`ATTENTION_STYLE`) and :func:`save`, which writes the PDF and its PNG twin and,
at any scale other than ``paper``, says which scale made it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitnqs.findings import ACCURACY_BOUNDS, seed_mean  # noqa: E402

ATTENTION_STYLE = {
    "factored": {"label": "Factored", "color": "tab:orange", "marker": "o"},
    "decoupled": {"label": "Decoupled", "color": "tab:green", "marker": "s"},
    "t5": {"label": "T5", "color": "tab:blue", "marker": "D"},
}
"""The paper's encoding: Factored orange circles, Decoupled green squares, T5 blue diamonds."""


def use_style() -> None:
    """Apply the project's matplotlib style (``vitnqs/style/paper.mplstyle``)."""
    with resources.as_file(resources.files("vitnqs").joinpath("style/paper.mplstyle")) as path:
        plt.style.use(path)


def save(fig: plt.Figure, pdf: str | Path, scale: str) -> None:
    """Write ``fig`` as ``pdf`` and as the PNG beside it; mark non-paper scales."""
    if scale != "paper":
        note = f"scale: {scale}, not the paper's settings"
        fig.text(0.995, 0.005, note, ha="right", va="bottom", fontsize=7, color="0.4")
    pdf = Path(pdf)
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf)
    fig.savefig(pdf.with_suffix(".png"))
    plt.close(fig)


def _by_attention(table):
    order = [a for a in ATTENTION_STYLE if a in set(table["attention"])]
    return [(a, table[table["attention"] == a]) for a in order]


def figure2(history, runs, pdf: str | Path, scale: str) -> None:
    """Relative error vs step at the fig2 lattice, one panel per (J2, layers).

    Every seed is drawn as a thin line; the marker at the last step is the final relative
    error (fresh samples, :mod:`vitnqs.optimize`), mean over seeds with half their range
    as error bar, as in the findings table. The dotted line is the findings' bound.

    Args:
        history: ``history.csv`` rows of the fig2 runs.
        runs: ``runs.csv`` rows of the fig2 runs.
        pdf: output path (the PNG goes beside it).
        scale: the preset that produced the runs.

    """
    use_style()
    panels = sorted({(r.J2, r.layers) for r in runs.itertuples()})
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, (J2, layers), letter in zip(axes.flat, panels, "abcdefgh", strict=False):
        panel = history[(history.J2 == J2) & (history.layers == layers)]
        finals = runs[(runs.J2 == J2) & (runs.layers == layers)]
        for attention, rows in _by_attention(panel):
            style = ATTENTION_STYLE[attention]
            for k, (_, seed_rows) in enumerate(rows.groupby("seed")):
                ax.plot(seed_rows["step"], seed_rows["rel_error"], color=style["color"],
                        lw=0.7, alpha=0.8, label=style["label"] if k == 0 else None)  # fmt: skip
            mean, spread = seed_mean(finals.loc[finals.attention == attention, "rel_error"])
            ax.errorbar(rows["step"].max(), mean, yerr=spread, color=style["color"],
                        marker=style["marker"], ms=4, mec="k", mew=0.5, capsize=2)  # fmt: skip
        if float(J2) in ACCURACY_BOUNDS:
            ax.axhline(ACCURACY_BOUNDS[float(J2)], color="0.5", ls=":", lw=0.8)
        ax.set_yscale("log")
        L = ", ".join(str(v) for v in sorted(set(panel["L"])))
        seeds = panel["seed"].nunique()
        ax.set_title(f"({letter}) $J_2={J2:g}$, $n_l={layers}$, $L={L}$, {seeds} seed(s)")
        ax.set_xlabel("optimization step")
        ax.set_ylabel(r"$|E_0 - E_{\rm ViT}| / |E_0|$")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend()
    fig.tight_layout()
    save(fig, pdf, scale)


def figure3(runs, step_times, table1, pdf: str | Path, scale: str, symmetrized=None) -> None:
    """Final relative error (left) and time per step (right) vs L, per attention.

    Left: seed mean of the runs (filled markers) and the paper's Table 1 runs (open
    markers, relative to the same references); beyond the paper, where
    ``symmetrized.csv`` is given, the same networks projected on the lattice symmetries
    (small markers, dotted). Right: median time per step timed one run at a time
    (``step_times.csv``), not by the runs that shared the machine.
    """
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.8, 2.8))
    paper = table1.dropna(subset=["paper_rel_error"])
    for attention, rows in _by_attention(runs.sort_values("L")):
        style = ATTENTION_STYLE[attention]
        kwargs = {"color": style["color"], "marker": style["marker"], "label": style["label"]}
        mean = rows.groupby("L", as_index=False)["rel_error"].mean()
        left.plot(mean["L"], mean["rel_error"], linestyle="--", **kwargs)
        timed = step_times[step_times.attention == attention].sort_values("L")
        right.plot(timed["L"], timed["median_step_time_s"], linestyle="--", **kwargs)
        theirs = paper[paper.attention == attention]
        left.plot(theirs["L"], theirs["paper_rel_error"], linestyle="none", marker=style["marker"],
                  mfc="none", color=style["color"], ms=6)  # fmt: skip
        if symmetrized is not None:
            sym = symmetrized[symmetrized.attention == attention].dropna(subset=["rel_error"])
            sym = sym.groupby("L", as_index=False)["rel_error"].mean()
            left.plot(sym["L"], sym["rel_error"], linestyle=":", marker=style["marker"],
                      color=style["color"], ms=3, alpha=0.8)  # fmt: skip
    if len(paper):
        left.plot([], [], linestyle="none", marker="o", mfc="none", color="0.3",
                  label=r"open: paper, Table 1 ($n_l=4$, $d=60$)")  # fmt: skip
    if symmetrized is not None and symmetrized["rel_error"].notna().any():
        left.plot([], [], linestyle=":", marker="o", ms=3, color="0.3",
                  label="small, dotted: symmetrized (beyond the paper)")  # fmt: skip
    J2 = ", ".join(f"{v:g}" for v in sorted(set(runs["J2"])))
    layers = ", ".join(str(v) for v in sorted(set(runs["layers"])))
    left.set_yscale("log")
    left.set_ylabel(r"$|E_0 - E_{\rm ViT}| / |E_0|$")
    right.set_ylabel("time per step (s)")
    for ax in (left, right):
        ax.set_xlabel("$L$")
    left.set_xticks(sorted(set(runs["L"]) | set(paper["L"])))
    right.set_xticks(sorted(set(step_times["L"])))
    left.set_title(f"$J_2={J2}$, $n_l={layers}$")
    device = ", ".join(sorted(set(step_times["device"].astype(str))))
    right.set_title(f"timed one run at a time on {device}", fontsize=7)
    # below the panels: inside, it would cover runs or the paper's markers
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower left", ncol=3, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    save(fig, pdf, scale)


def figure4(maps, dependence, pdf: str | Path, scale: str) -> None:
    """Attention maps: (a) T5 for three inputs, (b) Decoupled softmax and positional terms.

    Top row: random initialization; bottom row: after optimization. Head-averaged.
    """
    use_style()
    if "seed" in maps:  # the first seed's maps
        maps = maps[maps.seed == maps.seed.min()]
        dependence = dependence[dependence.seed == dependence.seed.min()]
    t5 = maps[maps.attention == "t5"]
    decoupled = maps[maps.attention == "decoupled"]
    t5_terms = sorted(set(t5["term"]))
    dec_terms = ["softmax_mean", "positional"]
    columns = [("t5", t) for t in t5_terms] + [("decoupled", t) for t in dec_terms]
    fig, axes = plt.subplots(
        2, len(columns), figsize=(1.55 * len(columns) + 0.6, 3.4), squeeze=False
    )
    titles = {"softmax_mean": "softmax term\n(sample mean)", "positional": "positional\nterm $p$"}
    for col, (attention, term) in enumerate(columns):
        source = t5 if attention == "t5" else decoupled
        for row, stage in enumerate(("initial", "optimized")):
            ax = axes[row, col]
            cell = source[(source.term == term) & (source.stage == stage) & (source.layer == 0)]
            n = int(cell["i"].max()) + 1
            matrix = cell.sort_values(["i", "j"])["value"].to_numpy().reshape(n, n)
            image = ax.imshow(matrix, cmap="viridis")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                label = titles.get(term, f"T5, input {term[-1]}")
                ax.set_title(label, fontsize=7)
            if col == 0:
                ax.set_ylabel(stage, fontsize=8)
    fig.text(0.02, 0.98, "(a) T5", fontsize=9, va="top")
    fig.text(0.02 + len(t5_terms) / len(columns), 0.98, "(b) Decoupled", fontsize=9, va="top")
    notes = []
    for row in dependence[dependence.layer == 0].itertuples():
        notes.append(f"{row.attention} {row.term} {row.stage}: {row.input_dependence:.2g}")
    fig.text(0.01, -0.02, "input dependence (spread/mean): " + "; ".join(notes), fontsize=5.5,
             va="top", wrap=True)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    save(fig, pdf, scale)
