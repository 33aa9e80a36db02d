"""Monte Carlo estimates of a state's energy: per-site values, the V-score, their errors.

The one place where the statistics of the local energy become the per-site numbers that
runs, pilots, evaluations and tables report: :func:`per_site` reads NetKet's statistics
of an optimization step; :func:`chain_estimates` gives the energy and variance of
Markov-chain samples, each with an uncertainty that respects the chains (a
bootstrap over whole chains) and the variance taken from a tail probe
(:func:`evaluation_estimates`); :func:`unreliable` says when the variance is not known
well enough to be quoted. Imports neither JAX nor NetKet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

VARIANCE_TARGET = 0.2
"""Relative uncertainty of the variance (and so of the V-score) that a final evaluation
aims at; above it, the value is marked unreliable (:func:`unreliable`)."""

OLDER_EVALUATION = "no uncertainty: a final evaluation of an older version"
"""Why a V-score from a summary that predates its uncertainty is not to be trusted."""

BOOTSTRAP_RESAMPLES = 400
"""Resamplings of the chains in :func:`chain_estimates` (a relative uncertainty of about
``1/sqrt(2 * 400) = 4%`` on each error bar)."""


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


@dataclasses.dataclass(frozen=True)
class ChainEstimates:
    """Mean and variance per site of Markov-chain samples, each with its uncertainty.

    Uncertainties from a bootstrap over whole chains (the energy's, without weights, is
    the batch-means error over the chains, NetKet's ``error_of_mean``).
    """

    energy: float
    """``<E_loc> / N`` (weighted, with weights)."""
    energy_error: float
    """Its uncertainty."""
    variance: float
    """``<|E_loc - <E_loc>|^2> / N**2`` (weighted, with weights)."""
    variance_error: float
    """Its uncertainty."""
    samples: int
    """Samples (chains x samples per chain)."""

    @property
    def variance_relative_error(self) -> float:
        """``variance_error / variance`` (infinite for a zero variance)."""
        return self.variance_error / self.variance if self.variance > 0 else float("inf")


def chain_estimates(
    local_energies: np.ndarray,
    n_sites: int,
    log_weights: np.ndarray | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> ChainEstimates:
    """Mean and variance per site of local energies sampled by Markov chains.

    Whole chains are resampled with replacement, so that the correlations inside a chain
    are kept. With ``log_weights`` the samples came from another distribution than
    ``|psi|^2`` and the estimates are importance-weighted (self-normalized): the tail
    probe of :func:`evaluation_estimates`.

    Args:
        local_energies: total local energies ``E_loc``, shape ``(chains, samples per
            chain)``, at least two chains; complex ones count with their imaginary parts
            in the variance, as in ``netket.stats.statistics``.
        n_sites: ``N``.
        log_weights: log of the (unnormalized) weight of each sample, same shape.
        resamples: bootstrap resamplings of the chains.
        seed: seed of the resampling.

    """
    data = np.asarray(local_energies) / n_sites
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"local_energies: need shape (chains >= 2, samples), got {data.shape}")
    chains = data.shape[0]
    if log_weights is None:
        weights = np.ones(data.shape)
    else:
        log_weights = np.asarray(log_weights, dtype=float).reshape(data.shape)
        weights = np.exp(log_weights - log_weights.max())
    center = np.sum(weights * data) / weights.sum()
    centered = data - center  # sums of centred values keep the variance's digits
    per_chain = np.stack(
        [weights.sum(axis=1), (weights * centered).sum(axis=1),
         (weights * np.abs(centered) ** 2).sum(axis=1)], axis=1,
    )  # fmt: skip
    counts = np.random.default_rng(seed).multinomial(chains, np.full(chains, 1 / chains), resamples)
    total, shift, square = (counts @ per_chain).T
    shifts = shift / total
    # Var = <|E_loc - <E_loc>|^2>: the imaginary parts count (NetKet's variance)
    variances = np.real(square / total) - np.abs(shifts) ** 2
    weight, shift, square = per_chain.sum(axis=0)
    variance = float(np.real(square / weight) - np.abs(shift / weight) ** 2)
    if log_weights is None:
        energy_error = float(np.sqrt(np.var(np.real(data.mean(axis=1))) / chains))
    else:
        energy_error = float(np.std(np.real(shifts)))
    return ChainEstimates(
        energy=float(np.real(center + shift / weight)),
        energy_error=energy_error,
        variance=variance,
        variance_error=float(np.std(variances)),
        samples=data.size,
    )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A final evaluation: energy, variance and V-score per site with uncertainties.

    The energy comes from samples of ``|psi|^2``; the variance from the tail probe,
    samples of a flatter power of ``|psi|``, reweighted (:func:`evaluation_estimates`).
    """

    energy: float
    """``<H> / N``."""
    energy_error: float
    """Error of the mean over the chains, scaled up by ``sqrt(variance / sampled
    variance)`` when the probe finds more variance than the ``|psi|^2`` samples show."""
    variance: float
    """``Var(H) / N**2``, from the tail probe."""
    variance_error: float
    """Its uncertainty."""
    v_score: float
    """``N Var(H) / (<H> - E_inf)**2`` (:func:`v_score`)."""
    v_score_error: float
    """Its uncertainty (the variance's; the energy's is negligible beside it)."""
    sampled_variance: float
    """The variance of the ``|psi|^2`` samples alone (the estimate of older versions)."""
    samples: int
    """Samples of ``|psi|^2``."""
    probe_samples: int
    """Samples of the tail probe."""
    unreliable: str
    """Why the variance, the V-score and the energy's error bar are not to be trusted,
    or ``""`` (:func:`unreliable`)."""

    def fields(self) -> dict[str, Any]:
        """The fields of a run's ``summary.json``.

        ``energy``, ``energy_error``, ``energy_variance``, ``energy_variance_error``,
        ``v_score``, ``v_score_error``, ``energy_variance_sampled``, ``eval_samples``,
        ``eval_probe_samples``, ``eval_unreliable``.
        """
        return {
            "energy": self.energy,
            "energy_error": self.energy_error,
            "energy_variance": self.variance,
            "energy_variance_error": self.variance_error,
            "v_score": self.v_score,
            "v_score_error": self.v_score_error,
            "energy_variance_sampled": self.sampled_variance,
            "eval_samples": self.samples,
            "eval_probe_samples": self.probe_samples,
            "eval_unreliable": self.unreliable,
        }


def evaluation_estimates(
    plain: ChainEstimates,
    probe: ChainEstimates,
    n_sites: int,
    e_inf_per_site: float = 0.0,
    target: float = VARIANCE_TARGET,
) -> Evaluation:
    """A final evaluation from ``|psi|^2`` samples and the tail probe's.

    The local energies of a trained network have a heavy tail on configurations where
    ``|psi|`` is small: on a trained 4 x 4 Decoupled network, 87% of the variance comes
    from configurations 20 standard deviations out, which ``|psi|^2`` samples with
    probability 5e-4, so that 512 samples mostly miss them and the variance comes out
    several times too small, its bootstrap error too. Samples of ``|psi|^0.5`` visit them
    260 times as often; reweighted by ``|psi|^1.5`` they give the same variance with 1,400
    times fewer samples for the same precision (exact sums: docs/error_bars.md).

    Args:
        plain: estimates from samples of ``|psi|^2``.
        probe: weighted estimates from the tail probe
            (:func:`vitnqs.evaluation.evaluate`).
        n_sites: ``N``.
        e_inf_per_site: the V-score's infinite-temperature energy per site.
        target: the variance's relative uncertainty above which the evaluation is
            marked unreliable.

    """
    scale = math.sqrt(max(1.0, probe.variance / plain.variance)) if plain.variance > 0 else 1.0
    score = v_score(plain.energy, probe.variance, n_sites, e_inf_per_site)
    return Evaluation(
        energy=plain.energy,
        energy_error=plain.energy_error * scale,
        variance=probe.variance,
        variance_error=probe.variance_error,
        v_score=score,
        v_score_error=score * probe.variance_relative_error,
        sampled_variance=plain.variance,
        samples=plain.samples,
        probe_samples=probe.samples,
        unreliable=unreliable(probe, target),
    )


def unreliable(estimates: ChainEstimates, target: float = VARIANCE_TARGET) -> str:
    """Why a variance, and the V-score and error bar built on it, are not to be trusted.

    ``""`` when its relative uncertainty is at most ``target``.
    """
    relative = estimates.variance_relative_error
    if relative <= target:
        return ""
    return (
        f"variance known to +-{relative:.0%} (target {target:.0%}) from "
        f"{estimates.samples} samples: a heavy tail of the local energies"
    )
