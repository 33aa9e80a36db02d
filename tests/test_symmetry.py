"""Symmetrized ViT, ground-state sector, V-score and the evaluation of a finished run."""

import dataclasses
import json
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import pytest

from vitnqs.bench.symmetrization import symmetrization_cost
from vitnqs.config import RunConfig
from vitnqs.estimates import v_score
from vitnqs.evaluation import (
    SYMMETRIZED_EVAL_DISCARD,
    evaluate_symmetrized,
    plain_thermalized_configurations,
    warm_started_state,
)
from vitnqs.exact import exact_energy_moments, ground_state_sector, ground_state_vector
from vitnqs.finetune import finetune_symmetrized
from vitnqs.geometry import translate
from vitnqs.models import ATTENTIONS, ViT
from vitnqs.physics import (
    exact_ground_state_energy,
    hilbert_space,
    infinite_temperature_energy,
    j1j2_hamiltonian,
)
from vitnqs.rundir import PARAMS, load_run, vouch
from vitnqs.symmetry import (
    SymmetrizedWF,
    patch_coset_permutations,
    space_group_permutations,
    symmetrize,
)

L = 4


def _tiny_vit(attention="t5"):
    return ViT(attention=attention, layers=1, d=8, heads=2, b=2)


def _params(model, L, seed):
    """Initial parameters plus noise: no accidental symmetry from zero biases."""
    params = model.init(jax.random.key(seed), jnp.ones((1, L * L)))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _configs(L, n, seed):
    return np.asarray(hilbert_space(L * L).random_state(jax.random.key(seed), n))


