"""Exact ViT representation of the Shastry-Sutherland dimer state (paper section 4.3).

The paper argues that a single-layer ViT with two-head Factored attention, identity
embedding, no LayerNorm and no skip connections represents the product of singlets on
the dimers of the Shastry-Sutherland lattice exactly:

    log psi = sum_i [ F(V11 s_i4 + V14 s_{S(i),1} + c) + F(V22 s_i2 + V23 s_i3 + c) ]

with ``F = log cos``, ``V11 = V23 = pi/4``, ``V14 = V22 = 3 pi/4``, ``c = pi/2`` (paper
indices are 1-based: ``s_i1..s_i4`` are the entries 0..3 of the row-major flattened
``2 x 2`` patch ``i``, and ``S(i)`` is the patch diagonally down-right of ``i``). T5 and
Decoupled attention reach the same state only with queries and keys switched off
(``Q = K = 0``).

This module builds that network from the project's own pieces
(:class:`vitnqs.models.MultiHeadAttention`, :func:`vitnqs.geometry.extract_patches`,
:func:`vitnqs.geometry.diagonal_patch`) on the dimers of the same patch layout
(:func:`vitnqs.geometry.dimer_bonds`), and checks the mapping against exact
diagonalization (4 x 4) and exact local energies (6 x 6); :func:`write_checks` writes
the checks as a CSV table.
"""

from __future__ import annotations

import math
from functools import cache, partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import pandas as pd
import scipy.sparse.linalg

from vitnqs.geometry import (
    DIMER_PATCH,
    check_dimer_lattice,
    check_patching,
    diagonal_patch,
    dimer_bonds,
    displacement_index,
    extract_patches,
    nearest_neighbour_bonds,
)
from vitnqs.models import ATTENTIONS, MultiHeadAttention
from vitnqs.physics import heisenberg

HEADS = 2
"""Number of attention heads of the construction."""

V11 = V23 = math.pi / 4
"""Value weights of the paper (Eq. 11): ``s_i4`` (head 1) and ``s_i3`` (head 1)."""
V14 = V22 = 3 * math.pi / 4
"""Value weights of the paper (Eq. 11): ``s_i1`` (head 2) and ``s_i2`` (head 1)."""
SHIFT = math.pi / 2
"""The constant ``c`` added before ``F = log cos``."""

T5_MASK = -1.0e3
"""Positional logit of the T5 attention away from the target patch: ``exp(-1000)``
underflows to exactly 0 in float64, so the softmax is an exact one-hot map."""

DIMER_PHASE_JP = (0.1, 0.3, 0.5)
"""Values of ``J'`` (with ``J = 1``) inside the dimer phase that the checks use."""
OUTSIDE_DIMER_PHASE_JP = 0.9
"""A ``J'`` beyond the dimer phase (which ends near ``J'/J = 0.675`` in the thermodynamic limit and
between 0.65 and 0.70 on 4 x 4): there the dimer state is an excited eigenstate."""

TOLERANCE = 1e-10
"""Tolerance of the eigenstate, energy and overlap checks."""
AMPLITUDE_TOLERANCE = 1e-12
"""Tolerance of the amplitude and attention-map comparisons (amplitudes are +-1 or 0)."""
DEGENERACY_WINDOW = 1e-8
"""Eigenvalues (total energy) within this window of the lowest one form the ground multiplet."""


# ---- the lattice ---------------------------------------------------------------------


