"""The J1-J2 Heisenberg model with NetKet: lattice, Hilbert space, sampler, exact diagonalization.

NetKet's ``Heisenberg`` operator is written with Pauli matrices (``sigma_i . sigma_j =
4 S_i . S_j``). :func:`heisenberg` is the one place that converts: it scales the
couplings by 1/4, so every operator, local energy and gradient in the project is in
``S.S`` units. This matters beyond reporting: the SR learning rate multiplies the
energy gradient, and the paper's tau0 = 0.03 is meant for ``S.S`` units (the same
authors' NetKet tutorial uses 0.0075 = 0.03 / 4 with the Pauli operator).
"""

from __future__ import annotations

import math
from functools import cache

import netket as nk
import numpy as np

from vitnqs.config import LOCAL_ENERGY_MODES
from vitnqs.local_energy import CompactHeisenberg  # registers its NetKet kernels

ED_MAX_L = 4
"""Largest lattice side for exact diagonalization (6 x 6 has 9.08e9 Sz=0 states)."""

SPIN_PRODUCT_PER_PAULI_PRODUCT = 0.25
"""``S_i . S_j = sigma_i . sigma_j / 4`` for spins 1/2."""


def square_lattice(L: int, J2: float) -> nk.graph.Lattice:
    """Periodic ``L x L`` square lattice; next-nearest-neighbour bonds only if ``J2 != 0``."""
    return nk.graph.Hypercube(length=L, n_dim=2, pbc=True, max_neighbor_order=2 if J2 else 1)


def hilbert_space(n_sites: int) -> nk.hilbert.Spin:
    """Spin-1/2 Hilbert space restricted to total ``Sz = 0``."""
    return nk.hilbert.Spin(s=0.5, N=n_sites, total_sz=0)


def heisenberg(
    graph: nk.graph.AbstractGraph, couplings: list[float]
) -> nk.operator.DiscreteJaxOperator:
    """``sum_c J_c sum_{<ij> of color c} S_i . S_j`` in S.S units on the Sz = 0 space.

    Args:
        graph: lattice whose edge colors select the couplings.
        couplings: one coupling per edge color.

    """
    return nk.operator.Heisenberg(
        hilbert=hilbert_space(graph.n_nodes),
        graph=graph,
        J=[SPIN_PRODUCT_PER_PAULI_PRODUCT * J for J in couplings],
        sign_rule=[False] * len(couplings),  # no Marshall sign: the network learns the signs
    ).to_jax_operator()


def j1j2_hamiltonian(
    L: int, J2: float, local_energy: str = "compact"
) -> nk.operator.DiscreteJaxOperator:
    """J1-J2 Heisenberg Hamiltonian on the periodic ``L x L`` lattice (J1 = 1, S.S units).

    Args:
        L: lattice side.
        J2: next-nearest-neighbour coupling (>= 0).
        local_energy: one of :data:`LOCAL_ENERGY_MODES`: ``"compact"`` evaluates the
            network only on connected configurations with a non-zero element
            (:class:`vitnqs.local_energy.CompactHeisenberg`), ``"padded"`` is NetKet's
            operator with its padded connections. Both give the same matrix.

    """
    if J2 < 0:
        raise ValueError(f"--J2: must be >= 0 (got {J2})")
    if local_energy not in LOCAL_ENERGY_MODES:
        raise ValueError(
            f"local_energy: must be one of {', '.join(LOCAL_ENERGY_MODES)} (got {local_energy!r})"
        )
    graph, couplings = square_lattice(L, J2), [1.0, J2] if J2 else [1.0]
    if local_energy == "padded":
        return heisenberg(graph, couplings)
    return CompactHeisenberg.from_graph(
        hilbert_space(graph.n_nodes), graph, [SPIN_PRODUCT_PER_PAULI_PRODUCT * J for J in couplings]
    )


