"""Figure 5: the Shastry-Sutherland dimer state on the 6 x 6 lattice and the ViT's patches.

Everything drawn comes from the construction itself: the dimers are
:func:`vitnqs.geometry.dimer_bonds` (the pairs the network's two heads couple),
the patches follow :func:`vitnqs.geometry.extract_patches`. Site ``(x, y)`` is drawn in
row ``x`` (downwards) and column ``y`` (rightwards), so ``S(i)`` is the patch diagonally
down-right of patch ``i``, as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from vitnqs import plots
from vitnqs.geometry import DIMER_PATCH, dimer_bonds, nearest_neighbour_bonds

L_FIG5 = 6
"""Lattice side of Figure 5."""

_IN_PATCH = {"color": "tab:blue", "label": r"singlet inside patch $i$ ($J$)"}
_ACROSS = {"color": "tab:red", "label": r"singlet between $i$ and $S(i)$ ($J$)"}
_SINGLET_WIDTH = 9.0
_SINGLET_TINT = 0.45
"""Weight of the colour against white: opaque tints, so overlapping caps do not darken."""


def _tint(color: str) -> tuple[float, float, float]:
    rgb = np.asarray(matplotlib.colors.to_rgb(color))
    return tuple(_SINGLET_TINT * rgb + (1 - _SINGLET_TINT))


def _position(site: np.ndarray, L: int) -> np.ndarray:
    """Plot coordinates ``(column, -row)`` of sites."""
    x, y = np.divmod(np.asarray(site), L)
    return np.stack([y, -x], axis=-1).astype(float)


def _segments(a: int, b: int, L: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bond a-b as one segment, or as two half-bonds leaving the edges if it wraps."""
    pa, pb = _position(a, L), _position(b, L)
    step = (pb - pa + 1) % L - 1  # the shortest periodic displacement, entries in {-1, 0, 1}
    if np.allclose(pa + step, pb):
        return [(pa, pb)]
    return [(pa, pa + step / 2), (pb, pb - step / 2)]


def _draw_bonds(ax, bonds, L: int, **style) -> None:
    for a, b in bonds:
        for start, end in _segments(int(a), int(b), L):
            ax.plot(*np.stack([start, end]).T, solid_capstyle="round", **style)


def write_fig5(pdf_path: str | Path, scale: str) -> None:
    """Draw Figure 5 and write it as ``pdf_path`` and the PNG beside it.

    Args:
        pdf_path: output PDF.
        scale: the pipeline preset (figure 5 does not depend on it; non-paper scales
            are marked by :func:`vitnqs.plots.save`).

    """
    plots.use_style()
    L, b = L_FIG5, DIMER_PATCH
    grid = L // b
    bonds = dimer_bonds(L, b)
    in_patch, across = bonds[: grid * grid], bonds[grid * grid :]

    fig, ax = plt.subplots(figsize=(3.4, 3.9))
    _draw_bonds(ax, nearest_neighbour_bonds(L), L, color="0.6", lw=0.7, zorder=1)
    _draw_bonds(ax, in_patch, L, color=_tint(_IN_PATCH["color"]), lw=_SINGLET_WIDTH, zorder=2)
    _draw_bonds(ax, across, L, color=_tint(_ACROSS["color"]), lw=_SINGLET_WIDTH, zorder=2)

    margin = 0.32
    for patch in range(grid * grid):
        X, Y = divmod(patch, grid)
        corner = _position(X * b * L + Y * b, L)  # upper-left site of the patch
        ax.add_patch(
            FancyBboxPatch(
                (corner[0] - margin, corner[1] - (b - 1) - margin),
                (b - 1) + 2 * margin,
                (b - 1) + 2 * margin,
                boxstyle="round,pad=0,rounding_size=0.12",
                fill=False,
                ls=(0, (3, 2)),
                lw=0.8,
                ec="0.25",
                zorder=3,
            )
        )
        ax.text(
            corner[0] - margin + 0.06,
            corner[1] - (b - 1) - margin + 0.06,
            str(patch + 1),  # the paper numbers patches from 1
            ha="left",
            va="bottom",
            fontsize=6,
            color="0.25",
            zorder=5,
        )

    sites = _position(np.arange(L * L), L)
    ax.scatter(*sites.T, s=14, color="black", zorder=4)

    ax.set_aspect("equal")
    ax.set_xlim(-0.75, L - 0.25)
    ax.set_ylim(-(L - 0.25), 0.75)
    ax.axis("off")
    handles = [
        Line2D([], [], color=_tint(_IN_PATCH["color"]), lw=6, label=_IN_PATCH["label"]),
        Line2D([], [], color=_tint(_ACROSS["color"]), lw=6, label=_ACROSS["label"]),
        Line2D([], [], color="0.6", lw=0.7, label=r"nearest neighbours ($J'$)"),
        Line2D([], [], color="0.25", lw=0.8, ls=(0, (3, 2)), label=rf"${b}\times{b}$ patch"),
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        fontsize=6.5,
        handlelength=1.8,
        columnspacing=1.0,
    )
    ax.set_title(
        rf"Shastry-Sutherland dimer state on ${L}\times{L}$" + "\n"
        "half-bonds at the edges close through the periodic boundaries",
        fontsize=7.5,
        linespacing=1.5,
    )
    plots.save(fig, pdf_path, scale)
