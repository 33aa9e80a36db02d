"""Compact local energies equal NetKet's padded ones (operator, kernels, driver, devices)."""

import math
import subprocess
import sys
import textwrap

import jax
import netket as nk
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from vitnqs import local_energy
from vitnqs.bench.local_energy import measure_modes
from vitnqs.local_energy import BUCKETS, STATS, CompactHeisenberg, slot_count
from vitnqs.models import ATTENTIONS, ViT
from vitnqs.physics import (
    LOCAL_ENERGY_MODES,
    exact_ground_state_energy,
    exchange_sampler,
    ground_state_energy,
    j1j2_hamiltonian,
)
from vitnqs.resources import max_nonzero_share, n_connected, n_connected_compact

TINY = {"layers": 1, "d": 8, "heads": 2, "b": 2}


def _state(attention, L, samples=64, chunk_size=None, seed=0, **model):
    vstate = nk.vqs.MCState(
        exchange_sampler(L, n_chains=samples),
        ViT(attention, **(TINY | model)),
        n_samples=samples,
        n_discard_per_chain=0,
        chunk_size=chunk_size,
        seed=seed,
        sampler_seed=seed + 1,
    )
    vstate.sample(n_discard_per_chain=2 * L * L)  # a few sweeps: the chain's own samples
    return vstate


def _relative_difference(energies, reference):
    reference = np.asarray(reference)
    return np.max(np.abs(np.asarray(energies) - reference)) / np.max(np.abs(reference))


def _local_energies(vstate, operator, chunk_size):
    vstate.chunk_size = chunk_size
    return vstate.local_estimators(operator).data


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_operator_is_netkets_heisenberg(J2):
    padded = j1j2_hamiltonian(4, J2, local_energy="padded")
    compact = j1j2_hamiltonian(4, J2)
    assert isinstance(compact, CompactHeisenberg)
    assert compact.max_conn_size == padded.max_conn_size
    difference = compact.to_sparse() - padded.to_sparse()
    assert abs(difference).max() < 1e-14
    # exact diagonalization works on either operator
    energy = ground_state_energy(compact, 16)
    assert energy == pytest.approx(exact_ground_state_energy(4, J2), abs=1e-12)


def test_unknown_mode_is_refused():
    assert LOCAL_ENERGY_MODES == ("compact", "padded")
    with pytest.raises(ValueError, match="local_energy"):
        j1j2_hamiltonian(4, 0.0, local_energy="sparse")


def test_packed_connections_are_the_nonzero_padded_ones():
    compact = j1j2_hamiltonian(4, 0.5)
    x = compact.hilbert.random_state(jax.random.key(1), 32)
    xp, mels = map(np.asarray, compact.get_conn_padded(x))
    nonzero = int(np.count_nonzero(mels[:, 1:]))  # the diagonal is not a network input
    slots = slot_count(32, compact.n_bonds, nonzero)
    assert nonzero <= slots < nonzero + 32 * compact.n_bonds / BUCKETS + 8
    packed, packed_mels, sample = map(np.asarray, compact.get_conn_packed(x, slots))
    # the same (sample, configuration, element) triples, in the same order
    rows, columns = np.nonzero(mels[:, 1:])
    np.testing.assert_array_equal(sample[:nonzero], rows)
    np.testing.assert_array_equal(packed[:nonzero], xp[rows, columns + 1])
    np.testing.assert_array_equal(packed_mels[:nonzero], mels[rows, columns + 1])
    # spare slots: the first sample itself with a zero element
    assert np.all(packed_mels[nonzero:] == 0) and np.all(sample[nonzero:] == 0)
    np.testing.assert_array_equal(packed[nonzero:], np.broadcast_to(x[0], packed[nonzero:].shape))
    assert np.all(packed.sum(-1) == 0)  # Sz = 0 kept


@pytest.mark.parametrize("J2", [0.0, 0.5])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_local_energies_equal_padded(attention, J2):
    vstate = _state(attention, 4, samples=32)
    padded = j1j2_hamiltonian(4, J2, local_energy="padded")
    compact = j1j2_hamiltonian(4, J2)
    reference = _local_energies(vstate, padded, None)
    energies = _local_energies(vstate, compact, None)
    assert _relative_difference(energies, reference) < 1e-10
    if attention == "factored":  # chunks compile again: one attention (more in the history)
        # chunked (not dividing the configurations) equals unchunked
        chunked = _local_energies(vstate, compact, 8 if J2 else 32)
        assert _relative_difference(chunked, energies) < 1e-10
        assert _relative_difference(chunked, reference) < 1e-10


