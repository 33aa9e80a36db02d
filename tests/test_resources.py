"""Memory estimate of a run: the formula's parts by hand, the parameter count, the refusal."""

import pytest

from vitnqs import devices
from vitnqs.optimize import RunConfig, RunOptions, optimize
from vitnqs.physics import j1j2_hamiltonian
from vitnqs.resources import (
    FIT,
    choose_sr_mode,
    memory_estimate,
    n_connected,
    n_parameters,
    run_memory,
    run_sr_mode,
)


def test_explicit_and_on_the_fly_parts_by_hand():
    # the paper's L = 6 T5 run: M = 6000, P = 184,260 (issue 9: the Jacobian alone is
    # 2 x 6000 x 184,260 x 8 B = 17.7 GB, held twice)
    explicit = memory_estimate(6000, 184_260, 512, "explicit", n_conn=145, n_patches=9, d=60,
                               heads=10)  # fmt: skip
    assert explicit.jacobian == 2 * (2 * 6000 * 184_260 * 8)
    assert explicit.jacobian / 2 == pytest.approx(17.69e9, rel=1e-3)
    assert explicit.kernel == 12_000**2 * 8
    assert explicit.activations == 512 * 145 * 9 * (4 * 60 + 10 * 9) * 8
    lazy = memory_estimate(6000, 184_260, 512, "onthefly", n_conn=145, n_patches=9, d=60,
                           heads=10)  # fmt: skip
    assert lazy.jacobian == 2 * 512 * 184_260 * 8
    assert (lazy.kernel, lazy.activations) == (explicit.kernel, explicit.activations)
    assert lazy.total < explicit.total
    # two devices: each holds half the Jacobian, the whole kernel
    halves = memory_estimate(6000, 184_260, 512, "explicit", n_devices=2)
    assert halves.jacobian == explicit.jacobian / 2 and halves.kernel == explicit.kernel
    # the symmetric kernel keeps the Jacobian once
    symmetric = memory_estimate(6000, 184_260, 512, "symmetric", n_conn=145, n_patches=9, d=60,
                                heads=10)  # fmt: skip
    assert symmetric.jacobian == explicit.jacobian / 2
    assert lazy.total < symmetric.total < explicit.total
    with pytest.raises(ValueError, match="sr_mode: must be one of explicit, symmetric, onthefly"):
        memory_estimate(10, 10, None, "lazy")


def test_sr_mode_choice_by_memory():
    M, P = 6000, 184_260
    symmetric = memory_estimate(M, P, 500, "symmetric").total
    assert choose_sr_mode(M, P, 500, symmetric / FIT * 1.01) == "symmetric"
    assert choose_sr_mode(M, P, 500, symmetric / FIT * 0.99) == "onthefly"
    assert choose_sr_mode(M, P, 500, None) == "symmetric"  # memory not known
    # the paper's T5 run on an 80 GB GPU keeps the symmetric kernel, on a 16 GB one not
    config = RunConfig("t5", 10, 0.5, 4, samples=6000)
    assert run_sr_mode(config, 500, 1, 80e9) == "symmetric"
    assert run_sr_mode(config, 500, 1, 16e9) == "onthefly"
    assert run_memory(config, 500, "auto", 1, 16e9) == run_memory(config, 500, "onthefly", 1)


def test_parameter_count_and_connections():
    assert n_parameters("t5", 6, 4, 60, 10, 2) == 184_260  # issue 9's number for L = 6
    assert n_parameters("factored", 4, 1, 8, 2, 2) == 968  # test_optimize's tiny run
    for L, J2 in ((4, 0.0), (4, 0.5), (6, 0.5)):
        assert n_connected(L, J2) == j1j2_hamiltonian(L, J2).max_conn_size


def test_estimate_matches_the_measured_cpu_peaks():
    # README: L = 6, d 60, 4 layers, M = 1024, chunk 256 on 2 CPU cores, peak RSS
    # 6.8 GB (Factored) and 7.9 GB (T5)
    for attention, measured in (("factored", 6.8e9), ("t5", 7.9e9)):
        config = RunConfig(attention, 6, 0.5, 4, samples=1024)
        assert run_memory(config, 256, "explicit", 1).total == pytest.approx(measured, rel=0.1)


def test_a_run_larger_than_the_declared_gpu_memory_is_refused(tmp_path):
    config = RunConfig("factored", 4, 0.0, 1, d=8, heads=2, samples=32, steps=2)
    with pytest.raises(devices.DeviceError, match=r"--gpu-memory-gb: the run needs about 1\.0 GB"):
        optimize(config, tmp_path / "run", RunOptions(gpu_memory_gb=0.5))
    assert not (tmp_path / "run").exists()