def dimer_covering_violations(L: int, b: int = DIMER_PATCH) -> dict[str, int]:
    """Count what keeps :func:`dimer_bonds` from being a Shastry-Sutherland dimer covering.

    Returns:
        ``uncovered`` (sites in no dimer), ``multiply_covered`` (sites in more than one),
        ``not_diagonal`` (dimers that are not next-nearest-neighbour pairs) and
        ``parallel_neighbours`` (pairs of dimers on adjacent plaquettes sharing an
        orientation; the Shastry-Sutherland dimers are mutually orthogonal).

    """
    bonds = dimer_bonds(L, b)
    counts = np.bincount(bonds.ravel(), minlength=L * L)
    xa, ya = np.divmod(bonds[:, 0], L)
    xb, yb = np.divmod(bonds[:, 1], L)
    dx = (xb - xa + 1) % L - 1  # in {-1, 0, 1} for neighbours
    dy = (yb - ya + 1) % L - 1
    diagonal = (np.abs(dx) == 1) & (np.abs(dy) == 1)
    # orientation: +1 along the main diagonal, -1 along the anti-diagonal
    orientation = dx * dy
    plaquette = {}  # lower-left corner of the plaquette the dimer crosses -> orientation
    for x0, y0, ddx, ddy, o in zip(xa, ya, dx, dy, orientation, strict=True):
        corner = ((x0 + min(ddx, 0)) % L, (y0 + min(ddy, 0)) % L)
        plaquette[corner] = o
    parallel = 0
    for (cx, cy), o in plaquette.items():
        for nx, ny in (((cx + 1) % L, (cy + 1) % L), ((cx + 1) % L, (cy - 1) % L)):
            parallel += plaquette.get((nx, ny)) == o
    return {
        "uncovered": int(np.sum(counts == 0)),
        "multiply_covered": int(np.sum(counts > 1)),
        "not_diagonal": int(np.sum(~diagonal)),
        "parallel_neighbours": int(parallel),
    }


def shastry_sutherland_graph(L: int) -> nk.graph.Graph:
    """Shastry-Sutherland graph on ``L x L``: color 0 = dimers, color 1 = nearest neighbours."""
    edges = [(int(a), int(b), 0) for a, b in dimer_bonds(L)]
    edges += [(int(a), int(b), 1) for a, b in nearest_neighbour_bonds(L)]
    return nk.graph.Graph(edges=edges)


def shastry_sutherland_hamiltonian(L: int, J: float, Jp: float) -> nk.operator.DiscreteJaxOperator:
    """``J sum_dimers S_a.S_b + J' sum_<ij> S_i.S_j`` on the periodic ``L x L`` lattice.

    S.S units, total ``Sz = 0`` sector (see :func:`vitnqs.physics.heisenberg`).

    Args:
        L: linear lattice size (even, at least 4).
        J: dimer coupling.
        Jp: nearest-neighbour coupling ``J'``.

    """
    return heisenberg(shastry_sutherland_graph(L), [J, Jp])


# ---- the network ---------------------------------------------------------------------


def log_cos(z: jax.Array) -> jax.Array:
    """Complex ``log cos z`` of a real argument: ``log|cos z| + i pi [cos z < 0]``.

    ``cos z = 0`` gives ``-inf`` (amplitude 0) rather than a NaN.
    """
    cos = jnp.cos(z).astype(jnp.complex128)
    return jnp.where(cos == 0, -jnp.inf + 0j, jnp.log(jnp.where(cos == 0, 1.0, cos)))


class ShastrySutherlandViT(nn.Module):
    """Single-layer ViT of the paper's section 4.3.

    Tokens are the flattened ``2 x 2`` patches (identity embedding, ``d = 4``); one
    two-head :class:`vitnqs.models.MultiHeadAttention` maps them to ``A_i``; no
    LayerNorm, no skip connection; the MLP is replaced by ``F = log cos`` and the output
    head by a plain sum: ``log psi = sum_i sum_k log cos(A_ik)``.

    The paper's shift ``c`` is the bias of the attention's output matrix ``W``,
    ``(c, c, 0, 0)``: the last two rows of ``W`` vanish, so ``A_i3 = A_i4 = 0`` and
    ``log cos 0 = 0``, which makes the sum over all four components the paper's sum
    over the two non-zero ones.
    """

    attention: str = "factored"
    """One of :data:`vitnqs.models.ATTENTIONS`."""
    b: int = DIMER_PATCH
    """Linear patch size (the embedding dimension is ``b**2``)."""

    @nn.compact
    def __call__(self, sigma: jax.Array) -> jax.Array:
        """Evaluate ``log psi`` (complex, shape ``(batch,)``) of configurations ``(batch, L*L)``."""
        sigma = jnp.atleast_2d(sigma)
        L = int(round(sigma.shape[-1] ** 0.5))
        grid = check_patching(L, self.b)
        tokens = extract_patches(sigma.astype(jnp.float64), self.b)
        mixed = MultiHeadAttention(self.attention, self.b**2, HEADS, grid, name="attn")(tokens)
        return jnp.sum(log_cos(mixed), axis=(-2, -1))


