"""Symmetrized ViT wave functions: the projection on the lattice's symmetries.

The ViT is exactly invariant under translations by whole patches (its relative positions
live on the periodic patch grid). The space group of the ``L x L`` lattice (``L**2``
translations times the 8 operations of C4v) divided by that normal subgroup of
``(L // b)**2`` patch translations leaves ``8 b**2`` cosets. With trivial characters the
projection onto the symmetric sector therefore needs one representative per coset: the
``b**2`` translations inside a patch times the point group, here also times spin
inversion ``s -> -s``: ``2 * 8 b**2`` network evaluations (64 for ``b = 2``) instead of
``2 * 8 L**2`` (576 at ``L = 6``, 1600 at ``L = 10``).

Conventions:

* a permutation ``perm`` acts on configurations as ``(g s)[k] = s[perm[k]]``;
* the symmetrized amplitude is the *mean* ``psi_sym(s) = (1/n) sum_g chi_g psi(g s)``,
  so wrapping a function that is already invariant returns it unchanged.

The ground state's sector is checked by exact diagonalization in :mod:`vitnqs.exact`;
the symmetrized network of a finished run is evaluated in :mod:`vitnqs.evaluation`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from netket.jax import logsumexp_cplx
from netket.utils import HashableArray

from vitnqs.geometry import site_index
from vitnqs.physics import square_lattice

POINT_GROUP = (
    ((1, 0), (0, 1)),  # identity
    ((0, -1), (1, 0)),  # rotation by 90 degrees
    ((-1, 0), (0, -1)),  # rotation by 180 degrees
    ((0, 1), (-1, 0)),  # rotation by 270 degrees
    ((1, 0), (0, -1)),  # reflection y -> -y
    ((-1, 0), (0, 1)),  # reflection x -> -x
    ((0, 1), (1, 0)),  # reflection on the diagonal x <-> y
    ((0, -1), (-1, 0)),  # reflection on the anti-diagonal
)
"""The 8 operations of C4v as integer matrices acting on ``(x, y)`` about site 0."""


def lattice_permutation(L: int, matrix, shift=(0, 0)) -> np.ndarray:
    """Permutation ``perm`` with ``(g s)[r] = s[M r + t]`` on the periodic ``L x L`` lattice.

    Args:
        L: linear lattice size.
        matrix: 2x2 integer matrix ``M`` (an element of :data:`POINT_GROUP`).
        shift: translation ``t = (tx, ty)`` in lattice units.

    """
    x, y = np.divmod(np.arange(L * L), L)
    (a, b), (c, d) = matrix
    return site_index(a * x + b * y + shift[0], c * x + d * y + shift[1], L)


def patch_coset_permutations(L: int, b: int) -> np.ndarray:
    """One representative per coset of the patch translations in the space group.

    Returns:
        Integer array of shape ``(8 * b**2, L*L)``: the translations by ``(tx, ty)``,
        ``0 <= tx, ty < b``, composed with the 8 operations of C4v; the first row is the
        identity.

    """
    return np.stack(
        [
            lattice_permutation(L, matrix, (tx, ty))
            for tx in range(b)
            for ty in range(b)
            for matrix in POINT_GROUP
        ]
    )


def space_group_permutations(L: int) -> np.ndarray:
    """All ``8 L**2`` elements of NetKet's space group of the ``L x L`` lattice."""
    return np.asarray(square_lattice(L, 0.0).space_group().to_array())


class SymmetrizedWF(nn.Module):
    """``log psi_sym(s) = log((1/n) sum_g chi_g psi(g s))`` over permutations and spin flips.

    ``n`` is the number of permutations times 2 with spin inversion (1 without). The sum
    is a complex log-sum-exp. Parameters of the wrapped network live under ``module``.
    """

    module: nn.Module
    """The network to symmetrize; maps ``(batch, N)`` to complex ``log psi`` ``(batch,)``."""
    permutations: HashableArray
    """Integer array ``(n_perm, N)``; row ``g`` maps ``s`` to ``s[..., perm_g]``."""
    characters: HashableArray | None = None
    """Characters ``chi_g`` of the permutations (``(n_perm,)``); ``None`` for all 1."""
    spin_parity: int | None = 1
    """Character of spin inversion (``+1`` or ``-1``); ``None`` leaves it out."""

    @nn.compact
    def __call__(self, sigma: jax.Array) -> jax.Array:
        """Evaluate ``log psi_sym`` on configurations of shape ``(..., N)``."""
        perms = np.asarray(self.permutations)
        n_perm, n_sites = perms.shape
        chi = np.ones(n_perm) if self.characters is None else np.asarray(self.characters)
        batch_shape = sigma.shape[:-1]
        x = sigma.reshape(-1, n_sites)
        images = x[:, perms].swapaxes(0, 1)  # (n_perm, batch, N)
        if self.spin_parity is not None:
            images = jnp.concatenate([images, -images])
            chi = np.concatenate([chi, self.spin_parity * chi])
        n_ops = images.shape[0]
        # one call on the stacked images: a single big batch for the network
        log_psi = self.module(images.reshape(-1, n_sites)).reshape(n_ops, -1)
        weights = (chi / n_ops).astype(np.complex128 if np.iscomplexobj(chi) else np.float64)
        log_sym = logsumexp_cplx(log_psi, b=weights[:, None], axis=0)
        return log_sym.reshape(batch_shape)


def symmetrize(
    model: nn.Module, L: int, b: int | None = None, *, group: str = "patch_cosets"
) -> SymmetrizedWF:
    """Wrap ``model`` in the trivial-sector projection (momentum 0, A1, spin parity +1).

    Args:
        model: the network; for ``patch_cosets`` it must be invariant under
            translations by whole patches (the :class:`~vitnqs.models.ViT` is).
        L: linear lattice size.
        b: patch size; defaults to ``model.b``.
        group: ``patch_cosets`` (``8 b**2`` coset representatives) or ``space_group``
            (all ``8 L**2`` elements; the same state for a patch-invariant model, for
            checks and cost comparisons).

    """
    if group == "patch_cosets":
        perms = patch_coset_permutations(L, model.b if b is None else b)
    elif group == "space_group":
        perms = space_group_permutations(L)
    else:
        raise ValueError(f"unknown group {group!r}; allowed: patch_cosets, space_group")
    return SymmetrizedWF(model, HashableArray(perms))
