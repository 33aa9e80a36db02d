"""The SR modes compute NetKet's update; the float32 network agrees with float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from vitnqs.config import RunConfig, RunOptions
from vitnqs.loop import build_driver
from vitnqs.sr import KernelSR, kernel_blocks, symmetric_gram

TINY = RunConfig(attention="t5", L=4, J2=0.5, layers=1, d=8, heads=2, samples=48, steps=10)


@pytest.mark.parametrize("n, blocks", [(12, 4), (13, 4), (10, 3), (7, 1)])
def test_symmetric_gram_equals_product(n, blocks):
    matrix = jax.random.normal(jax.random.key(n), (n, 29), jnp.float64)
    np.testing.assert_allclose(symmetric_gram(matrix, blocks), matrix @ matrix.T, rtol=1e-13)


def test_kernel_blocks_by_size():
    # blocks of at least 256 rows of the 2M-row Jacobian, at most 4
    assert [kernel_blocks(M) for M in (32, 128, 256, 512, 1024, 6000)] == [1, 1, 2, 4, 4, 4]


def _update(mode, samples_from=None, blocks=None):
    driver = build_driver(TINY, RunOptions(sr_mode=mode, progress=False))
    if blocks is not None:
        driver._kernel_blocks = blocks
    driver.state.sample()
    if samples_from is not None:  # the very same samples for both drivers
        driver.state._samples = samples_from
    _, dp = driver.compute_loss_and_update()
    return driver, ravel_pytree(dp)[0]


@pytest.mark.parametrize("mode, blocks", [("symmetric", 1), ("symmetric", 3), ("onthefly", None)])
def test_modes_give_netket_explicit_update(mode, blocks):
    reference_driver, reference = _update("explicit")
    driver, update = _update(mode, samples_from=reference_driver.state.samples, blocks=blocks)
    assert isinstance(driver, KernelSR) == (mode == "symmetric")
    assert driver.on_the_fly == (mode == "onthefly")
    assert jnp.linalg.norm(update - reference) <= 1e-9 * jnp.linalg.norm(reference)


def test_float32_network_matches_float64():
    d64 = build_driver(TINY, RunOptions(progress=False))
    d32 = build_driver(TINY, RunOptions(network_dtype="float32", progress=False))
    sigma = d64.state.hilbert.random_state(jax.random.key(3), 64)
    variables = d64.state.variables
    log64 = d64.state._apply_fun(variables, sigma)
    log32 = d32.state._apply_fun(variables, sigma)
    assert log64.dtype == jnp.complex128 and log32.dtype == jnp.complex64
    # float32 rounding of O(10) activations: absolute errors of order 1e-6
    np.testing.assert_allclose(log32, log64, atol=2e-5)
    assert np.abs(log32 - log64).max() > 1e-9  # it really is float32 arithmetic