def test_new_slot_count_is_compiled_once():
    vstate = _state("factored", 4, samples=24)  # a batch size no other test compiles
    compact = j1j2_hamiltonian(4, 0.0)
    nonzero = int(compact.n_flips(vstate.samples).sum())
    slots = slot_count(24, compact.n_bonds, nonzero)
    traces = len(STATS["traces"])
    _local_energies(vstate, compact, None)
    _local_energies(vstate, compact, None)
    # a second call with the same slot count and shapes reuses the compiled kernel
    assert STATS["traces"][traces:] == [(slots, 24, None)]
    assert STATS["buckets"][slots] >= 2


def test_slot_counts():
    # 256 samples x 144 bonds (6 x 6, J2 != 0): steps of 36864 / 32 = 1152
    assert [slot_count(256, 144, n) for n in (0, 1, 1152, 1153, 20000, 36864)] == [
        1152, 1152, 1152, 2304, 20736, 36864,
    ]  # fmt: skip
    assert slot_count(3, 5, 7) == 8  # aligned to 8, even beyond the padded 15
    assert slot_count(3, 5, 15) == 16


def _history(attention, J2, mode, steps=20, chunk_size=None):
    vstate = nk.vqs.MCState(
        exchange_sampler(4, n_chains=32),
        ViT(attention, **TINY),
        n_samples=32,
        n_discard_per_chain=0,
        chunk_size=chunk_size,
        seed=1,
        sampler_seed=2,
    )
    # as vitnqs.loop.build_driver does
    driver = nk.driver.VMC_SR(
        j1j2_hamiltonian(4, J2, local_energy=mode),
        optax.sgd(optax.cosine_decay_schedule(0.03, steps)),
        diag_shift=1e-4,
        variational_state=vstate,
        use_ntk=True,
        on_the_fly=False,
        mode="complex",
    )
    log = nk.logging.RuntimeLog()
    driver.run(steps, out=log, show_progress=False)
    return np.asarray(log["Energy"]["Mean"]), vstate


@pytest.mark.parametrize(
    "attention, J2",
    [
        ("factored", 0.5),  # the CI case: ~30 s, mostly compiling two drivers
        pytest.param("t5", 0.5, marks=pytest.mark.slow),
        pytest.param("decoupled", 0.0, marks=pytest.mark.slow),
        pytest.param("t5", 0.0, marks=pytest.mark.slow),
        pytest.param("decoupled", 0.5, marks=pytest.mark.slow),
        pytest.param("factored", 0.0, marks=pytest.mark.slow),
    ],
)
def test_optimization_history_is_identical(attention, J2):
    padded_history, vstate = _history(attention, J2, "padded")
    compact_history, _ = _history(attention, J2, "compact", chunk_size=16)
    assert len(padded_history) == 20
    # the state moved: the energy changed beyond its first value's rounding
    assert abs(padded_history[-1] - padded_history[0]) > 1e-3 * abs(padded_history[0])
    np.testing.assert_allclose(compact_history, padded_history, rtol=1e-9, atol=0)
    # after the optimization: per-sample energies and the final evaluation on more samples
    padded = j1j2_hamiltonian(4, J2, local_energy="padded")
    compact = j1j2_hamiltonian(4, J2)
    reference = _local_energies(vstate, padded, None)
    assert _relative_difference(_local_energies(vstate, compact, None), reference) < 1e-10
    # expect_and_grad (NetKet's forces path) too
    gradients = [ravel_pytree(vstate.expect_and_grad(op)[1])[0] for op in (padded, compact)]
    assert _relative_difference(gradients[1], gradients[0]) < 1e-10
    vstate.n_samples = 4 * 32
    vstate.reset()
    mean = vstate.expect(padded).mean
    assert abs(vstate.expect(compact).mean - mean) < 1e-10 * abs(mean)


