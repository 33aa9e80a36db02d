"""Estimates of a final evaluation: errors that respect the chains, the tail probe's
reweighting, the V-score's uncertainty and the unreliable mark, against hand-computed
values and known distributions."""

import math

import netket as nk
import numpy as np
import pytest

from vitnqs.estimates import (
    VARIANCE_TARGET,
    ChainEstimates,
    chain_estimates,
    evaluation_estimates,
    unreliable,
    v_score,
)

N = 16


def test_independent_samples_give_the_textbook_values():
    x = np.random.default_rng(1).normal(-8.0, 2.0, size=(500, 4))
    est = chain_estimates(x, N)
    assert est.energy == pytest.approx(x.mean() / N, rel=1e-14)
    assert est.variance == pytest.approx(x.var() / N**2, rel=1e-12)
    assert est.samples == 2000
    # independent samples: the chains' batch means give sqrt(Var / n), and the variance
    # of a normal sample is known to sqrt(2 / n) (bootstrap noise ~4%)
    assert est.energy_error == pytest.approx(math.sqrt(x.var() / 2000) / N, rel=0.1)
    assert est.variance_relative_error == pytest.approx(math.sqrt(2 / 2000), rel=0.15)


def test_correlated_chains_are_kept_whole():
    # every chain repeats one value: 8 samples per chain are worth one
    values = np.random.default_rng(2).normal(0.0, 1.0, size=64)
    x = np.repeat(values[:, None], 8, axis=1)
    est = chain_estimates(x, 1)
    assert est.energy_error == pytest.approx(values.std() / math.sqrt(64), rel=1e-12)
    assert est.energy_error > 2.5 * math.sqrt(x.var() / x.size)  # sqrt(8) x the naive one
    assert est.variance_relative_error == pytest.approx(math.sqrt(2 / 64), rel=0.3)


def test_complex_local_energies_count_their_imaginary_parts_as_netket_does():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 4)) + 1j * rng.normal(scale=0.5, size=(32, 4))
    est = chain_estimates(x, 2)
    stats = nk.stats.statistics(x)
    assert est.energy == pytest.approx(float(np.real(stats.mean)) / 2, rel=1e-12)
    assert est.variance == pytest.approx(float(stats.variance) / 4, rel=1e-12)
    # the energy is the real part: its error from the real parts of the chain means
    assert est.energy_error == pytest.approx(np.real(x.mean(axis=1)).std() / math.sqrt(32) / 2)


def test_weighted_samples_estimate_the_target_distribution():
    # a rare large value that holds 92% of the variance: p samples it once in 1e4, the
    # proposal q once in 10
    values, p, q = (
        np.array([0.0, 1.0, 100.0]),
        np.array([0.9, 0.0999, 1e-4]),
        np.array([0.6, 0.3, 0.1]),
    )
    mean = (p * values).sum()
    variance = (p * (values - mean) ** 2).sum()
    draws = np.random.default_rng(4).choice(3, size=(1000, 4), p=q)
    est = chain_estimates(values[draws], 1, np.log(p / q)[draws])
    assert abs(est.energy - mean) < 3 * est.energy_error
    assert abs(est.variance - variance) < 3 * est.variance_error
    assert est.variance_relative_error < 0.05
    # the same number of samples from p itself: the rare value is missed
    plain = chain_estimates(values[np.random.default_rng(4).choice(3, size=(1000, 4), p=p)], 1)
    assert plain.variance < 0.2 * variance


def test_evaluation_takes_the_probe_variance_and_scales_the_energy_error():
    plain = ChainEstimates(-0.5, 0.001, 0.002, 0.0002, 512)
    probe = ChainEstimates(-0.49, 0.003, 0.008, 0.0008, 1024)
    result = evaluation_estimates(plain, probe, N)
    assert result.energy == -0.5 and result.variance == 0.008
    assert result.energy_error == pytest.approx(0.002)  # x sqrt(0.008 / 0.002)
    assert result.v_score == pytest.approx(v_score(-0.5, 0.008, N)) == pytest.approx(0.512)
    assert result.v_score_error == pytest.approx(0.0512)
    assert result.sampled_variance == 0.002 and result.unreliable == ""
    assert result.fields()["eval_probe_samples"] == 1024
    # a probe that finds less variance never shrinks the energy's error bar
    assert evaluation_estimates(plain, probe.__class__(-0.5, 0.001, 0.001, 1e-4, 512), N
                                ).energy_error == 0.001  # fmt: skip


def test_a_variance_known_worse_than_the_target_is_marked():
    good = ChainEstimates(-0.5, 0.001, 0.01, 0.01 * VARIANCE_TARGET, 512)
    bad = ChainEstimates(-0.5, 0.001, 0.01, 0.01 * 0.35, 4096)
    assert unreliable(good) == ""
    why = unreliable(bad)
    assert "35%" in why and f"{VARIANCE_TARGET:.0%}" in why and "4096 samples" in why
    assert evaluation_estimates(good, bad, N).unreliable == why


def test_too_few_chains_is_refused():
    with pytest.raises(ValueError, match="chains >= 2"):
        chain_estimates(np.ones((1, 8)), N)