def intended_attention(L: int, b: int = DIMER_PATCH) -> np.ndarray:
    """``(2, n, n)`` attention maps of the construction: identity and ``j = S(i)``."""
    grid = check_dimer_lattice(L, b)
    n = grid * grid
    shift = np.zeros((n, n))
    shift[np.arange(n), diagonal_patch(np.arange(n), grid)] = 1.0
    return np.stack([np.eye(n), shift])


def exact_parameters(attention: str, L: int, b: int = DIMER_PATCH) -> dict:
    """Analytical parameters of :class:`ShastrySutherlandViT` for the dimer state.

    * Factored: ``p`` of head 1 is a delta at zero displacement (``alpha^(1) = 1``), of
      head 2 a delta at the displacement ``(1, 1)`` to ``S(i)`` (``alpha^(2)_ij =
      delta_{j,S(i)}``).
    * Decoupled: ``Q = K = 0`` (kernels and biases), so the softmax term is ``1/n``
      everywhere; ``p = delta - 1/n`` gives the same maps.
    * T5: ``Q = K = 0`` and ``p = 0`` at the target displacement, :data:`T5_MASK`
      elsewhere. A softmax is never exactly one-hot: T5 reaches the identity and
      shift maps only in the limit ``p -> -inf`` away from the target, which float64
      realises exactly once ``exp(p)`` underflows.

    ``V`` and ``W`` follow the paper (flax kernels are ``(in, out)``: ``y = x @ kernel +
    bias``); head 1 reads value components 0-1, head 2 components 2-3.

    Args:
        attention: one of :data:`vitnqs.models.ATTENTIONS`.
        L: linear lattice size (even, at least 4).
        b: patch size; only 2 is supported.

    Returns:
        The ``params`` collection ``{"attn": {...}}``.

    """
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; allowed: {', '.join(ATTENTIONS)}")
    grid = check_dimer_lattice(L, b)
    n, d = grid * grid, b * b
    value = np.zeros((d, d))
    value[3, 0] = V11  # head 1, component 1: V11 s_i4
    value[1, 1] = V22  # head 1, component 2: V22 s_i2 + V23 s_i3
    value[2, 1] = V23
    value[0, 2] = V14  # head 2, component 1: V14 s_i1 (read at S(i) by alpha^(2))
    paper_w = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], float)

    # p is indexed by displacement: look the two targets up in the table the attention uses
    displacements = displacement_index(grid)
    targets = np.zeros((HEADS, n))
    targets[0, displacements[0, 0]] = 1.0  # head 1: i -> i
    targets[1, displacements[0, diagonal_patch(0, grid)]] = 1.0  # head 2: i -> S(i)
    if attention == "factored":
        p = targets
    elif attention == "decoupled":
        p = targets - 1.0 / n
    else:
        p = np.where(targets == 1.0, 0.0, T5_MASK)

    params = {
        "p": jnp.asarray(p),
        "V": {"kernel": jnp.asarray(value), "bias": jnp.zeros(d)},
        "W": {"kernel": jnp.asarray(paper_w.T), "bias": jnp.array([SHIFT, SHIFT, 0.0, 0.0])},
    }
    if attention != "factored":
        for name in ("Q", "K"):  # queries and keys switched off
            params[name] = {"kernel": jnp.zeros((d, d)), "bias": jnp.zeros(d)}
    return {"attn": params}


def attention_weights(attention: str, params: dict, sigma: jax.Array) -> np.ndarray:
    """Attention maps ``(batch, heads, n, n)`` sown by the network for configurations ``sigma``."""
    sigma = jnp.atleast_2d(sigma)
    model = ShastrySutherlandViT(attention)
    _, state = model.apply({"params": params}, sigma, mutable=["intermediates"])
    alpha = np.asarray(state["intermediates"]["attn"]["alpha"][0])
    if alpha.ndim == 3:  # factored: input independent
        alpha = np.broadcast_to(alpha, (sigma.shape[0], *alpha.shape))
    return alpha


