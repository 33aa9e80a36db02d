"""Exact sums over the ``Sz = 0`` space of small lattices (``L <= 4``).

The ground state's symmetry sector (:func:`ground_state_sector`) and the exact energy and
variance of any state vector (:func:`exact_energy_moments`), the truth the Monte Carlo
estimates are checked against.
"""

from __future__ import annotations

from typing import Any

import netket as nk
import numpy as np

from vitnqs.physics import hilbert_space, j1j2_hamiltonian
from vitnqs.symmetry import POINT_GROUP, lattice_permutation


def _permuted_indices(hilbert: nk.hilbert.Spin, perm: np.ndarray | None) -> np.ndarray:
    """Index of ``g s`` for every basis state ``s`` (spin inversion for ``perm=None``)."""
    states = hilbert.all_states()
    images = -states if perm is None else states[:, perm]
    return np.asarray(hilbert.states_to_numbers(images))


def ground_state_vector(L: int, J2: float, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``k`` energies (total, not per site) and the ground-state vector (ED, ``L <= 4``)."""
    hamiltonian = j1j2_hamiltonian(L, J2)
    v0 = np.random.default_rng(0).normal(size=hamiltonian.hilbert.n_states)
    energies, vectors = nk.exact.lanczos_ed(
        hamiltonian, k=k, compute_eigenvectors=True, scipy_args={"v0": v0, "tol": 1e-12}
    )
    order = np.argsort(energies)
    return np.asarray(energies)[order], np.asarray(vectors)[:, order[0]]


def ground_state_sector(L: int, J2: float) -> dict[str, Any]:
    """Expectations of the symmetry operators on the exact ground state (``L <= 4``).

    A value of modulus 1 means the ground state is an eigenstate with that eigenvalue.

    Returns:
        Dict with ``translation_x``, ``translation_y`` (one site), ``rotation_90``,
        ``reflection_axis`` (``y -> -y``), ``reflection_diagonal``, ``spin_inversion``
        (real parts), ``gap`` (first excitation energy in the Sz = 0 sector, total),
        ``trivial`` (all of them +1 to 1e-8) and ``max_imag`` (largest imaginary part).

    """
    hilbert = hilbert_space(L * L)
    energies, psi = ground_state_vector(L, J2)
    psi = psi / np.linalg.norm(psi)
    operators = {
        "translation_x": lattice_permutation(L, POINT_GROUP[0], (1, 0)),
        "translation_y": lattice_permutation(L, POINT_GROUP[0], (0, 1)),
        "rotation_90": lattice_permutation(L, POINT_GROUP[1]),
        "reflection_axis": lattice_permutation(L, POINT_GROUP[4]),
        "reflection_diagonal": lattice_permutation(L, POINT_GROUP[6]),
        "spin_inversion": None,
    }
    result: dict[str, Any] = {}
    max_imag = 0.0
    for name, perm in operators.items():
        value = np.vdot(psi, psi[_permuted_indices(hilbert, perm)])
        result[name] = float(np.real(value))
        max_imag = max(max_imag, abs(float(np.imag(value))))
    result["trivial"] = all(abs(result[name] - 1) < 1e-8 for name in operators)
    result["max_imag"] = max_imag
    result["gap"] = float(energies[1] - energies[0])
    result["energy_per_site"] = float(energies[0]) / (L * L)
    return result


def exact_energy_moments(
    operator: nk.operator.AbstractOperator, psi: np.ndarray, n_sites: int
) -> tuple[float, float]:
    """Energy per site and variance per site squared of a (unnormalized) state vector.

    Args:
        operator: Hamiltonian on the Hilbert space ``psi`` is written in.
        psi: amplitudes over ``operator.hilbert.all_states()``.
        n_sites: number of sites.

    """
    psi = np.asarray(psi) / np.linalg.norm(psi)
    h_psi = operator.to_sparse() @ psi
    energy = float(np.real(np.vdot(psi, h_psi)))
    variance = float(np.real(np.vdot(h_psi, h_psi))) - energy**2
    return energy / n_sites, max(variance, 0.0) / n_sites**2
