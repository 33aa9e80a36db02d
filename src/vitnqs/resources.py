"""Memory a run needs: one formula for the workflow's requests and the run's own check.

The SR step dominates (kernel SR, ``M < P``). It holds the ``2M x P`` real Jacobian
(real and imaginary parts of ``d log psi / d theta`` for ``M`` samples and ``P`` real
parameters) :data:`JACOBIAN_COPIES` times, and the ``2M x 2M`` kernel: NetKet's
``explicit`` mode keeps a scaled copy of the centred Jacobian (``_prepare_input``), the
``symmetric`` mode (:mod:`vitnqs.sr`) only the Jacobian itself; ``onthefly`` holds one
chunk's Jacobian. The local energies add the activations of one chunk of samples times
their connected configurations. Everything in float64.

Checked against peaks measured on the CPU (docs/cluster.md, "Memory": L = 6, d 60,
4 layers, M = 1024, chunk 256, explicit: 7.9 GB measured (T5), 7.95 GB estimated;
docs/performance.md for the other modes). :func:`memory_estimate` is the one place to
change when the SR modes or the measurements change; :func:`vitnqs.plan.plan_run` picks
the mode from it.
This module imports no JAX at import time (the workflow sizes its requests with it).
"""

from __future__ import annotations

import dataclasses
import math

from vitnqs.config import SR_MODES

BYTES = 8
"""float64."""
BASELINE_BYTES = 1.0e9
"""JAX, XLA and NetKet themselves, compiled code, samples, parameters (measured ~1 GB)."""
BUCKETS = 32
"""Compact local energies (:mod:`vitnqs.local_energy`): slot counts are multiples of
``n * n_bonds / BUCKETS`` (``n`` samples per device): at most 1/32 of the padded
configurations are spare slots, and a run compiles for the few multiples its non-zero
share passes through."""
JACOBIAN_COPIES = {"explicit": 2, "symmetric": 1}
"""Arrays of the Jacobian's size an explicit mode holds at once (measured: docs/cluster.md
and docs/performance.md)."""
FIT = 0.8
"""Share of a device's memory the estimate may fill (XLA's temporaries, fragmentation)."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of the parts of one SR step, and their total."""

    jacobian: float
    """``2M x P`` reals, twice (explicit), or one chunk's (on the fly), per device."""
    kernel: float
    """The ``2M x 2M`` kernel (replicated on every device)."""
    activations: float
    """Forward pass of one chunk of samples times their connected configurations."""
    baseline: float
    """JAX and NetKet themselves."""

    @property
    def total(self) -> float:
        """Bytes one device needs."""
        return self.jacobian + self.kernel + self.activations + self.baseline

    def describe(self) -> str:
        """One log line in GB."""
        gb = {k: v / 1e9 for k, v in dataclasses.asdict(self).items()}
        return (
            f"{self.total / 1e9:.1f} GB per device (Jacobian {gb['jacobian']:.2f}, "
            f"kernel {gb['kernel']:.2f}, activations {gb['activations']:.2f}, "
            f"runtime {gb['baseline']:.1f})"
        )


def memory_estimate(
    M: int,
    P: int,
    chunk: int | None,
    sr_mode: str = "explicit",
    *,
    n_devices: int = 1,
    n_conn: int = 1,
    n_patches: int = 1,
    d: int = 0,
    heads: int = 0,
) -> MemoryEstimate:
    """Peak memory of one device during an SR step.

    Args:
        M: samples per step (all devices together).
        P: real parameters.
        chunk: samples per chunk (``None``: all of a device's samples at once).
        sr_mode: one of :data:`SR_MODES`.
        n_devices: devices the samples are sharded over.
        n_conn: connected configurations per sample (non-zero Hamiltonian elements).
        n_patches: tokens of the transformer.
        d: embedding dimension.
        heads: attention heads.

    Returns:
        The estimate; ``.total`` in bytes.

    """
    if sr_mode not in SR_MODES:
        raise ValueError(f"sr_mode: must be one of {', '.join(SR_MODES)} (got {sr_mode!r})")
    per_device = M // n_devices
    chunk = per_device if chunk is None else min(chunk, per_device)
    if sr_mode in JACOBIAN_COPIES:
        jacobian = JACOBIAN_COPIES[sr_mode] * (2 * per_device * P * BYTES)
    else:
        jacobian = 2 * chunk * P * BYTES
    kernel = (2 * M) ** 2 * BYTES
    # widest live tensor per configuration: the MLP's 4d hidden units or the attention
    # weights, per token; complex parts counted in the factor 2 of the float64 pair
    activations = chunk * n_conn * n_patches * (4 * d + heads * n_patches) * BYTES
    return MemoryEstimate(jacobian, kernel, activations, BASELINE_BYTES)