def test_measure_modes_waste():
    vstate = _state("t5", 4, samples=32)
    result = measure_modes(vstate, 4, 0.5, repeats=1)
    padded = j1j2_hamiltonian(4, 0.5, local_energy="padded")
    _, mels = padded.get_conn_padded(vstate.samples.reshape(-1, 16))
    assert result["waste"] == pytest.approx(float(np.mean(np.asarray(mels) == 0)))
    assert 0.2 < result["waste"] < 0.8
    assert result["max_abs_diff"] < 1e-10
    assert result["padded_s"] > 0 and result["compact_s"] > 0
    assert result["nonzero"] <= result["slots"] < result["configs_compact"]
    assert result["configs_padded"] == 32 * 66


SHARDED = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    import netket as nk, numpy as np, optax
    from vitnqs.models import ViT
    from vitnqs.physics import exchange_sampler, j1j2_hamiltonian

    def state(chunk_size=None):
        return nk.vqs.MCState(exchange_sampler(4, 32), ViT("factored", 1, 8, 2, 2),
                              n_samples=32, n_discard_per_chain=0, chunk_size=chunk_size,
                              seed=0, sampler_seed=1)

    assert len(jax.devices()) == 2
    padded = j1j2_hamiltonian(4, 0.5, local_energy="padded")
    compact = j1j2_hamiltonian(4, 0.5)
    vstate = state()
    vstate.sample(n_discard_per_chain=32)
    assert len(vstate.samples.sharding.device_set) == 2
    reference = np.asarray(vstate.local_estimators(padded).data)
    for chunk in (None, 8):
        vstate.chunk_size = chunk
        energies = np.asarray(vstate.local_estimators(compact).data)
        difference = np.abs(energies - reference).max() / np.abs(reference).max()
        assert difference < 1e-10, (chunk, difference)
    if sys.argv[1] == "driver":
        histories = []
        for operator in (padded, compact):
            driver = nk.driver.VMC_SR(operator, optax.sgd(0.03), diag_shift=1e-4,
                                      variational_state=state(16), use_ntk=True,
                                      on_the_fly=False, mode="complex")
            log = nk.logging.RuntimeLog()
            driver.run(5, out=log, show_progress=False)
            histories.append(np.asarray(log["Energy"]["Mean"]))
        np.testing.assert_allclose(histories[1], histories[0], rtol=1e-9)
    print("SHARDED OK")
    """
)


@pytest.mark.parametrize("what", ["local_energies", pytest.param("driver", marks=pytest.mark.slow)])
def test_sharded_samples_on_two_devices(what):
    done = subprocess.run(
        [sys.executable, "-c", SHARDED, what], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SHARDED OK" in done.stdout
    assert "compiling compact local energies" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("J2", [0.0, 0.5])
@pytest.mark.parametrize("attention", ["t5", "factored"])
def test_local_energies_equal_padded_6x6(attention, J2):
    vstate = _state(attention, 6, samples=64, d=12, heads=2, layers=2)
    padded = j1j2_hamiltonian(6, J2, local_energy="padded")
    compact = j1j2_hamiltonian(6, J2)
    reference = _local_energies(vstate, padded, None)
    for chunk_size in (None, 500):
        energies = _local_energies(vstate, compact, chunk_size)
        assert _relative_difference(energies, reference) < 1e-10, chunk_size
    assert local_energy.STATS["buckets"]


@pytest.mark.parametrize("J2", [0.0, 0.5])
def test_max_nonzero_share_is_reached_and_not_exceeded(J2):
    # every Sz = 0 configuration of 4 x 4
    compact = j1j2_hamiltonian(4, J2)
    flips = np.asarray(compact.n_flips(compact.hilbert.all_states()))
    assert flips.max() == max_nonzero_share(J2) * compact.n_bonds


@pytest.mark.parametrize("L, J2", [(4, 0.0), (6, 0.5), (10, 0.5), (10, 0.0)])
def test_compact_connections_bound_the_slots(L, J2):
    n_bonds = n_connected(L, J2) - 1
    assert n_connected_compact(L, J2) <= n_connected(L, J2) + 1
    for share in (0.3, 0.52, max_nonzero_share(J2)):
        bound = n_connected_compact(L, J2, share)
        for n in (8, 100, 256, 1000):
            # the slots of the fullest batch with that share, per sample, plus the sample
            slots = slot_count(n, n_bonds, math.floor(share * n * n_bonds))
            assert 1 + slots / n <= bound
    # J2 = 0.5 at the measured share: about half the padded evaluations
    assert n_connected_compact(10, 0.5, 0.52) < 0.6 * (1 + n_connected(10, 0.5))
