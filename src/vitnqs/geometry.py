"""Lattice and patch geometry shared by the model, the Hamiltonians and the figures.

Conventions (one place for them):

* Site ``k`` of an ``L x L`` lattice sits at ``(x, y) = (k // L, k % L)``: this is
  the order of NetKet's ``Hypercube`` positions, so a configuration reshaped to
  ``(L, L)`` is indexed as ``[x, y]``.
* Patches are ``b x b`` blocks; patch ``(X, Y)`` holds sites ``x = X*b + u``,
  ``y = Y*b + v`` (``u, v`` in ``0..b-1``) and has index ``X * (L // b) + Y``.
  Inside a patch the ``b*b`` spins are flattened row-major (index ``u*b + v``).
* The relative-position table of the attention uses the displacement from patch
  ``i`` to patch ``j`` on the periodic patch grid, ``((Xj - Xi) mod g, (Yj - Yi)
  mod g)`` with ``g = L // b``, flattened as ``dX * g + dY``.
* The Shastry-Sutherland dimers of the paper's section 4.3 (:func:`dimer_bonds`) follow
  from the ``2 x 2`` patches; :mod:`vitnqs.shastry_sutherland` builds the network and
  the Hamiltonian on them, :mod:`vitnqs.fig5` draws them.

NumPy only: the figures draw from this module without loading JAX.
"""

from __future__ import annotations

import numpy as np


def check_patching(L: int, b: int) -> int:
    """Return the patch-grid side ``L // b`` or raise if ``b`` does not divide ``L``."""
    if L < 1 or b < 1:
        raise ValueError(f"L and b must be positive (got L={L}, b={b})")
    if L % b:
        raise ValueError(f"L={L} is not divisible by the patch size b={b}")
    return L // b


def extract_patches(x, b: int):
    """Split configurations into flattened ``b x b`` patches.

    Args:
        x: array of shape ``(batch, L*L)``.
        b: linear patch size.

    Returns:
        Array of shape ``(batch, n, b*b)`` with ``n = (L // b)**2`` patches in the
        order described in the module docstring.

    """
    batch, n_sites = x.shape
    L = int(round(n_sites**0.5))
    g = check_patching(L, b)
    x = x.reshape(batch, g, b, g, b)  # [batch, X, u, Y, v]
    x = x.transpose(0, 1, 3, 2, 4)  # [batch, X, Y, u, v]
    return x.reshape(batch, g * g, b * b)


def displacement_index(g: int) -> np.ndarray:
    """``(n, n)`` integer table: entry ``[i, j]`` indexes the displacement i -> j.

    Indexing a per-head vector ``p`` of length ``n = g*g`` with this table builds the
    block-circulant matrix ``P_ij = p_{i-j}`` of the relative positional attention.
    """
    X, Y = np.divmod(np.arange(g * g), g)
    dX = (X[None, :] - X[:, None]) % g
    dY = (Y[None, :] - Y[:, None]) % g
    return dX * g + dY


def diagonal_patch(i: int | np.ndarray, g: int):
    """Index of the patch diagonally down-right of patch ``i`` (periodic): S(i) of the paper."""
    X, Y = np.divmod(i, g)
    return ((X + 1) % g) * g + (Y + 1) % g


def site_index(x, y, L: int):
    """Site index of lattice point ``(x, y)`` with periodic wrapping."""
    return (np.asarray(x) % L) * L + np.asarray(y) % L


def translate(sigma: np.ndarray, L: int, dx: int, dy: int) -> np.ndarray:
    """Translate configurations ``(batch, L*L)`` by ``(dx, dy)`` lattice sites (periodic)."""
    s = np.asarray(sigma).reshape(-1, L, L)
    return np.roll(s, (dx, dy), axis=(1, 2)).reshape(-1, L * L)


# ---- the Shastry-Sutherland dimers (paper section 4.3) --------------------------------

DIMER_PATCH = 2
"""Linear patch size of the Shastry-Sutherland construction (``d = DIMER_PATCH**2 = 4``)."""


def check_dimer_lattice(L: int, b: int) -> int:
    """Return the patch-grid side ``L // b``, or raise if the construction cannot be built.

    Raises:
        ValueError: unless ``b`` is :data:`DIMER_PATCH`, divides ``L`` and ``L >= 4``.

    """
    if b != DIMER_PATCH:
        raise ValueError(f"the Shastry-Sutherland construction needs b={DIMER_PATCH} (got b={b})")
    grid = check_patching(L, b)
    if L < 4:
        raise ValueError(f"the Shastry-Sutherland lattice needs L >= 4 (got L={L})")
    return grid


def _patch_sites(L: int, b: int) -> np.ndarray:
    """``(n, b*b)`` site indices of every patch, in the order of :func:`extract_patches`."""
    return np.asarray(extract_patches(np.arange(L * L)[None, :], b)[0])


def dimer_bonds(L: int, b: int = DIMER_PATCH) -> np.ndarray:
    """Oriented dimer bonds ``(a, b)`` of the Shastry-Sutherland lattice built by the ViT.

    Derived from the network's own patch layout: inside patch ``i`` the anti-diagonal
    pair ``(s_i3, s_i2)`` (flattened entries 2 and 1), across patches the diagonal pair
    ``(s_i4, s_{S(i),1})`` (entry 3 of ``i``, entry 0 of ``S(i)``, :func:`diagonal_patch`).
    The orientation is the sign convention of the network's singlets: the network's
    amplitude on a dimer is ``(s_a - s_b) / 2``.

    Args:
        L: linear lattice size (even, at least 4).
        b: patch size; only 2 is supported.

    Returns:
        Integer array of shape ``(L*L // 2, 2)``: the ``n`` in-patch dimers (patch order),
        then the ``n`` cross-patch ones.

    """
    grid = check_dimer_lattice(L, b)
    sites = _patch_sites(L, b)
    patches = np.arange(grid * grid)
    in_patch = np.stack([sites[:, 2], sites[:, 1]], axis=1)
    across = np.stack([sites[:, 3], sites[diagonal_patch(patches, grid), 0]], axis=1)
    return np.concatenate([in_patch, across])


def nearest_neighbour_bonds(L: int) -> np.ndarray:
    """``(2 L*L, 2)`` nearest-neighbour bonds of the periodic ``L x L`` lattice."""
    x, y = np.divmod(np.arange(L * L), L)
    right = (x % L) * L + (y + 1) % L
    down = ((x + 1) % L) * L + y % L
    site = np.arange(L * L)
    return np.concatenate([np.stack([site, right], 1), np.stack([site, down], 1)])
