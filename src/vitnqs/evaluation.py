"""Evaluations of a trained network on fresh samples: the plain and the symmetrized one.

:func:`final_evaluation` is a run's last act (its ``summary.json`` energy);
:func:`evaluate_symmetrized` evaluates a finished run's network projected on the
lattice's symmetries (beyond the paper, ``vitnqs symmetrize``). Both keep
:data:`~vitnqs.plan.EVAL_CHAIN_LENGTH` samples per chain from the run's ``M`` chains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import netket as nk
import numpy as np

from vitnqs import measure
from vitnqs.estimates import EnergyPerSite, per_site, v_score
from vitnqs.physics import exchange_sampler, infinite_temperature_energy, j1j2_hamiltonian
from vitnqs.plan import EVAL_CHAIN_LENGTH, symmetrized_samples
from vitnqs.references import reference_energy, relative_error
from vitnqs.rundir import load_run
from vitnqs.symmetry import symmetrize

PLAIN_EVAL_DISCARD = 4
"""Sweeps discarded per chain before the plain network's final evaluation."""

WARM_START_SWEEPS = 64
"""Sweeps of the plain network that thermalize the chains before the symmetrized network
takes them over (:func:`warm_started_state`). A plain sweep costs about ``1 / n_ops`` of
a symmetrized one (``n_ops = 64`` for ``b = 2``): all of them cost about one
symmetrized sweep."""

SYMMETRIZED_EVAL_DISCARD = 2
"""Sweeps of the symmetrized network discarded per chain after the warm start, before
the kept samples of :func:`evaluate_symmetrized` (and before the first fine-tuning step
of :func:`finetune_symmetrized`). Few suffice: the plain and the symmetrized
distributions are close (total variation 0.08 on a trained 4 x 4 run, where keeping the
plain network's samples unchanged would bias the energy by +1.9e-4, a seventh of the
error bar of 512 samples), and each of these sweeps costs ``n_ops`` plain ones."""


def final_evaluation(vstate: nk.vqs.MCState, hamiltonian, config) -> tuple[EnergyPerSite, int]:
    """Energy per site, its error and variance on fresh samples of a run's state.

    :data:`~vitnqs.plan.EVAL_CHAIN_LENGTH` samples per chain from the run's chains,
    after :data:`PLAIN_EVAL_DISCARD` discarded sweeps.

    Returns:
        The estimates and the number of samples.

    """
    vstate.n_discard_per_chain = PLAIN_EVAL_DISCARD
    vstate.n_samples = EVAL_CHAIN_LENGTH * config.samples
    vstate.reset()
    return per_site(vstate.expect(hamiltonian), config.n_sites), int(vstate.n_samples)


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
    n_discard_per_chain: int = SYMMETRIZED_EVAL_DISCARD,
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
    energy, error, variance = per_site(stats, n_sites)
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