@cache
def _log_psi_function(attention: str, L: int):
    model = ShastrySutherlandViT(attention)
    params = exact_parameters(attention, L)
    return jax.jit(lambda sigma: model.apply({"params": params}, sigma))


def network_log_amplitude(attention: str, sigma: np.ndarray) -> np.ndarray:
    """``log psi`` of the network with :func:`exact_parameters` on configurations ``(batch, L*L)``.

    The jitted function is cached per attention and lattice size.
    """
    sigma = np.atleast_2d(sigma)
    L = int(round(sigma.shape[-1] ** 0.5))
    return np.asarray(_log_psi_function(attention, L)(jnp.asarray(sigma, dtype=jnp.float64)))


# ---- independent reference -----------------------------------------------------------


def product_of_singlets_amplitude(sigma: np.ndarray, L: int, b: int = DIMER_PATCH) -> np.ndarray:
    """Amplitude ``prod_dimers (s_a - s_b) / 2`` of the dimer product state (+-1 or 0)."""
    sigma = np.atleast_2d(np.asarray(sigma))
    bonds = dimer_bonds(L, b)
    return np.prod((sigma[:, bonds[:, 0]] - sigma[:, bonds[:, 1]]) / 2, axis=1)


def product_of_singlets_log_amplitude(
    sigma: np.ndarray, L: int, b: int = DIMER_PATCH
) -> np.ndarray:
    """Complex log of :func:`product_of_singlets_amplitude` (``-inf`` where it vanishes)."""
    amplitude = product_of_singlets_amplitude(sigma, L, b).astype(complex)
    with np.errstate(divide="ignore"):
        return np.log(amplitude)


def random_dimer_configurations(L: int, count: int, seed: int) -> np.ndarray:
    """Configurations in the support of the dimer state: every dimer antiparallel at random."""
    bonds = dimer_bonds(L)
    up_first = np.random.default_rng(seed).integers(0, 2, size=(count, len(bonds))) * 2 - 1
    sigma = np.empty((count, L * L))
    sigma[:, bonds[:, 0]] = up_first
    sigma[:, bonds[:, 1]] = -up_first
    return sigma


def random_sz0_configurations(L: int, count: int, seed: int) -> np.ndarray:
    """Uniformly random configurations with total ``Sz = 0``."""
    half = np.repeat([1.0, -1.0], L * L // 2)
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(half) for _ in range(count)])


# ---- exact diagonalization and local energies -----------------------------------------


