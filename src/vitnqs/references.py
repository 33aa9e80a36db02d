"""Reference ground-state energies: exact diagonalization for small L, literature otherwise."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from importlib import resources

import pandas as pd

ED_SOURCE = "computed by vitnqs: NetKet Lanczos exact diagonalization, Sz=0 sector"


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference energy per site in S.S units."""

    energy: float
    """Ground-state energy per site."""
    uncertainty: float
    """Its uncertainty (0 for exact values)."""
    kind: str
    """How it was obtained (exact diagonalization, an extrapolation, ...)."""
    source: str
    """Where it comes from."""


@cache
def literature_table() -> pd.DataFrame:
    """The reference energies shipped in ``vitnqs/data/reference_energies.csv``."""
    with resources.files("vitnqs").joinpath("data/reference_energies.csv").open() as f:
        return pd.read_csv(f)


def literature_reference(L: int, J2: float) -> Reference | None:
    """The tabulated reference for ``(L, J2)``, or ``None`` if the table has none."""
    table = literature_table()
    rows = table[(table.L == L) & (table.J2.sub(J2).abs() < 1e-9)]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return Reference(float(row.energy_per_site), float(row.uncertainty), row.kind, row.source)


def reference_energy(L: int, J2: float) -> Reference | None:
    """Reference energy for the J1-J2 model: ED for ``L <= 4``, else the literature table.

    Returns ``None`` when no reference is known (the caller reports why).
    """
    from vitnqs.physics import ED_MAX_L, exact_ground_state_energy  # NetKet: only for ED

    if L <= ED_MAX_L:
        return Reference(exact_ground_state_energy(L, J2), 0.0, "exact diagonalization", ED_SOURCE)
    return literature_reference(L, J2)


def relative_error(energy: float, reference: Reference | None) -> float:
    """``|(E0 - E) / E0|``, or NaN without a reference."""
    if reference is None:
        return math.nan
    return abs((reference.energy - energy) / reference.energy)