def n_connected(L: int, J2: float) -> int:
    """Connected configurations per sample of the J1-J2 Hamiltonian.

    The diagonal and one per bond: 2 nearest- and, if J2 != 0, 2 next-nearest-neighbour
    bonds per site.
    """
    return 1 + 2 * L * L * (2 if J2 else 1)


def max_nonzero_share(J2: float) -> float:
    """Largest share of bonds whose exchange element is non-zero, over all configurations.

    An exchange element is non-zero on a bond with opposite spins. J2 = 0: every bond of
    the bipartite square lattice (Neel state), 1. J2 != 0: each plaquette with its two
    diagonals is a complete graph on 4 sites, of whose 6 bonds a configuration opposes at
    most 4, weighing at most 3 of its 4 bonds (a nearest-neighbour bond is shared by two
    plaquettes); the stripe state reaches it, 3/4.
    """
    return 0.75 if J2 else 1.0


def n_connected_compact(L: int, J2: float, nonzero_share: float | None = None) -> int:
    """Network evaluations per sample of the compact local energies (memory planning).

    The compact path (:mod:`vitnqs.local_energy`) evaluates, per device and batch of ``n``
    samples, the samples themselves and ``slots`` packed configurations, ``slots`` being
    the batch's non-zero exchange terms rounded up by at most ``n * n_bonds / BUCKETS +
    8`` (:func:`vitnqs.local_energy.slot_count`). This returns ``2 + ceil((share + 1 /
    BUCKETS) n_bonds)`` (the ``2``: the sample, and the alignment to 8 slots for ``n >=
    8``), never more than :func:`n_connected` ``+ 1``: an upper bound of the per-sample
    evaluations of any batch whose share of non-zero terms is at most ``share``.

    Args:
        L: lattice side.
        J2: next-nearest-neighbour coupling.
        nonzero_share: largest share of the ``n_bonds`` exchange terms that are non-zero
            on a device's batch; ``None``: the rigorous bound :func:`max_nonzero_share`
            (1 for J2 = 0, where the compact path has no guaranteed saving, 3/4 else).
            Measured: 0.52-0.53 on the chains of a fresh 6 x 6 ViT (J2 = 0 and 0.5);
            exact 4 x 4 ground states: mean 0.73 (J2 = 0) and 0.58 (J2 = 0.5), largest
            of 50 batches of 256 samples 0.75 and 0.58.

    """
    share = max_nonzero_share(J2) if nonzero_share is None else nonzero_share
    n_bonds = n_connected(L, J2) - 1
    return min(n_connected(L, J2) + 1, 2 + math.ceil((share + 1 / BUCKETS) * n_bonds))


def run_memory(
    config, sr_mode: str, chunk: int | None, n_devices: int, local_energy: str = "compact"
) -> MemoryEstimate:
    """:func:`memory_estimate` of a :class:`vitnqs.config.RunConfig` in a resolved mode.

    ``local_energy``: NetKet's ``padded`` connections (:func:`n_connected`) or the
    ``compact`` ones (:func:`n_connected_compact`, at the rigorous non-zero share).
    """
    n_conn = n_connected_compact if local_energy == "compact" else n_connected
    return memory_estimate(
        config.samples,
        config.n_parameters,
        chunk,
        sr_mode,
        n_devices=n_devices,
        n_conn=n_conn(config.L, config.J2),
        n_patches=(config.L // config.b) ** 2,
        d=config.d,
        heads=config.heads,
    )