@cache
def ground_multiplet(L: int, J: float, Jp: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest eigenvalues (total energy) and the eigenvectors of the ground multiplet.

    Computes a few of the lowest eigenpairs of the sparse Sz = 0 Hamiltonian and grows
    their number until the last one lies outside the ground multiplet (eigenvalues
    within :data:`DEGENERACY_WINDOW` of the lowest), so the multiplet is complete.

    Returns:
        ``(eigenvalues, multiplet)``: all computed eigenvalues (ascending) and the
        ``(n_states, degeneracy)`` orthonormal basis of the ground space.

    """
    matrix = shastry_sutherland_hamiltonian(L, J, Jp).to_sparse()
    v0 = np.random.default_rng(0).normal(size=matrix.shape[0])  # reproducible
    k = 6
    while True:
        energies, vectors = scipy.sparse.linalg.eigsh(matrix, k=k, which="SA", v0=v0, tol=0)
        order = np.argsort(energies)
        energies, vectors = energies[order], vectors[:, order]
        in_multiplet = energies <= energies[0] + DEGENERACY_WINDOW
        if not in_multiplet[-1] or k >= matrix.shape[0] - 1:
            return energies, vectors[:, in_multiplet]
        k *= 2


def normalized_network_state(attention: str, L: int) -> np.ndarray:
    """The network's wave function on all Sz = 0 states (NetKet order), normalized."""
    states = shastry_sutherland_hamiltonian(L, 1.0, 0.0).hilbert.all_states()
    psi = np.exp(network_log_amplitude(attention, np.asarray(states)))
    return psi / np.linalg.norm(psi)


def local_energies(attention: str, sigma: np.ndarray, J: float, Jp: float) -> np.ndarray:
    """Exact local energies ``sum_s' H_ss' psi(s') / psi(s)`` of the network (total, not per site).

    Args:
        attention: one of :data:`vitnqs.models.ATTENTIONS`.
        sigma: configurations ``(batch, L*L)`` with ``psi(sigma) != 0``.
        J: dimer coupling.
        Jp: nearest-neighbour coupling.

    """
    sigma = np.atleast_2d(sigma)
    L = int(round(sigma.shape[-1] ** 0.5))
    connected, elements = shastry_sutherland_hamiltonian(L, J, Jp).get_conn_padded(
        jnp.asarray(sigma)
    )
    connected, elements = np.asarray(connected), np.asarray(elements)
    log_psi_connected = network_log_amplitude(attention, connected.reshape(-1, L * L))
    ratios = np.exp(
        log_psi_connected.reshape(elements.shape) - network_log_amplitude(attention, sigma)[:, None]
    )
    return np.sum(elements * ratios, axis=1)


# ---- the checks table ----------------------------------------------------------------

CLOSE = "abs_diff<=threshold"
"""Criterion of a check: ``|value - reference| <= threshold``."""
ABOVE = "value>threshold"
"""Criterion of a check: ``value > threshold``."""

_ATTENTION_NOTES = {
    "factored": "alpha = p directly",
    "decoupled": "Q = K = 0: softmax term 1/n, p = delta - 1/n",
    "t5": "Q = K = 0, p = 0 / -1e3: one-hot only because exp(-1e3) underflows (limit p -> -inf)",
}


def _row(
    check: str,
    value: float,
    reference: float,
    threshold: float,
    note: str,
    *,
    attention: str,
    L: int,
    J: float = np.nan,
    Jp: float = np.nan,
    criterion: str = CLOSE,
) -> dict:
    passed = abs(value - reference) <= threshold if criterion == CLOSE else value > threshold
    return {
        "check": check,
        "attention": attention,
        "L": L,
        "J": J,
        "Jp": Jp,
        "value": value,
        "reference": reference,
        "threshold": threshold,
        "criterion": criterion,
        "passed": bool(passed),
        "note": note,
    }


def _covering_row(L: int) -> dict:
    violations = dimer_covering_violations(L)
    note = ", ".join(f"{key}={value}" for key, value in violations.items())
    return _row("dimer_covering", sum(violations.values()), 0, 0, note, attention="-", L=L)


def _attention_row(attention: str, L: int, sigma: np.ndarray) -> dict:
    alpha = attention_weights(attention, exact_parameters(attention, L), sigma)
    error = float(np.max(np.abs(alpha - intended_attention(L)[None])))
    note = f"max |alpha - intended|, both heads, {len(sigma)} inputs; {_ATTENTION_NOTES[attention]}"
    return _row("attention_maps", error, 0.0, AMPLITUDE_TOLERANCE, note, attention=attention, L=L)


def _amplitude_row(attention: str, L: int, sigma: np.ndarray, check: str, what: str) -> dict:
    network = np.exp(network_log_amplitude(attention, sigma))
    reference = product_of_singlets_amplitude(sigma, L)
    error = float(np.max(np.abs(network - reference)))
    off_support = np.abs(network[reference == 0])
    largest_off = float(off_support.max()) if off_support.size else 0.0
    note = (
        f"max |psi - psi_singlets| over {len(sigma)} {what}, {int(np.sum(reference != 0))} in "
        f"the support; max |psi| off the support {largest_off:.1e} (cos(pi/2) = 6e-17 in float64)"
    )
    return _row(check, error, 0.0, AMPLITUDE_TOLERANCE, note, attention=attention, L=L)


def _ed_rows(attention: str, L: int, J: float, Jp: float) -> list[dict]:
    row = partial(_row, attention=attention, L=L, J=J, Jp=Jp)
    n_sites = L * L
    psi = normalized_network_state(attention, L)
    h_psi = shastry_sutherland_hamiltonian(L, J, Jp).to_sparse() @ psi
    energy = float(np.real(np.vdot(psi, h_psi))) / n_sites
    residual = float(np.linalg.norm(h_psi - energy * n_sites * psi))
    eigenvalues, multiplet = ground_multiplet(L, J, Jp)
    overlap = float(np.linalg.norm(multiplet.conj().T @ psi))
    ground = eigenvalues[0] / n_sites
    spectrum = ", ".join(f"{e / n_sites:.6f}" for e in eigenvalues[:4])
    ed = f"ED ground degeneracy {multiplet.shape[1]}; lowest E/N {spectrum}"
    residual_note = f"||H psi - E psi||, psi normalized, E/N = <psi|H|psi>/N = {energy:.12f}"
    rows = [row("eigenstate_residual", residual, 0.0, TOLERANCE, residual_note)]
    if Jp >= OUTSIDE_DIMER_PHASE_JP:
        # outside the dimer phase the check passes when the mapping fails: an excited state
        note = f"E/N - E0/N, E/N = {energy:.9f}, E0/N = {ground:.9f}; overlap {overlap:.1e}; {ed}"
        check = "above_ground_state_outside_dimer_phase"
        return [*rows, row(check, energy - ground, 0.0, 1e-6, note, criterion=ABOVE)]
    return [
        *rows,
        row("energy_vs_ed", energy, ground, TOLERANCE, f"E/N vs the ED ground state; {ed}"),
        row("energy_vs_dimer_value", energy, -3 * J / 8, TOLERANCE, "E/N vs -3J/8"),
        row(
            "overlap_with_ground_space",
            overlap,
            1.0,
            TOLERANCE,
            f"norm of the projection on the ground space; {ed}",
        ),
    ]


def _local_energy_row(attention: str, L: int, J: float, Jp: float, count: int) -> dict:
    row = partial(_row, attention=attention, L=L, J=J, Jp=Jp)
    sigma = random_dimer_configurations(L, count, seed=2)
    per_site = np.real(local_energies(attention, sigma, J, Jp)) / (L * L)
    worst = float(per_site[np.argmax(np.abs(per_site + 3 * J / 8))])
    note = f"worst E_loc/N over {count} random configurations in the support"
    return row("local_energy_on_support", worst, -3 * J / 8, TOLERANCE, note)


def checks(samples: int = 2000) -> pd.DataFrame:
    """Every check of the mapping, one row each (see the module docstring).

    Columns: ``check, attention, L, J, Jp, value, reference, threshold, criterion,
    passed, note``. ``criterion`` is ``abs_diff<=threshold`` (``|value - reference| <=
    threshold``) or ``value>threshold``.

    Args:
        samples: number of random configurations of the 6 x 6 checks.

    """
    rows = [_covering_row(4), _covering_row(6)]
    all_states_4 = np.asarray(shastry_sutherland_hamiltonian(4, 1.0, 0.0).hilbert.all_states())
    random_6 = random_sz0_configurations(6, samples, seed=0)
    support_6 = random_dimer_configurations(6, samples, seed=1)
    amplitude_sets = [
        (4, all_states_4, "amplitudes_vs_singlets", "Sz=0 states (all)"),
        (6, random_6, "amplitudes_vs_singlets", "random Sz=0 states"),
        (6, support_6, "amplitudes_vs_singlets_support", "random states in the support"),
    ]
    for attention in ATTENTIONS:
        rows.append(_attention_row(attention, 4, all_states_4[:64]))
        rows.append(_attention_row(attention, 6, random_6[:64]))
        rows += [_amplitude_row(attention, *amplitude_set) for amplitude_set in amplitude_sets]
        for Jp in (*DIMER_PHASE_JP, OUTSIDE_DIMER_PHASE_JP):
            rows += _ed_rows(attention, 4, 1.0, Jp)
        rows.append(_local_energy_row(attention, 6, 1.0, 0.3, samples))
    return pd.DataFrame(rows)


def write_checks(path: str | Path) -> pd.DataFrame:
    """Run :func:`checks` and write them as CSV to ``path``; return the table."""
    table = checks()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table
