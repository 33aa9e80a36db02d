"""The two local-energy modes measured side by side on the same samples.

:func:`local_energy_calls` gives one call per mode of :data:`vitnqs.config.LOCAL_ENERGY_MODES`
on a state's current samples: the phase benchmark (:func:`measure_modes`, through
:mod:`vitnqs.bench.phases`), ``benchmarks/local_energy.py`` and the GPU check's profiler
trace (``gpu_check/gpu_check.py``) all time these calls. :func:`measure_modes` adds the
waste of the padded connections (the share with a zero matrix element, which the
``compact`` mode of :mod:`vitnqs.local_energy` skips) and the slots the compact mode packs.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from netket.operator import DiscreteJaxOperator
from netket.vqs import MCState

from vitnqs import measure
from vitnqs.config import LOCAL_ENERGY_MODES
from vitnqs.local_energy import largest_device_total, slots_of
from vitnqs.physics import j1j2_hamiltonian


@dataclasses.dataclass(frozen=True, eq=False)
class LocalEnergyCall:
    """The local energies of a state's current samples with one operator, as a call.

    Calling it does not resample: it returns the local energies of all samples (shaped
    as the samples without their sites), computed to the end (``block_until_ready``),
    as the driver's ``vstate.local_estimators`` computes them. The first call compiles.
    """

    vstate: MCState
    """the variational state (its ``chunk_size`` is used)"""
    operator: DiscreteJaxOperator
    """the J1-J2 Hamiltonian of one mode (:func:`vitnqs.physics.j1j2_hamiltonian`)"""

    def __call__(self) -> jax.Array:
        """The local energies of the state's current samples, computed to the end."""
        return jax.block_until_ready(self.vstate.local_estimators(self.operator).data)


def local_energy_calls(vstate: MCState, L: int, J2: float) -> dict[str, LocalEnergyCall]:
    """One call per local-energy mode on the state's current samples, for timing or tracing.

    Sample the chain first (``vstate.sample()``). The modes, in the order of
    :data:`~vitnqs.config.LOCAL_ENERGY_MODES`: ``compact`` (only the non-zero
    connections, with its host read of the slot count, :mod:`vitnqs.local_energy`) and
    ``padded`` (NetKet's ``max_conn_size`` per sample).

    Args:
        vstate: the variational state.
        L: lattice side.
        J2: next-nearest-neighbour coupling.

    """
    return {
        mode: LocalEnergyCall(vstate, j1j2_hamiltonian(L, J2, local_energy=mode))
        for mode in LOCAL_ENERGY_MODES
    }


@jax.jit
def _zero_share(op: DiscreteJaxOperator, x: jax.Array) -> jax.Array:
    _, mels = op.get_conn_padded(x)
    return jnp.mean(mels == 0)


def _timed(calls: dict[str, LocalEnergyCall], repeats: int) -> dict[str, tuple[float, jax.Array]]:
    """Median seconds and local energies of each call, after one compiling call of each.

    The ``repeats`` timed calls alternate between the modes, so that a change of the
    machine's load hits all of them.
    """
    energies = {mode: call() for mode, call in calls.items()}  # compiles
    times: dict[str, list[float]] = {mode: [] for mode in calls}
    for _ in range(repeats):
        for mode, call in calls.items():
            times[mode].append(measure.timed(call).wall_s)
    return {mode: (statistics.median(times[mode]), energies[mode]) for mode in calls}


def measure_modes(vstate: MCState, L: int, J2: float, repeats: int = 3) -> dict:
    """Waste of the padded connections and local-energy wall time of both modes.

    On the state's current samples (sample the chain first), in this one process: one
    compiling call per mode, then ``repeats`` timed calls of each, alternating (the
    calls of :func:`local_energy_calls`).

    Args:
        vstate: the variational state (its ``chunk_size`` is used).
        L: lattice side.
        J2: next-nearest-neighbour coupling.
        repeats: timed calls per mode (median reported).

    Returns:
        ``waste`` (share of padded configurations with a zero element), ``padded_s`` and
        ``compact_s`` (median seconds of ``vstate.local_estimators(H)``), ``ratio``
        (padded / compact), ``configs_padded`` and ``configs_compact`` (network
        evaluations per call), ``slots``, ``nonzero`` (off-diagonal non-zero terms of the
        batch), ``max_flips`` (largest count of one sample), ``n_bonds``,
        ``round_trip_s`` (median host read of the counts, compiled, samples ready) and
        ``max_abs_diff`` (largest difference of the local energies over the largest
        ``|E_loc|``).

    """
    calls = local_energy_calls(vstate, L, J2)
    padded, compact = calls["padded"].operator, calls["compact"].operator
    samples = vstate.samples.reshape(-1, vstate.hilbert.size)
    waste = float(_zero_share(padded, samples))
    timed = _timed(calls, repeats)
    (padded_s, e_padded), (compact_s, e_compact) = timed["padded"], timed["compact"]
    flips = np.asarray(compact.n_flips(samples))
    # warm: the count's kernel is compiled by now
    round_trips = [
        measure.timed(lambda: largest_device_total(compact, samples)).wall_s for _ in range(5)
    ]
    slots = slots_of(compact, samples)
    n = samples.shape[0]
    return {
        "waste": waste,
        "padded_s": padded_s,
        "compact_s": compact_s,
        "ratio": padded_s / compact_s,
        "configs_padded": n * (1 + padded.max_conn_size),
        "configs_compact": n + slots,
        "slots": slots,
        "nonzero": int(flips.sum()),
        "max_flips": int(flips.max()),
        "n_bonds": compact.n_bonds,
        "round_trip_s": statistics.median(round_trips),
        "max_abs_diff": float(jnp.max(jnp.abs(e_compact - e_padded)) / jnp.max(jnp.abs(e_padded))),
    }