def _same_log_psi(a, b, tol):
    """Equal real parts and equal phases modulo 2 pi."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a.real, b.real, atol=tol, rtol=0)
    np.testing.assert_allclose(np.angle(np.exp(1j * (a.imag - b.imag))), 0, atol=tol)


# ---- the ViT's own symmetry, on which the coset sum relies ----------------------------


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("size", [4, 6])
def test_vit_invariant_under_whole_patch_translations(attention, size):
    # at L = 4 the patch grid is 2 x 2: displacements +1 and -1 coincide on it
    model = _tiny_vit(attention)
    params = _params(model, size, seed=1)
    sigma = _configs(size, 6, seed=2)
    log_psi = model.apply({"params": params}, sigma)
    for dx in range(0, size, 2):
        for dy in range(0, size, 2):
            moved = model.apply({"params": params}, translate(sigma, size, dx, dy))
            _same_log_psi(moved, log_psi, 1e-11)
    # and not under a one-site shift: the coset sum has something to do
    shifted = model.apply({"params": params}, translate(sigma, size, 1, 0))
    assert np.max(np.abs(np.asarray(shifted - log_psi))) > 1e-3


def test_coset_representatives_are_distinct_and_cover_the_space_group():
    cosets = patch_coset_permutations(L, 2)
    full = space_group_permutations(L)
    assert cosets.shape == (32, 16) and full.shape == (128, 16)
    patch_translations = [
        translate(np.arange(16)[None], L, dx, dy)[0] for dx in (0, 2) for dy in (0, 2)
    ]
    # every space-group element is a coset representative followed by a patch translation
    products = {tuple(c[t]) for c in cosets for t in patch_translations}
    assert products == {tuple(g) for g in full}


# ---- the symmetrized wave function -------------------------------------------------------


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_coset_sum_equals_full_space_group_projection(attention):
    model = _tiny_vit(attention)
    variables = {"params": {"module": _params(model, L, seed=3)}}
    sigma = _configs(L, 8, seed=4)
    cosets = symmetrize(model, L).apply(variables, sigma)
    full = symmetrize(model, L, group="space_group").apply(variables, sigma)
    _same_log_psi(cosets, full, 1e-11)


def test_symmetrized_invariant_under_space_group_and_spin_inversion():
    model = symmetrize(_tiny_vit("decoupled"), L)
    variables = {"params": {"module": _params(_tiny_vit("decoupled"), L, seed=5)}}
    sigma = _configs(L, 5, seed=6)
    log_psi = model.apply(variables, sigma)
    images = np.concatenate(
        [sigma[:, perm] for perm in space_group_permutations(L)]
        + [-sigma[:, perm] for perm in space_group_permutations(L)]
    )
    moved = np.asarray(jax.jit(model.apply)(variables, images)).reshape(-1, len(sigma))
    for row in moved:
        _same_log_psi(row, log_psi, 1e-11)
    # the plain network is not invariant: the check above can fail
    plain = {"params": variables["params"]["module"]}
    flipped = _tiny_vit("decoupled").apply(plain, -sigma)
    assert np.max(np.abs(np.asarray(flipped - _tiny_vit("decoupled").apply(plain, sigma)))) > 1e-3


class _BondJastrow(nn.Module):
    """``log psi = a sum_<ij> s_i s_j``: invariant under the space group and spin inversion."""

    edges: tuple

    @nn.compact
    def __call__(self, x):
        a = self.param("a", nn.initializers.constant(0.3 - 0.7j), (), jnp.complex128)
        i, j = np.asarray(self.edges).T
        return a * jnp.sum(x[..., i] * x[..., j], axis=-1)


def test_wrapping_an_invariant_function_changes_nothing():
    edges = tuple(map(tuple, nk.graph.Hypercube(L, n_dim=2, pbc=True).edges()))
    plain = _BondJastrow(edges)
    wrapped = SymmetrizedWF(plain, nk.utils.HashableArray(space_group_permutations(L)))
    params = plain.init(jax.random.key(0), jnp.ones((1, 16)))["params"]
    sigma = _configs(L, 7, seed=7)
    _same_log_psi(wrapped.apply({"params": {"module": params}}, sigma),
                  plain.apply({"params": params}, sigma), 1e-12)  # fmt: skip


# ---- exact diagonalization: the ground state's sector -----------------------------------


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_4x4_ground_state_is_in_the_trivial_sector(J2):
    sector = ground_state_sector(L, J2)
    assert sector["trivial"], sector
    assert sector["gap"] > 1e-3  # non-degenerate: the expectations are its eigenvalues
    assert sector["energy_per_site"] == pytest.approx(exact_ground_state_energy(L, J2), abs=1e-10)


# ---- energies of the symmetrized network ------------------------------------------------


def _full_sum(model, params, J2):
    hamiltonian = j1j2_hamiltonian(L, J2)
    states = hamiltonian.hilbert.all_states()
    log_psi = np.asarray(jax.jit(model.apply)({"params": params}, states))
    psi = np.exp(log_psi - log_psi.real.max())
    return hamiltonian, psi


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_symmetrized_exact_energy_is_never_below_ed(J2):
    model = symmetrize(_tiny_vit("factored"), L)
    params = {"module": _params(_tiny_vit("factored"), L, seed=8)}
    hamiltonian, psi = _full_sum(model, params, J2)
    energy, variance = exact_energy_moments(hamiltonian, psi, L * L)
    e0 = exact_ground_state_energy(L, J2)
    assert energy >= e0 - 1e-12 and variance > 0
    if J2 == 0:
        return
    # NetKet's full sum over the 12,870 states agrees with the sparse-matrix one
    vstate = nk.vqs.FullSumState(hamiltonian.hilbert, model, variables={"params": params})
    assert float(vstate.expect(hamiltonian).mean.real) / 16 == pytest.approx(energy, abs=1e-12)


@pytest.mark.slow  # about 110 s on one shared core
def test_monte_carlo_symmetrized_energy_agrees_with_full_sum(tmp_path):
    model = _tiny_vit("t5")
    params = _params(model, L, seed=9)
    (tmp_path / "params.msgpack").write_bytes(flax.serialization.to_bytes(params))
    # a run's summary holds every field of its RunConfig (load_run reads them all)
    config = dataclasses.asdict(RunConfig("t5", L, 0.5, 1, d=8, heads=2, b=2))
    summary = {"config": config, "energy": -0.3, "energy_error": 0.01, "energy_variance": 0.02,
               "median_step_time_s": 0.5, "files": vouch(tmp_path, None, (PARAMS,))}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    result = evaluate_symmetrized(tmp_path, samples=1024, seed=0)

    hamiltonian, psi = _full_sum(symmetrize(model, L), {"module": params}, 0.5)
    exact, _ = exact_energy_moments(hamiltonian, psi, L * L)
    assert abs(result["energy"] - exact) < 4 * result["energy_error"], (result, exact)
    assert result["plain_v_score"] == pytest.approx(16 * 0.02 / 0.09)
    assert result["rel_error"] == pytest.approx(
        abs(result["energy"] / exact_ground_state_energy(L, 0.5) - 1)
    )
    assert result["n_ops"] == 64 and result["eval_time_in_steps"] > 0
    assert result["n_chains"] == 256 and result["samples_per_chain"] == 4
    assert (
        result["warm_start_sweeps"] == 64
        and result["n_discard_per_chain"] == SYMMETRIZED_EVAL_DISCARD
    )


def test_symmetrized_chains_start_from_the_plain_networks_thermalized_ones():
    model = _tiny_vit("factored")
    params = _params(model, L, seed=14)
    n_chains, seed, sweeps = 64, 3, 16
    vstate = warm_started_state(
        model, params, L, n_chains, seed, n_samples=n_chains, n_discard_per_chain=0,
        warm_start_sweeps=sweeps,
    )  # fmt: skip
    warm_key, _ = jax.random.split(jax.random.key(seed))
    warm = np.asarray(
        plain_thermalized_configurations(model, params, L, n_chains, sweeps, warm_key)
    )
    np.testing.assert_array_equal(np.asarray(vstate.sampler_state.σ), warm)
    # MCState.sample resets the sampler first: the exchange sampler keeps the chains
    reset = vstate.sampler.reset(vstate.model, vstate.variables, vstate.sampler_state)
    np.testing.assert_array_equal(np.asarray(reset.σ), warm)
    # the sweeps sampled |psi|^2 of the plain network: far more probable than the random
    # starting configurations (measured 4.19 +- 0.11 against 2.37 +- 0.19)
    start = plain_thermalized_configurations(model, params, L, n_chains, 0, warm_key)
    log_prob = {
        name: 2 * np.asarray(model.apply({"params": params}, sigma)).real
        for name, sigma in (("warm", warm), ("start", start))
    }
    assert (warm != np.asarray(start)).any(axis=1).mean() > 0.9
    assert log_prob["warm"].mean() > log_prob["start"].mean() + 1.0, log_prob
    assert np.all(np.abs(warm.sum(axis=1)) == 0)  # still Sz = 0


def test_load_run_restores_the_trained_network(tmp_path):
    model = _tiny_vit("decoupled")
    params = _params(model, L, seed=11)
    (tmp_path / "params.msgpack").write_bytes(flax.serialization.to_bytes(params))
    # a run's summary holds every field of its RunConfig
    config = dataclasses.asdict(RunConfig("decoupled", L, 0.0, 1, d=8, heads=2, b=2))
    files = vouch(tmp_path, None, (PARAMS,))  # what a summary vouches for
    (tmp_path / "summary.json").write_text(json.dumps({"config": config, "files": files}))
    summary, loaded_model, loaded = load_run(tmp_path)
    sigma = _configs(L, 4, seed=12)
    assert loaded_model == model and summary["config"] == config
    np.testing.assert_array_equal(
        loaded_model.apply({"params": loaded}, sigma), model.apply({"params": params}, sigma)
    )


# ---- V-score and infinite-temperature energy --------------------------------------------


def test_v_score_against_hand_computed_value():
    # N = 16, E = 16 * (-0.5) = -8, Var = 16**2 * 0.001 = 0.256, E_inf = 16 * (-0.05) = -0.8
    # V = 16 * 0.256 / (-8 + 0.8)**2 = 4.096 / 51.84
    assert v_score(-0.5, 0.001, 16, -0.05) == pytest.approx(4.096 / 51.84, rel=1e-14)
    assert v_score(-0.5, 0.001, 16) == pytest.approx(0.064, rel=1e-14)


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_v_score_of_the_exact_ground_state_vanishes(J2):
    hamiltonian = j1j2_hamiltonian(L, J2)
    _, psi = ground_state_vector(L, J2)
    energy, variance = exact_energy_moments(hamiltonian, psi, L * L)
    assert energy == pytest.approx(exact_ground_state_energy(L, J2), abs=1e-10)
    assert v_score(energy, variance, L * L, infinite_temperature_energy(L, J2)) < 1e-8
    # a state that is not an eigenstate has a V-score far from 0 through the same code
    noisy = psi + 0.1 * np.random.default_rng(0).normal(size=psi.shape) / math.sqrt(len(psi))
    energy, variance = exact_energy_moments(hamiltonian, noisy, L * L)
    assert v_score(energy, variance, L * L) > 1e-4


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_infinite_temperature_energy_is_the_trace(J2):
    sector = j1j2_hamiltonian(L, J2).to_sparse()
    assert infinite_temperature_energy(L, J2, "sz0") * 16 == pytest.approx(
        sector.diagonal().sum() / sector.shape[0], abs=1e-13
    )
    assert infinite_temperature_energy(L, J2, "sz0") == pytest.approx(-(1 + J2) / 30)
    full_space = nk.hilbert.Spin(0.5, 16)
    graph = nk.graph.Hypercube(L, n_dim=2, pbc=True, max_neighbor_order=2)
    full = nk.operator.Heisenberg(full_space, graph, J=[0.25, 0.25 * J2]).to_sparse()
    assert infinite_temperature_energy(L, J2) == 0.0
    assert abs(full.diagonal().sum()) / full.shape[0] < 1e-12


def test_symmetrization_cost_reports_equal_states():
    model = _tiny_vit("factored")
    cost = symmetrization_cost(model, _params(model, L, 10), L, batch=16, repeats=1)
    assert cost["n_cosets"] == 64 and cost["n_space_group"] == 256
    assert cost["max_log_psi_diff"] < 1e-11


# ---- symmetrized fine-tuning --------------------------------------------------------------


def _fake_run(path, attention="factored", seed=13):
    model = _tiny_vit(attention)
    params = _params(model, L, seed=seed)
    path.mkdir()
    (path / "params.msgpack").write_bytes(flax.serialization.to_bytes(params))
    config = dataclasses.asdict(
        RunConfig(attention, L, 0.0, 1, d=8, heads=2, b=2, samples=32, diag_shift=1e-3)
    )
    summary = {"config": config, "energy": -0.6, "energy_error": 0.01, "energy_variance": 0.01,
               "files": vouch(path, None, (PARAMS,))}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.mark.slow  # about 40 s: three drivers compile
def test_finetuning_resumes_where_it_stopped(tmp_path):
    run = _fake_run(tmp_path / "run")
    options = {"lr": 0.01, "seed": 3, "checkpoint_every": 1, "n_thermalize": 2}
    straight = finetune_symmetrized(run, tmp_path / "a", steps=2, **options)
    finetune_symmetrized(run, tmp_path / "b", steps=1, **options)
    resumed = finetune_symmetrized(run, tmp_path / "b", steps=2, **options)
    assert straight["steps_done"] == resumed["steps_done"] == 2
    assert straight["history"] == resumed["history"]
    _, _, a = load_run(tmp_path / "a")
    _, _, b = load_run(tmp_path / "b")
    _, _, start = load_run(run)
    leaves = [jax.tree_util.tree_leaves(tree) for tree in (a, b, start)]
    for x, y in zip(leaves[0], leaves[1], strict=True):
        np.testing.assert_array_equal(x, y)
    # the parameters moved: the steps were taken on the symmetrized network
    assert any(not np.allclose(x, s) for x, s in zip(leaves[0], leaves[2], strict=True))