def energy_bounds(L: int, J2: float) -> tuple[float, float]:
    """Rigorous bounds on the energy per site: every bond ``-3/4 <= S_i.S_j <= 1/4``.

    A Monte Carlo mean outside them means a broken estimate (an exploding state), not a
    good or a bad state: the divergence guard of :mod:`vitnqs.optimize` stops there.
    """
    graph = square_lattice(L, J2)
    couplings = [1.0, J2]
    bonds = sum(c * len(graph.edges(filter_color=k)) for k, c in enumerate(couplings) if c)
    return -0.75 * bonds / graph.n_nodes, 0.25 * bonds / graph.n_nodes


def exchange_sampler(L: int, n_chains: int) -> nk.sampler.MetropolisSampler:
    """Metropolis sampler exchanging two opposite spins up to next-nearest neighbours.

    One sweep is ``L*L`` proposed exchanges; exchanges keep ``Sz = 0``.
    """
    graph = square_lattice(L, 1.0)  # moves reach next-nearest neighbours whatever J2 is
    return nk.sampler.MetropolisExchange(
        hilbert_space(graph.n_nodes),
        graph=graph,
        d_max=2,
        n_chains=n_chains,
        sweep_size=graph.n_nodes,
    )


def ground_state_energy(operator: nk.operator.AbstractOperator, n_sites: int) -> float:
    """Lowest eigenvalue of an operator, per site (Lanczos)."""
    # a fixed start vector makes the result reproducible to the last bit
    v0 = np.random.default_rng(0).normal(size=operator.hilbert.n_states)
    energy = nk.exact.lanczos_ed(operator, k=1, compute_eigenvectors=False, scipy_args={"v0": v0})
    return float(np.min(energy)) / n_sites


@cache
def exact_ground_state_energy(L: int, J2: float) -> float:
    """Exact ground-state energy per site (S.S units) of the J1-J2 model, ``L <= 4``.

    Raises:
        ValueError: for ``L > 4``, whose Sz = 0 space does not fit in memory.

    """
    if L > ED_MAX_L:
        raise ValueError(
            f"exact diagonalization is limited to L <= {ED_MAX_L}: the Sz=0 sector of "
            f"{L}x{L} has {math.comb(L * L, L * L // 2):.3g} states, "
            "far beyond the memory of one machine; use a literature reference energy"
        )
    return ground_state_energy(j1j2_hamiltonian(L, J2, local_energy="padded"), L * L)


E_INF_CONVENTIONS = ("full", "sz0")
"""``full``: ``Tr(H)/dim`` over the whole spin space (0, the V-score table's convention);
``sz0``: the same trace over the ``Sz = 0`` sector the states live in."""


def n_bonds(L: int, J2: float) -> tuple[int, int]:
    """Number of nearest- and next-nearest-neighbour bonds of the periodic lattice."""
    graph = square_lattice(L, J2 if J2 else 1.0)
    return len(graph.edges(filter_color=0)), len(graph.edges(filter_color=1))


def infinite_temperature_energy(L: int, J2: float, convention: str = "full") -> float:
    """Infinite-temperature energy per site ``Tr(H) / (N dim)`` of the J1-J2 model (S.S units).

    ``S_i . S_j`` is traceless on the full spin space, so ``full`` gives 0: the
    convention of the V-score benchmark table (its J1-J2 entries list ``Einf = 0``).
    On the ``Sz = 0`` sector the exchange part ``S+S- + S-S+`` has no diagonal and
    ``<S_i^z S_j^z> = -1 / (4 (N - 1))`` (from ``sum_i S_i^z = 0``), so ``sz0`` gives
    ``-(n_J1 + J2 n_J2) / (4 N (N - 1))`` with ``n_J1, n_J2`` the bond counts
    (``= -(1 + J2) / (2 (N - 1))`` for ``L >= 3``, where both counts are ``2N``).

    Args:
        L: linear lattice size.
        J2: next-nearest-neighbour coupling.
        convention: one of :data:`E_INF_CONVENTIONS`.

    """
    if convention == "full":
        return 0.0
    if convention != "sz0":
        raise ValueError(f"unknown convention {convention!r}; allowed: {E_INF_CONVENTIONS}")
    N = L * L
    nn1, nn2 = n_bonds(L, J2)
    return -(nn1 + J2 * nn2) / (4 * N * (N - 1))
