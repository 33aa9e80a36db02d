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
from vitnqs.estimates import (
    OLDER_EVALUATION,
    Evaluation,
    chain_estimates,
    evaluation_estimates,
    unreliable,
    v_score,
)
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


TAIL_PROBE_POWER = 0.5
"""The tail probe samples ``|psi|**TAIL_PROBE_POWER`` (NetKet's ``machine_pow``) and
reweights by ``|psi|**(2 - TAIL_PROBE_POWER)`` (:func:`evaluate`). Of the powers 2, 1.5,
1, 0.5 and 0, 0.5 gave the most precise variance, or within 20% of it, on each of twelve
trained 4 x 4 networks (exact sums, docs/error_bars.md): lower powers spend the samples
on configurations of negligible weight, higher ones miss the tail."""

TAIL_PROBE_DISCARD = 16
"""Sweeps on ``|psi|**TAIL_PROBE_POWER`` discarded per chain before the tail probe's
first samples, the chains starting from the ``|psi|**2`` ones."""

MAX_PROBE_ROUNDS = 8
"""Rounds of :data:`~vitnqs.plan.EVAL_CHAIN_LENGTH` probe samples per chain, at most,
until the variance is known to :data:`vitnqs.estimates.VARIANCE_TARGET`; each costs
about what the ``|psi|**2`` evaluation costs."""


def _local_energies(vstate: nk.vqs.MCState, hamiltonian) -> np.ndarray:
    """Local energies of the state's current samples, shape ``(chains, samples per chain)``."""
    estimators = vstate.local_estimators(hamiltonian)
    return np.asarray(getattr(estimators, "data", estimators)).reshape(vstate.sampler.n_chains, -1)


def evaluate(
    vstate: nk.vqs.MCState,
    hamiltonian,
    n_sites: int,
    e_inf_per_site: float = 0.0,
    *,
    seed: int = 0,
    max_probe_rounds: int = MAX_PROBE_ROUNDS,
) -> tuple[Evaluation, nk.stats.Stats]:
    """Energy, variance and V-score of a state from fresh samples, with uncertainties.

    The energy comes from ``vstate``'s own samples of ``|psi|**2`` (its ``n_samples``
    and ``n_discard_per_chain``). The variance comes from the tail probe: chains that
    continue from those, sample ``|psi|**TAIL_PROBE_POWER`` and are reweighted, in
    rounds until the variance is known to the target or :data:`MAX_PROBE_ROUNDS`
    rounds are spent (:func:`vitnqs.estimates.evaluation_estimates` says why).

    Args:
        vstate: the sampled state, with its samples per evaluation and discarded sweeps.
        hamiltonian: the operator.
        n_sites: ``N``.
        e_inf_per_site: the V-score's infinite-temperature energy per site.
        seed: seed of the probe's sampler.
        max_probe_rounds: rounds of the tail probe at most.

    Returns:
        The evaluation, and NetKet's statistics of the ``|psi|**2`` samples (``R_hat``,
        ``tau_corr``).

    """
    vstate.reset()
    energies = _local_energies(vstate, hamiltonian)
    plain = chain_estimates(energies, n_sites)
    chains = energies.shape[0]
    probe_state = nk.vqs.MCState(
        vstate.sampler.replace(machine_pow=TAIL_PROBE_POWER),
        vstate.model,
        variables=vstate.variables,
        n_samples=vstate.n_samples,
        n_discard_per_chain=TAIL_PROBE_DISCARD,
        chunk_size=vstate.chunk_size,
        sampler_seed=seed,
    )
    probe_state.sampler_state = probe_state.sampler_state.replace(σ=vstate.sampler_state.σ)
    probe_energies, log_weights = [], []
    for _ in range(max_probe_rounds):
        probe_state.reset()
        probe_energies.append(_local_energies(probe_state, hamiltonian))
        samples = probe_state.samples.reshape(-1, probe_state.samples.shape[-1])
        log_psi = np.real(np.asarray(probe_state.log_value(samples))).reshape(chains, -1)
        log_weights.append((2 - TAIL_PROBE_POWER) * log_psi)
        probe = chain_estimates(
            np.concatenate(probe_energies, axis=1), n_sites, np.concatenate(log_weights, axis=1)
        )
        if not unreliable(probe):
            break
        probe_state.n_discard_per_chain = 0  # the chains go on: the bootstrap keeps them whole
    stats = nk.stats.statistics(energies)
    return evaluation_estimates(plain, probe, n_sites, e_inf_per_site), stats


