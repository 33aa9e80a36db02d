"""Memory and the run plan: the estimate against arrays and peaks, the SR mode, the refusal."""

import math

import jax
import numpy as np
import pytest

from vitnqs import resources
from vitnqs.config import ATTENTIONS, RunConfig, RunOptions, n_parameters
from vitnqs.loop import build_driver
from vitnqs.models import ViT
from vitnqs.optimize import optimize
from vitnqs.physics import j1j2_hamiltonian
from vitnqs.plan import (
    EVAL_CHAIN_LENGTH,
    MemoryRefused,
    plan_run,
    plan_symmetrized,
    symmetrized_samples,
)
from vitnqs.sr import jacobian, symmetric_gram

TINY = RunConfig("factored", 4, 0.0, 1, d=8, heads=2, samples=32, steps=2)


def test_jacobian_and_kernel_parts_are_the_arrays_sizes():
    """The symmetric mode's Jacobian and kernel terms are the bytes of the arrays it builds."""
    driver = build_driver(TINY, RunOptions(sr_mode="symmetric", progress=False))
    state = driver.state
    samples = state.samples.reshape(-1, TINY.n_sites)
    J = jacobian(state._apply_fun, state.parameters, state.model_state, samples, None)
    kernel = symmetric_gram(J.reshape(2 * TINY.samples, -1), 1)
    estimate = resources.run_memory(TINY, "symmetric", None, 1)
    assert estimate.jacobian == J.nbytes and estimate.kernel == kernel.nbytes
    assert resources.run_memory(TINY, "explicit", None, 1).jacobian == 2 * J.nbytes


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize(("L", "layers", "d", "heads", "b"), [(6, 4, 60, 10, 2), (6, 2, 12, 3, 3)])
def test_closed_form_parameter_count_matches_flax(attention, L, layers, d, heads, b):
    model = ViT(attention, layers, d, heads, b)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.numpy.ones((1, L * L)))
    counted = sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
    assert n_parameters(attention, L, layers, d, heads, b) == counted


def test_connections_are_the_operators():
    for L, J2 in ((4, 0.0), (4, 0.5), (6, 0.5)):
        assert resources.n_connected(L, J2) == j1j2_hamiltonian(L, J2).max_conn_size


def test_estimate_matches_the_measured_cpu_peaks():
    # docs/cluster.md ("Memory"): L = 6, d 60, 4 layers, M = 1024, chunk 256 on 2 CPU cores,
    # peak RSS 6.8 GB (Factored) and 7.9 GB (T5), measured with NetKet's padded local energies
    for attention, measured in (("factored", 6.8e9), ("t5", 7.9e9)):
        config = RunConfig(attention, 6, 0.5, 4, samples=1024)
        padded = resources.run_memory(config, "explicit", 256, 1, "padded")
        assert padded.total == pytest.approx(measured, rel=0.1)
        # the compact path's activations: at most 3/4 of the bonds plus a spare 1/32
        compact = resources.run_memory(config, "explicit", 256, 1, "compact")
        assert compact.activations / padded.activations == pytest.approx(
            (2 + math.ceil((0.75 + 1 / 32) * 144)) / 145
        )


def test_plan_chooses_the_sr_mode_from_the_declared_memory():
    # the paper's T5 run at L = 10: the symmetric kernel fits 80 GB, not 16 GB
    config = RunConfig("t5", 10, 0.5, 4, samples=6000)
    roomy = plan_run(config, RunOptions(chunk_size=500, gpu_memory_gb=80))
    tight = plan_run(config, RunOptions(chunk_size=500, gpu_memory_gb=16))
    unknown = plan_run(config, RunOptions(chunk_size=500))
    assert (roomy.sr_mode, tight.sr_mode, unknown.sr_mode) == ("symmetric", "onthefly", "symmetric")
    assert tight.memory.total < roomy.memory.total == unknown.memory.total < 0.8 * 80e9
    assert roomy.memory.total > 0.8 * 16e9
    with pytest.raises(MemoryRefused, match="with SR mode onthefly, more than the 16 GB"):
        tight.check_memory()  # the activations of 500 samples alone need 20 GB at L = 10
    assert (roomy.memory_source, unknown.memory_source) == ("declared", "unknown")
    # a measurement or the device's report come after a declaration
    measured = plan_run(
        config, RunOptions(chunk_size=500), measured_bytes=16e9, reported_bytes=1e12
    )
    assert (measured.sr_mode, measured.memory_source) == ("onthefly", "measured")


def test_plan_rules_beyond_memory():
    # M >= P: NetKet's QGT form, an explicit Jacobian, whatever was asked
    small = RunConfig("factored", 4, 0.0, 1, d=4, heads=2, samples=4096)
    assert small.samples >= small.n_parameters
    for mode in ("auto", "symmetric", "onthefly"):
        plan = plan_run(small, RunOptions(sr_mode=mode))
        assert (plan.sr_mode, plan.use_ntk) == ("explicit", False)
    # several devices: NetKet's explicit product in place of the symmetric one
    for mode in ("auto", "symmetric"):
        assert plan_run(TINY, RunOptions(sr_mode=mode, n_devices=2)).sr_mode == "explicit"
    assert plan_run(TINY, RunOptions(sr_mode="onthefly", n_devices=2)).sr_mode == "onthefly"


def test_a_run_larger_than_the_declared_gpu_memory_is_refused(tmp_path):
    with pytest.raises(MemoryRefused, match=r"gpu_memory_gb: the run needs about 1\.0 GB"):
        optimize(TINY, tmp_path / "run", RunOptions(gpu_memory_gb=0.5))
    assert not (tmp_path / "run").exists()


def test_the_run_records_the_plan_the_workflow_requests(tmp_path):
    """The job's memory request and the run's own choice read the same plan."""
    options = RunOptions(gpu_memory_gb=2.0, progress=False)
    summary = optimize(TINY, tmp_path / "run", options)
    plan = plan_run(TINY, options)  # what workflow/rules/common.smk's mem_mb reads
    assert summary["sr_mode"] == plan.sr_mode == summary["plan"]["sr_mode"]
    assert summary["memory_estimate_bytes"] == plan.memory.total
    assert summary["plan"]["memory_source"] == "declared"


def test_symmetrized_plan_samples_as_the_plain_final_evaluation():
    """By default 4 M samples from the run's M chains, as ``optimize``'s final evaluation."""
    plan = plan_symmetrized(TINY, RunOptions())
    assert plan.samples == EVAL_CHAIN_LENGTH * TINY.samples == 128 and plan.n_ops == 64
    # no run chunk: one chunk of the samples' 64 network evaluations each
    assert plan.chunk_size == 2 and plan.samples % plan.chunk_size == 0
    # the memory follows the samples; --samples overrides them, rounded to whole chains
    small = plan_symmetrized(TINY, RunOptions(), samples=30)
    assert small.samples == 32 and small.memory.total < plan.memory.total
    assert symmetrized_samples(TINY.samples) == 128 and symmetrized_samples(None, 5) == 8
    with pytest.raises(ValueError, match="samples"):
        symmetrized_samples(None)
