"""Memory a run needs: one formula for the workflow's requests and the run's own check.

The SR step dominates (NetKet's kernel SR, ``VMC_SR(use_ntk=True)``): with the explicit
Jacobian (``on_the_fly=False``, the default here) it holds the ``2M x P`` real Jacobian
(real and imaginary parts of ``d log psi / d theta`` for ``M`` samples and ``P`` real
parameters) and NetKet's ``_prepare_input`` makes one scaled copy of it, so it counts
twice; then the ``2M x 2M`` kernel. On the fly only the kernel and one chunk's Jacobian
are held. The local energies add the activations of one chunk of samples times their
connected configurations. Everything in float64.

Checked against peaks measured on the CPU (README: L = 6, d 60, 4 layers, M = 1024,
chunk 256: 7.9 GB measured (T5), 7.95 GB estimated). :func:`memory_estimate` is the one
place to change when the SR mode or the measurements change.
"""

from __future__ import annotations

import dataclasses
import functools

BYTES = 8
"""float64."""
BASELINE_BYTES = 1.0e9
"""JAX, XLA and NetKet themselves, compiled code, samples, parameters (measured ~1 GB)."""
SR_MODES = ("explicit", "onthefly")
"""``explicit``: the full Jacobian in memory; ``onthefly``: NetKet's lazy kernel."""


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
    if sr_mode == "explicit":
        jacobian = 2 * (2 * per_device * P * BYTES)
    else:
        jacobian = 2 * chunk * P * BYTES
    kernel = (2 * M) ** 2 * BYTES
    # widest live tensor per configuration: the MLP's 4d hidden units or the attention
    # weights, per token; complex parts counted in the factor 2 of the float64 pair
    activations = chunk * n_conn * n_patches * (4 * d + heads * n_patches) * BYTES
    return MemoryEstimate(jacobian, kernel, activations, BASELINE_BYTES)


@functools.cache
def n_parameters(attention: str, L: int, layers: int, d: int, heads: int, b: int) -> int:
    """Real parameters of the ViT, from the shapes alone (nothing is computed)."""
    import jax
    import jax.numpy as jnp

    from vitnqs.models import ViT

    model = ViT(attention, layers, d, heads, b)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, L * L)))
    return int(
        sum(x.size * (2 if jnp.iscomplexobj(x) else 1) for x in jax.tree_util.tree_leaves(shapes))
    )


def n_connected(L: int, J2: float) -> int:
    """Connected configurations per sample of the J1-J2 Hamiltonian.

    The diagonal and one per bond: 2 nearest- and, if J2 != 0, 2 next-nearest-neighbour
    bonds per site.
    """
    return 1 + 2 * L * L * (2 if J2 else 1)


def run_memory(config, chunk: int | None, sr_mode: str, n_devices: int) -> MemoryEstimate:
    """:func:`memory_estimate` of a :class:`vitnqs.optimize.RunConfig`."""
    P = n_parameters(config.attention, config.L, config.layers, config.d, config.heads, config.b)
    return memory_estimate(
        config.samples,
        P,
        chunk,
        sr_mode,
        n_devices=n_devices,
        n_conn=n_connected(config.L, config.J2),
        n_patches=(config.L // config.b) ** 2,
        d=config.d,
        heads=config.heads,
    )
