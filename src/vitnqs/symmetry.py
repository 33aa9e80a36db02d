"""Symmetrized ViT wave functions, the ground state's symmetry sector and the V-score.

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
  so wrapping a function that is already invariant returns it unchanged;
* the V-score (Wu et al., Science 386, 296 (2024)) is ``N Var(H) / (<H> - E_inf)**2``
  with total-energy quantities; see :func:`v_score` for the per-site form and
  :func:`infinite_temperature_energy` for ``E_inf``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
from netket.jax import logsumexp_cplx
from netket.utils import HashableArray

from vitnqs import measure
from vitnqs.config import RunConfig
from vitnqs.geometry import site_index
from vitnqs.models import ViT
from vitnqs.physics import (
    exchange_sampler,
    hilbert_space,
    j1j2_hamiltonian,
    square_lattice,
)
from vitnqs.plan import EVAL_CHAIN_LENGTH, symmetrized_samples
from vitnqs.references import reference_energy, relative_error, v_score

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

E_INF_CONVENTIONS = ("full", "sz0")
"""``full``: ``Tr(H)/dim`` over the whole spin space (0, the V-score table's convention);
``sz0``: the same trace over the ``Sz = 0`` sector the states live in."""

WARM_START_SWEEPS = 64
"""Sweeps of the plain network that thermalize the chains before the symmetrized network
takes them over (:func:`warm_started_state`). A plain sweep costs about ``1 / n_ops`` of
a symmetrized one (``n_ops = 64`` for ``b = 2``): all of them cost about one
symmetrized sweep."""

EVAL_DISCARD = 2
"""Sweeps of the symmetrized network discarded per chain after the warm start, before
the kept samples of :func:`evaluate_symmetrized` (and before the first fine-tuning step
of :func:`finetune_symmetrized`). Few suffice: the plain and the symmetrized
distributions are close (total variation 0.08 on a trained 4 x 4 run, where keeping the
plain network's samples unchanged would bias the energy by +1.9e-4, a seventh of the
error bar of 512 samples), and each of these sweeps costs ``n_ops`` plain ones."""


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


# ---------------------------------------------------------------------------------------
# Exact diagonalization: the sector of the ground state


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


# ---------------------------------------------------------------------------------------
# V-score


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


# ---------------------------------------------------------------------------------------
# Evaluation of a finished run


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], ViT, Any]:
    """Summary, rebuilt :class:`~vitnqs.models.ViT` and trained parameters of a run.

    Returns:
        ``(summary, model, params)`` with ``params`` the ``params`` collection.

    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    c = RunConfig.from_row(summary["config"])
    dtype = jnp.dtype(summary.get("options", {}).get("network_dtype", "float64"))
    model = ViT(c.attention, c.layers, c.d, c.heads, c.b, dtype=dtype)
    dummy = jnp.ones((1, c.n_sites), dtype=jnp.float64)
    template = model.init(jax.random.key(0), dummy)["params"]
    params = flax.serialization.from_bytes(template, (run_dir / "params.msgpack").read_bytes())
    return summary, model, params


def plain_thermalized_configurations(
    model: nn.Module, params: Any, L: int, n_chains: int, sweeps: int, key: jax.Array
) -> jax.Array:
    """Last configurations of ``n_chains`` exchange-sampler chains of the plain network.

    The chains start from random ``Sz = 0`` configurations (NetKet's initial state of
    :func:`~vitnqs.physics.exchange_sampler` for ``key``) and run ``sweeps`` sweeps
    on ``|psi|**2`` of ``model`` itself.

    Returns:
        Array ``(n_chains, L*L)``, the sampler state's ``σ`` after the sweeps.

    """
    sampler = exchange_sampler(L, n_chains=n_chains)
    variables = {"params": params}
    state = sampler.init_state(model, variables, seed=key)
    state = sampler.reset(model, variables, state)  # log |psi|^2 of the random starts
    if sweeps > 0:
        _, state = sampler.sample(model, variables, state=state, chain_length=sweeps)
    return state.σ


def warm_started_state(
    model: nn.Module,
    params: Any,
    L: int,
    n_chains: int,
    seed: int,
    *,
    n_samples: int,
    n_discard_per_chain: int,
    chunk_size: int | None = None,
    warm_start_sweeps: int = WARM_START_SWEEPS,
) -> nk.vqs.MCState:
    """Sampled state of the symmetrized network, its chains thermalized on the plain one.

    ``jax.random.key(seed)`` is split in two: the first key runs
    :func:`plain_thermalized_configurations` (``warm_start_sweeps`` sweeps of the plain
    network, ``n_ops`` times cheaper than sweeps of the symmetrized one), the second
    seeds the symmetrized state's sampler, whose chains then start from those
    configurations. The exchange sampler keeps its chains on :meth:`reset`
    (``reset_chains=False``), so :meth:`~netket.vqs.MCState.sample` continues them; it
    first discards ``n_discard_per_chain`` sweeps of the symmetrized network.

    Args:
        model: the plain network (patch-translation invariant).
        params: its ``params`` collection.
        L: linear lattice size.
        n_chains: Markov chains.
        seed: seed of both samplers.
        n_samples: samples per :meth:`~netket.vqs.MCState.sample`.
        n_discard_per_chain: symmetrized sweeps discarded before each sampling.
        chunk_size: configurations per chunk of the symmetrized network's evaluations.
        warm_start_sweeps: plain sweeps; 0 starts from random configurations.

    """
    warm_key, key = jax.random.split(jax.random.key(seed))
    sigma = plain_thermalized_configurations(
        model, params, L, n_chains, warm_start_sweeps, warm_key
    )
    vstate = nk.vqs.MCState(
        exchange_sampler(L, n_chains=n_chains),
        symmetrize(model, L),
        n_samples=n_samples,
        n_discard_per_chain=n_discard_per_chain,
        chunk_size=chunk_size,
        variables={"params": {"module": params}},
        sampler_seed=key,
    )
    vstate.sampler_state = vstate.sampler_state.replace(σ=sigma)
    return vstate


def evaluate_symmetrized(
    run_dir: str | Path,
    samples: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    *,
    n_discard_per_chain: int = EVAL_DISCARD,
    warm_start_sweeps: int = WARM_START_SWEEPS,
    e_inf_convention: str = "full",
) -> dict[str, Any]:
    """Monte Carlo energy of the symmetrized trained ViT of a finished run.

    The trained network is wrapped in :func:`symmetrize` (patch cosets, trivial
    characters, spin parity +1) and sampled afresh with the exchange sampler, as the
    plain network's final evaluation: :data:`~vitnqs.plan.EVAL_CHAIN_LENGTH`
    samples per chain, by default from the run's ``M`` chains (``4 M`` samples). The
    chains are first thermalized on the plain network (:func:`warm_started_state`,
    ``warm_start_sweeps`` sweeps), then ``n_discard_per_chain`` sweeps of the
    symmetrized network are discarded.

    Args:
        run_dir: directory with ``summary.json`` and ``params.msgpack``.
        samples: number of kept samples, rounded up to whole chains
            (:func:`vitnqs.plan.symmetrized_samples`); default 4 times the run's.
        seed: seed of the samplers.
        chunk_size: configurations per network evaluation chunk (each costs
            ``8 b**2 * 2`` network evaluations); ``None`` for no chunking.
        n_discard_per_chain: symmetrized sweeps discarded per chain.
        warm_start_sweeps: plain sweeps before them (0: random starting configurations).
        e_inf_convention: see :func:`infinite_temperature_energy`.

    Returns:
        Dict with ``energy``, ``energy_error``, ``energy_variance`` (per site, per site
        squared), ``v_score``, ``r_hat``, ``tau_corr``, ``acceptance``; ``plain_energy``,
        ``plain_energy_error``, ``plain_energy_variance``, ``plain_v_score`` (from
        ``summary.json``); ``reference_energy``, ``rel_error``, ``plain_rel_error``
        (NaN without a reference); ``e_inf``, ``e_inf_convention``, ``n_ops``,
        ``samples``, ``n_chains``, ``samples_per_chain``, ``warm_start_sweeps``,
        ``n_discard_per_chain``, ``seed``, ``eval_time_s`` (wall time including
        compilation and the warm start), ``median_step_time_s`` and
        ``eval_time_in_steps`` (``eval_time_s`` over the plain run's median step time;
        NaN if unknown).

    """
    clock = measure.Stopwatch()
    summary, model, params = load_run(run_dir)
    c = summary["config"]
    L, J2, n_sites = c["L"], c["J2"], c["L"] ** 2
    samples = symmetrized_samples(c.get("samples"), samples)
    n_chains = samples // EVAL_CHAIN_LENGTH
    vstate = warm_started_state(
        model, params, L, n_chains, seed,
        n_samples=samples, n_discard_per_chain=n_discard_per_chain, chunk_size=chunk_size,
        warm_start_sweeps=warm_start_sweeps,
    )  # fmt: skip
    stats = vstate.expect(j1j2_hamiltonian(L, J2))
    energy = float(np.real(stats.mean)) / n_sites
    error = float(stats.error_of_mean) / n_sites
    variance = float(stats.variance) / n_sites**2
    elapsed = clock.stop()

    e_inf = infinite_temperature_energy(L, J2, e_inf_convention)
    reference = reference_energy(L, J2)
    step_time = summary.get("median_step_time_s")
    plain_v = (
        v_score(summary["energy"], summary["energy_variance"], n_sites, e_inf)
        if summary.get("energy_variance") is not None
        else math.nan
    )
    return {
        "energy": energy,
        "energy_error": error,
        "energy_variance": variance,
        "v_score": v_score(energy, variance, n_sites, e_inf),
        "r_hat": float(stats.R_hat),
        "tau_corr": float(stats.tau_corr),
        "acceptance": float(vstate.sampler_state.acceptance),
        "plain_energy": summary.get("energy"),
        "plain_energy_error": summary.get("energy_error"),
        "plain_energy_variance": summary.get("energy_variance"),
        "plain_v_score": plain_v,
        "reference_energy": None if reference is None else reference.energy,
        "rel_error": relative_error(energy, reference),
        "plain_rel_error": relative_error(summary["energy"], reference),
        "e_inf": e_inf,
        "e_inf_convention": e_inf_convention,
        "n_ops": 2 * len(np.asarray(vstate.model.permutations)),
        "samples": samples,
        "n_chains": n_chains,
        "samples_per_chain": EVAL_CHAIN_LENGTH,
        "warm_start_sweeps": warm_start_sweeps,
        "n_discard_per_chain": n_discard_per_chain,
        "seed": seed,
        "eval_time_s": elapsed,
        "median_step_time_s": step_time,
        "eval_time_in_steps": elapsed / step_time if step_time else math.nan,
    }


def symmetrization_cost(
    model: nn.Module, params: Any, L: int, batch: int = 64, repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Evaluation time of the coset sum, the full space-group sum and the plain network.

    Also checks that the two sums give the same ``log psi`` (the largest difference).

    Args:
        model: a patch-translation-invariant network (a :class:`~vitnqs.models.ViT`).
        params: its ``params`` collection.
        L: linear lattice size.
        batch: configurations per evaluation.
        repeats: timed evaluations after the compiling one (the best one counts).
        seed: seed of the random ``Sz = 0`` configurations.

    Returns:
        Dict with ``plain_s``, ``cosets_s``, ``space_group_s`` (seconds per batch),
        ``n_cosets``, ``n_space_group`` (evaluations per configuration, spin inversion
        included), ``ratio`` (``space_group_s / cosets_s``) and ``max_log_psi_diff``.

    """
    sigma = hilbert_space(L * L).random_state(jax.random.key(seed), batch)
    variables = {"params": {"module": params}}
    timings, outputs = {}, {}
    wrappers = {
        "plain": (model, {"params": params}),
        "cosets": (symmetrize(model, L), variables),
        "space_group": (symmetrize(model, L, group="space_group"), variables),
    }
    for name, (module, v) in wrappers.items():
        fn = jax.jit(module.apply)
        outputs[name] = np.asarray(fn(v, sigma).block_until_ready())
        timings[name] = min(
            measure.timed(lambda fn=fn, v=v: fn(v, sigma)).wall_s for _ in range(repeats)
        )
    diff = outputs["cosets"] - outputs["space_group"]
    diff = diff - 2j * np.pi * np.round(diff.imag / (2 * np.pi))
    return {
        "plain_s": timings["plain"],
        "cosets_s": timings["cosets"],
        "space_group_s": timings["space_group"],
        "n_cosets": 2 * len(np.asarray(wrappers["cosets"][0].permutations)),
        "n_space_group": 2 * len(np.asarray(wrappers["space_group"][0].permutations)),
        "ratio": timings["space_group"] / timings["cosets"],
        "max_log_psi_diff": float(np.max(np.abs(diff))),
    }


# ---------------------------------------------------------------------------------------
# Symmetrized fine-tuning


def finetune_symmetrized(
    run_dir: str | Path,
    out: str | Path,
    steps: int,
    *,
    samples: int | None = None,
    lr: float = 0.003,
    diag_shift: float | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    checkpoint_every: int = 10,
    n_thermalize: int = EVAL_DISCARD,
    warm_start_sweeps: int = WARM_START_SWEEPS,
) -> dict[str, Any]:
    """A few SR steps on the symmetrized network, starting from a run's trained parameters.

    Resumable: a checkpoint (driver, sampler state, history) is written to ``out`` every
    ``checkpoint_every`` steps and at the end; a second call with the same settings
    continues from it, or returns at once if all steps are done; a larger ``steps``
    extends a finished fine-tuning. ``out`` then holds a
    ``summary.json`` (the original run's, with a ``finetune`` entry) and the fine-tuned
    ``params.msgpack`` of the inner ViT, so :func:`evaluate_symmetrized` reads ``out``
    as it reads a run directory (its plain numbers stay those of the original run).

    Args:
        run_dir: finished run (``summary.json``, ``params.msgpack``).
        out: output directory (created if needed).
        steps: SR steps in total.
        samples: samples per step (one per chain, as in the run); default the run's.
        lr: constant learning rate (small: the start is already optimized).
        diag_shift: SR diagonal shift; default the run's.
        seed: seed of the samplers.
        chunk_size: configurations per network evaluation chunk.
        checkpoint_every: steps between checkpoints.
        n_thermalize: symmetrized sweeps discarded before the first step.
        warm_start_sweeps: plain sweeps before them (:func:`warm_started_state`; 0:
            the chains start random).

    Returns:
        The ``finetune`` entry: settings, ``history`` (per step ``energy``,
        ``energy_error``, ``energy_variance``, per site), ``steps_done``, ``time_s``
        (wall time over all calls) and ``thermalization`` (``warm_start_sweeps`` and
        ``n_thermalize`` of the call that took the first step; ``None`` for a
        checkpoint written before they were recorded).

    """
    import optax  # only needed here

    from vitnqs import checkpoint

    run_dir, out = Path(run_dir), Path(out)
    summary, model, params = load_run(run_dir)
    c = summary["config"]
    L, J2, n_sites = c["L"], c["J2"], c["L"] ** 2
    settings = {
        "run_dir": str(run_dir),
        "steps": steps,
        "samples": samples or c["samples"],
        "lr": lr,
        "diag_shift": c["diag_shift"] if diag_shift is None else diag_shift,
        "seed": seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.lock_run_dir(out):
        payload = checkpoint.load_checkpoint(out)
        if payload is not None:
            stored = {k: v for k, v in payload["settings"].items() if k != "steps"}
            if stored != {k: v for k, v in settings.items() if k != "steps"}:
                raise ValueError(f"{out} holds a fine-tuning with other settings: {stored}")
            settings["steps"] = max(steps, int(payload["settings"]["steps"]))
        rows = {} if payload is None else payload["history"]
        history = [dict(rows[key]) for key in sorted(rows, key=int)]
        elapsed_before = 0.0 if payload is None else float(payload["elapsed"])
        clock = measure.Stopwatch()

        if payload is None:
            thermalization = {"warm_start_sweeps": warm_start_sweeps, "n_thermalize": n_thermalize}
        else:  # the checkpoint's chains replace the new ones: no warm start
            thermalization = payload.get("thermalization")
        vstate = warm_started_state(
            model, params, L, settings["samples"], seed,
            n_samples=settings["samples"], n_discard_per_chain=n_thermalize,
            chunk_size=chunk_size, warm_start_sweeps=warm_start_sweeps if payload is None else 0,
        )  # fmt: skip
        driver = nk.driver.VMC_SR(
            j1j2_hamiltonian(L, J2),
            optax.sgd(lr),
            diag_shift=settings["diag_shift"],
            variational_state=vstate,
            use_ntk=settings["samples"] < vstate.n_parameters,
            mode="complex",
        )
        if payload is not None:
            driver = flax.serialization.from_bytes(driver, payload["driver"])
            driver.state.n_discard_per_chain = 0  # the restored chains are thermalized

        def save() -> None:
            checkpoint.save_checkpoint(
                out,
                {
                    "settings": settings,
                    "driver": flax.serialization.to_bytes(driver),
                    "history": {str(i): row for i, row in enumerate(history)},
                    "elapsed": elapsed_before + clock.stop(),
                    "thermalization": thermalization,
                },
            )

        def record(step, log_data, drv) -> bool:
            stats = log_data["Energy"]
            history.append(
                {
                    "energy": float(np.real(stats.mean)) / n_sites,
                    "energy_error": float(stats.error_of_mean) / n_sites,
                    "energy_variance": float(stats.variance) / n_sites**2,
                }
            )
            drv.state.n_discard_per_chain = 0  # thermalized: one new sample per chain
            return True

        while driver.step_count < steps:  # never undoes steps already taken
            n = min(checkpoint_every, steps - driver.step_count)
            driver.run(n, callback=record, show_progress=False)
            save()
        entry = {
            **settings,
            "steps_done": int(driver.step_count),
            "history": history,
            "time_s": elapsed_before + clock.stop(),
            "thermalization": thermalization,
        }
        checkpoint.write_atomic(
            out / "params.msgpack",
            flax.serialization.to_bytes(driver.state.parameters["module"]),
        )
        record_summary = {**summary, "finetune": entry}
        checkpoint.write_atomic(
            out / "summary.json", (json.dumps(record_summary, indent=2) + "\n").encode()
        )
    return entry
