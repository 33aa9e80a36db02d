"""Local energies of the J1-J2 Heisenberg model without the zero matrix elements.

NetKet's jax operators give every sample the same padded number of connected
configurations, ``1 + n_bonds`` (``1 + 2N`` for J2 = 0, ``1 + 4N`` otherwise), and the
network is evaluated on all of them. An exchange term ``S_i.S_j`` connects ``sigma`` to
another configuration only if the spins ``i`` and ``j`` are opposite, so about half of the
padded configurations (48% on random 6 x 6 samples, 30% near the J2 = 0 ground state)
carry a zero matrix element and cost a network evaluation for nothing.

:class:`CompactHeisenberg` is the same operator (``sum_b J_b (sigma^z_i sigma^z_j + 2
exchange)``, NetKet's ``Heisenberg`` without sign rule) with its own local-energy kernel,
registered through NetKet's dispatch (:func:`netket.vqs.get_local_kernel_arguments` and
:func:`netket.vqs.get_local_kernel` for :class:`netket.vqs.MCState`, with and without
``chunk_size``). ``vstate.local_estimators``, ``vstate.expect``,
``vstate.expect_and_grad`` and therefore ``nk.driver.VMC_SR`` use it unchanged:

* the diagonal element is computed from the spins (no network evaluation: the ratio
  ``psi(sigma) / psi(sigma)`` is 1);
* the non-zero exchange terms of all samples of a device (its anti-aligned bonds) are
  packed into one flat list of ``S`` slots, the network is evaluated on ``n + S``
  configurations (the ``n`` samples and the slots) and the terms are summed back per
  sample (``segment_sum``); spare slots repeat the first sample with a zero element
  (finite ratio 1, no overflow);
* ``S`` must be static for XLA: it is the largest number of non-zero terms on a device,
  read on the host before the jitted kernel runs (:func:`netket.vqs.get_local_kernel_arguments`
  runs outside ``jit``; one small device-to-host copy per call), rounded up to a multiple
  of ``1 / BUCKETS`` of the padded count ``n * n_bonds``: sums over hundreds of samples
  change slowly, so a run compiles for a few sizes only. Every trace (compilation) of the
  kernel is logged on stderr and recorded in :data:`STATS`; later batches whose size was
  seen before reuse the compiled code.

Packing per batch rather than per sample matters: the largest count of one sample in a
batch is far above the mean (near the J2 = 0 ground state ~0.9 against ~0.7 of the bonds),
the batch's sum is not. Samples sharded over several devices are packed device by device
(``shard_map``, through NetKet's ``sharding_decorator``), ``S`` being the largest device
total. :func:`vitnqs.bench.local_energy.measure_modes` measures the waste and the
local-energy time of both modes.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
from netket import config as nk_config
from netket import jax as nkjax
from netket.jax.sharding import sharding_decorator
from netket.operator import DiscreteJaxOperator
from netket.utils.types import PyTree
from netket.vqs import MCState
from netket.vqs.mc import check_hilbert, get_local_kernel, get_local_kernel_arguments

from vitnqs import measure
from vitnqs.resources import BUCKETS  # one number for the kernel and the memory formula

SLOT_ALIGNMENT = 8
"""Slot counts are also multiples of 8 (friendlier shapes for the accelerators)."""

STATS: dict = {"buckets": Counter(), "traces": [], "round_trips": 0, "round_trip_s": 0.0}
"""What the compact path did in this process: ``buckets`` counts the batches per slot
count, ``traces`` lists ``(slots, samples per device, chunk_size)`` of every trace
(compilation) of the kernel, ``round_trips`` and ``round_trip_s`` the host reads of the
count (excluding the wait for the samples themselves)."""


def slot_count(n_samples: int, n_bonds: int, n_nonzero: int) -> int:
    """Static slot count for ``n_nonzero`` non-zero exchange terms of ``n_samples`` samples.

    The smallest multiple of the bucket step (``n_samples * n_bonds / BUCKETS`` rounded up
    to :data:`SLOT_ALIGNMENT`) that holds them, at least one step, at most the padded
    count ``n_samples * n_bonds`` rounded up to :data:`SLOT_ALIGNMENT`.
    """
    padded = n_samples * n_bonds
    step = SLOT_ALIGNMENT * max(1, math.ceil(padded / (BUCKETS * SLOT_ALIGNMENT)))
    most = math.ceil(padded / SLOT_ALIGNMENT) * SLOT_ALIGNMENT
    return min(max(step, math.ceil(n_nonzero / step) * step), most)


@jax.tree_util.register_pytree_node_class
class CompactHeisenberg(DiscreteJaxOperator):
    """Heisenberg exchange on given bonds whose local energies skip zero matrix elements.

    ``H = sum_b J_b (sigma^z_i sigma^z_j + 2 (sigma^+_i sigma^-_j + h.c.))`` over bonds
    ``b = (i, j)``: NetKet's ``Heisenberg(..., J=J, sign_rule=False)`` with one coupling per
    bond (pass couplings already in the units wanted, e.g. S.S units as
    :func:`vitnqs.physics.heisenberg` does). ``get_conn_padded`` and ``to_sparse`` give the
    full padded form (diagonal first, then one configuration per bond), so exact
    diagonalization works on it; only Monte Carlo local energies are compacted.
    """

    def __init__(
        self,
        hilbert: nk.hilbert.DiscreteHilbert,
        bonds: np.ndarray,
        couplings: np.ndarray,
        *,
        slots: int | None = None,
    ):
        """Build the operator.

        Args:
            hilbert: spin-1/2 Hilbert space (local states +-1).
            bonds: integer array ``(n_bonds, 2)`` of site pairs.
            couplings: ``J_b`` of every bond, shape ``(n_bonds,)``.
            slots: non-zero exchange terms per device the compact kernel packs; set by
                :func:`netket.vqs.get_local_kernel_arguments`, not by users.

        """
        super().__init__(hilbert)
        self._bonds = jnp.asarray(bonds, dtype=jnp.int32).reshape(-1, 2)
        self._couplings = jnp.asarray(couplings, dtype=jnp.float64).reshape(-1)
        if self._bonds.shape[0] != self._couplings.shape[0]:
            raise ValueError("bonds and couplings: one coupling per bond")
        self._slots = slots

    @classmethod
    def from_graph(
        cls, hilbert: nk.hilbert.DiscreteHilbert, graph: nk.graph.AbstractGraph, J: Sequence[float]
    ) -> CompactHeisenberg:
        """The operator of ``nk.operator.Heisenberg(hilbert, graph, J, sign_rule=False)``.

        Args:
            hilbert: spin-1/2 Hilbert space on the graph's nodes.
            graph: lattice whose edge colors select the couplings.
            J: one coupling per edge color (colors with coupling 0 are dropped).

        """
        bonds, couplings = [], []
        for color, coupling in enumerate(J):
            for edge in graph.edges(filter_color=color):
                if coupling:
                    bonds.append(edge)
                    couplings.append(coupling)
        return cls(hilbert, np.array(bonds), np.array(couplings))

    @property
    def n_bonds(self) -> int:
        """Number of bonds (exchange terms)."""
        return int(self._bonds.shape[0])

    @property
    def dtype(self):
        """Matrix elements are float64."""
        return jnp.float64

    @property
    def is_hermitian(self) -> bool:
        """The Heisenberg model is Hermitian."""
        return True

    @property
    def max_conn_size(self) -> int:
        """Padded connected configurations: the diagonal and one per bond."""
        return 1 + self.n_bonds

    def with_slots(self, slots: int) -> CompactHeisenberg:
        """The same operator carrying ``slots`` (static) for the compact kernel."""
        return CompactHeisenberg(self.hilbert, self._bonds, self._couplings, slots=slots)

    def tree_flatten(self):
        """Arrays are leaves; the Hilbert space and the slot count are static."""
        return (self._bonds, self._couplings), (self.hilbert, self._slots)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        """Rebuild without checks (leaves may be tracers)."""
        op = cls.__new__(cls)
        DiscreteJaxOperator.__init__(op, aux[0])
        op._bonds, op._couplings = leaves
        op._slots = aux[1]
        return op

    def __repr__(self):
        return (
            f"CompactHeisenberg(hilbert={self.hilbert}, n_bonds={self.n_bonds}, "
            f"slots={self._slots})"
        )

    def _bond_spins(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return x[..., self._bonds[:, 0]], x[..., self._bonds[:, 1]]

    def diagonal(self, x: jax.Array) -> jax.Array:
        """``<x|H|x> = sum_b J_b x_i x_j`` of configurations ``(..., N)``."""
        si, sj = self._bond_spins(x)
        return jnp.sum(self._couplings * (si * sj).astype(jnp.float64), axis=-1)

    def n_flips(self, x: jax.Array) -> jax.Array:
        """Anti-aligned bonds (non-zero off-diagonal elements) of configurations ``(..., N)``."""
        si, sj = self._bond_spins(x)
        return jnp.sum(si != sj, axis=-1)

    def _exchanged(self, x: jax.Array, bond_index: jax.Array, valid: jax.Array) -> jax.Array:
        """``x`` with the two spins of ``bonds[bond_index]`` exchanged where ``valid``.

        Shapes: ``x (..., N)``, ``bond_index`` and ``valid`` ``(..., K)``; returns
        ``(..., K, N)``. Exchanging opposite spins is flipping both.
        """
        sites = jnp.arange(x.shape[-1])
        i = self._bonds[bond_index, 0][..., None]
        j = self._bonds[bond_index, 1][..., None]
        flip = ((sites == i) | (sites == j)) & valid[..., None]
        return jnp.where(flip, -x[..., None, :], x[..., None, :])

    def get_conn_padded(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Diagonal first, then one configuration per bond (zero where the spins are equal)."""
        return _conn_padded(self, jnp.asarray(x))

    def _conn_padded(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        si, sj = self._bond_spins(x)
        valid = si != sj
        index = jnp.broadcast_to(jnp.arange(self.n_bonds), valid.shape)
        xp = jnp.concatenate([x[..., None, :], self._exchanged(x, index, valid)], axis=-2)
        mels = jnp.concatenate(
            [self.diagonal(x)[..., None], jnp.where(valid, 2 * self._couplings, 0.0)], axis=-1
        )
        return xp, mels

    def get_conn_packed(self, x: jax.Array, slots: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The non-zero off-diagonal elements of a batch, packed into ``slots`` entries.

        Args:
            x: configurations ``(n, N)``.
            slots: entries of the packed list, at least the batch's count of anti-aligned
                bonds (terms beyond ``slots`` are dropped).

        Returns:
            ``(xp, mels, sample)`` of shapes ``(slots, N)``, ``(slots,)`` and ``(slots,)``:
            connected configuration, element, and the row of ``x`` it belongs to, in
            sample-major, bond-minor order; spare entries hold ``x[0]`` with element 0.

        """
        si, sj = self._bond_spins(x)
        flips = (si != sj).reshape(-1)
        (flat,) = jnp.nonzero(flips, size=slots, fill_value=0)
        valid = jnp.arange(slots) < jnp.sum(flips)
        sample, bond = flat // self.n_bonds, flat % self.n_bonds
        xp = self._exchanged(x[sample], bond[:, None], valid[:, None])[:, 0]
        mels = jnp.where(valid, 2 * self._couplings[bond], 0.0)
        return xp, mels, sample


@jax.jit
def _conn_padded(op: CompactHeisenberg, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    # jitted: exact diagonalization calls get_conn_padded outside any jit
    return op._conn_padded(x)


def n_shards() -> int:
    """Devices NetKet shards the samples over (its ``sharding_decorator``'s mesh axis)."""
    if not nk_config.netket_sharding:
        return 1
    return int(jax.sharding.get_abstract_mesh().shape.get("S", 1))


@jax.jit
def _flips_per_sample(op: CompactHeisenberg, x: jax.Array) -> jax.Array:
    return op.n_flips(x.reshape(-1, x.shape[-1]))


@partial(jax.jit, static_argnums=2)
def _largest_device_total(op: CompactHeisenberg, x: jax.Array, shards: int) -> jax.Array:
    # a replicated scalar: readable by every process of a multi-process run
    return jnp.max(_flips_per_sample(op, x).reshape(shards, -1).sum(axis=1))


def largest_device_total(op: CompactHeisenberg, samples: jax.Array) -> int:
    """The largest total of non-zero exchange terms over the devices (a host round trip).

    The samples are sharded over :func:`n_shards` devices in contiguous blocks along the
    sample axis.
    """
    return int(_largest_device_total(op, samples, n_shards()))


def slots_of(op: CompactHeisenberg, samples: jax.Array) -> int:
    """Slot count for a batch of samples (a host round trip, recorded in :data:`STATS`).

    The :func:`largest_device_total` of the batch, rounded by :func:`slot_count`.
    """
    jax.block_until_ready(samples)  # the sampler's time is not the round trip's
    shards = n_shards()
    read = measure.timed(lambda: largest_device_total(op, samples))
    largest = read.result
    STATS["round_trip_s"] += read.wall_s
    STATS["round_trips"] += 1
    per_device = math.prod(samples.shape[:-1]) // shards
    slots = slot_count(per_device, op.n_bonds, largest)
    STATS["buckets"][slots] += 1
    return slots


def _log_trace(op: CompactHeisenberg, n_samples: int, chunk_size: int | None) -> None:
    # runs while jax traces the kernel, i.e. once per compilation
    STATS["traces"].append((op._slots, n_samples, chunk_size))
    print(
        f"vitnqs.local_energy: compiling compact local energies: {op._slots} slots for "
        f"{n_samples} samples per device x {op.n_bonds} bonds, chunk {chunk_size}",
        file=sys.stderr,
        flush=True,
    )


def _packed_energies(
    logpsi: Callable, pars: PyTree, x: jax.Array, op: CompactHeisenberg, chunk_size: int | None
) -> jax.Array:
    """Local energies of one device's configurations ``x (n, N)``."""
    _log_trace(op, x.shape[0], chunk_size)
    xp, mels, sample = op.get_conn_packed(x, op._slots)
    # already on one device's shard: chunk without a further shard_map
    apply = nkjax.apply_chunked(
        logpsi, in_axes=(None, 0), chunk_size=chunk_size, axis_0_is_sharded=False
    )
    log_x = apply(pars, x)
    log_xp = apply(pars, xp)
    terms = mels * jnp.exp(log_xp - log_x[sample])
    return op.diagonal(x) + jax.ops.segment_sum(terms, sample, num_segments=x.shape[0])


def compact_local_kernel_chunked(
    logpsi: Callable,
    pars: PyTree,
    x: jax.Array,
    op: CompactHeisenberg,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    """Local-energy kernel of :class:`CompactHeisenberg` for ``MCState``.

    At most ``chunk_size`` configurations go through the network at once (NetKet's
    jax kernels bound the same number); ``None``: all at once. Each device packs and
    evaluates its own samples.
    """

    # pars passed explicitly (not captured) and marked varying, as NetKet's kernels do
    def energies(pars, x, op):
        return _packed_energies(logpsi, pars, x, op, chunk_size)

    return sharding_decorator(
        energies, sharded_args_tree=(False, True, False), pvary_args_tree=(True, False, False)
    )(pars, x, op)


def compact_local_kernel(
    logpsi: Callable, pars: PyTree, x: jax.Array, op: CompactHeisenberg
) -> jax.Array:
    """Local-energy kernel of :class:`CompactHeisenberg` for ``MCState`` without chunks."""
    return compact_local_kernel_chunked(logpsi, pars, x, op, chunk_size=None)


@get_local_kernel_arguments.dispatch
def _compact_arguments(vstate: MCState, op: CompactHeisenberg):
    check_hilbert(vstate.hilbert, op.hilbert)
    samples = vstate.samples
    return samples, op.with_slots(slots_of(op, samples))


@get_local_kernel.dispatch
def _compact_kernel(vstate: MCState, op: CompactHeisenberg):
    return compact_local_kernel


@get_local_kernel.dispatch
def _compact_kernel_chunked(vstate: MCState, op: CompactHeisenberg, chunk_size: int):
    return compact_local_kernel_chunked