def final_evaluation(vstate: nk.vqs.MCState, hamiltonian, config) -> Evaluation:
    """A run's last act: :func:`evaluate` on fresh samples of its state.

    :data:`~vitnqs.plan.EVAL_CHAIN_LENGTH` samples of ``|psi|**2`` per chain from the
    run's chains, after :data:`PLAIN_EVAL_DISCARD` discarded sweeps, then the tail probe.
    The V-score's ``E_inf`` is 0 (the V-score table's convention).
    """
    vstate.n_discard_per_chain = PLAIN_EVAL_DISCARD
    vstate.n_samples = EVAL_CHAIN_LENGTH * config.samples
    evaluation, _ = evaluate(vstate, hamiltonian, config.n_sites, seed=config.seed)
    return evaluation


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
        squared; the variance from the tail probe, :func:`evaluate`),
        ``energy_variance_error``, ``energy_variance_sampled``, ``v_score``,
        ``v_score_error``, ``unreliable`` (why, or ""), ``probe_samples``, ``r_hat``,
        ``tau_corr``, ``acceptance``; ``plain_energy``, ``plain_energy_error``,
        ``plain_energy_variance``, ``plain_v_score``, ``plain_v_score_error``,
        ``plain_unreliable`` (from ``summary.json``); ``reference_energy``,
        ``rel_error``, ``plain_rel_error`` (NaN without a reference); ``e_inf``,
        ``e_inf_convention``, ``n_ops``, ``samples``, ``n_chains``,
        ``samples_per_chain``, ``warm_start_sweeps``, ``n_discard_per_chain``,
        ``seed``, ``eval_time_s`` (wall time including compilation and the warm
        start), ``median_step_time_s`` and ``eval_time_in_steps`` (``eval_time_s`` over
        the plain run's median step time; NaN if unknown).

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
    e_inf = infinite_temperature_energy(L, J2, e_inf_convention)
    result, stats = evaluate(vstate, j1j2_hamiltonian(L, J2), n_sites, e_inf, seed=seed)
    elapsed = clock.stop()

    reference = reference_energy(L, J2)
    step_time = summary.get("median_step_time_s")
    plain_v = (
        v_score(summary["energy"], summary["energy_variance"], n_sites, e_inf)
        if summary.get("energy_variance") is not None
        else math.nan
    )
    return {
        "energy": result.energy,
        "energy_error": result.energy_error,
        "energy_variance": result.variance,
        "energy_variance_error": result.variance_error,
        "energy_variance_sampled": result.sampled_variance,
        "v_score": result.v_score,
        "v_score_error": result.v_score_error,
        "unreliable": result.unreliable,
        "probe_samples": result.probe_samples,
        "r_hat": float(stats.R_hat),
        "tau_corr": float(stats.tau_corr),
        "acceptance": float(vstate.sampler_state.acceptance),
        "plain_energy": summary.get("energy"),
        "plain_energy_error": summary.get("energy_error"),
        "plain_energy_variance": summary.get("energy_variance"),
        "plain_v_score": plain_v,
        "plain_v_score_error": (
            plain_v * summary["energy_variance_error"] / summary["energy_variance"]
            if summary.get("energy_variance_error") is not None
            else math.nan
        ),
        "plain_unreliable": summary.get("eval_unreliable", OLDER_EVALUATION),
        "reference_energy": None if reference is None else reference.energy,
        "rel_error": relative_error(result.energy, reference),
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
