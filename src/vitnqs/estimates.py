"""Monte Carlo estimates of a state's energy: per-site values and the V-score.

The one place where NetKet's statistics of the local energy become the per-site numbers
that runs, pilots, evaluations and tables report (:func:`per_site`). Imports neither
JAX nor NetKet: it reads a ``netket.stats.Stats`` by its attributes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class EnergyPerSite(NamedTuple):
    """Energy statistics per site, in S.S units."""

    mean: float
    """``<E_loc> / N``."""
    error: float
    """Error of the mean over ``N``."""
    variance: float
    """``Var(E_loc) / N**2``."""


def per_site(stats: Any, n_sites: int) -> EnergyPerSite:
    """Mean, error of the mean and variance of the local energy, all per site.

    Args:
        stats: NetKet's statistics of the local energy (``mean``, ``error_of_mean``,
            ``variance``), total, not per site.
        n_sites: number of lattice sites ``N``.

    """
    return EnergyPerSite(
        float(np.real(stats.mean)) / n_sites,
        float(stats.error_of_mean) / n_sites,
        float(stats.variance) / n_sites**2,
    )


def v_score(
    energy_per_site: float,
    variance_per_site_sq: float,
    n_sites: int,
    e_inf_per_site: float = 0.0,
) -> float:
    """V-score ``N Var(H) / (<H> - E_inf)**2`` from per-site quantities.

    With total quantities ``E = N e``, ``Var(H) = N**2 v`` and ``E_inf = N e_inf``
    this is ``N v / (e - e_inf)**2`` (Wu et al., Science 386, 296 (2024)).

    Args:
        energy_per_site: ``e = <H> / N``.
        variance_per_site_sq: ``v = Var(H) / N**2`` (the ``energy_variance`` of a
            run's ``summary.json``).
        n_sites: ``N``, the number of spins (the V-score's degrees of freedom).
        e_inf_per_site: infinite-temperature energy per site, see
            :func:`vitnqs.physics.infinite_temperature_energy` (0: the V-score
            benchmark's convention for the Heisenberg models, the trace over the full
            spin space).

    """
    return n_sites * variance_per_site_sq / (energy_per_site - e_inf_per_site) ** 2
