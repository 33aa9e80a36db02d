"""Kernel SR that holds one Jacobian and builds the kernel from its upper block triangle.

NetKet's explicit kernel SR (``VMC_SR(use_ntk=True, on_the_fly=False)``) centres the
``2M x P`` Jacobian ``O`` and scales it (two more arrays of its size) and forms
``O O^T`` as one general matrix product, ``2 (2M)^2 P`` operations, although the
kernel is symmetric. Here (:func:`kernel_solve`) the Jacobian is used as it comes,
:func:`symmetric_gram` computes only the blocks on and above the diagonal,
``(k + 1) / 2k`` of the product for ``k`` row blocks (62.5% for ``k = 4``), and the
centring is applied to the ``2M x 2M`` kernel and to the solution instead, as
NetKet's on-the-fly mode does. :class:`KernelSR` is ``VMC_SR`` with this kernel;
everything else (Jacobian, solver, statistics, schedules) is NetKet's own, and
``tests/test_sr.py`` checks the update equals NetKet's to rounding.
"""

from __future__ import annotations

import threading
from functools import partial

import jax
import jax.numpy as jnp
import netket as nk
from jax.flatten_util import ravel_pytree
from netket import jax as nkjax
from netket._src.driver import vmc_sr as _netket_vmc_sr
from netket.utils import struct

MAX_KERNEL_BLOCKS = 4
"""Most row blocks of :class:`KernelSR`'s kernel product (62.5% of the plain product)."""
MIN_BLOCK_ROWS = 256
"""Fewest rows of a block: smaller products run slower per operation on a CPU (2 cores,
P = 184,260: 2M = 512 rows took the same time in 1 or 2 blocks and 6% longer in 4;
2M = 2048 took 33% less time in 4 blocks than in one)."""


def kernel_blocks(samples: int) -> int:
    """Row blocks of the ``2M x 2M`` kernel product for ``M`` samples."""
    return max(1, min(MAX_KERNEL_BLOCKS, 2 * samples // MIN_BLOCK_ROWS))


def symmetric_gram(matrix: jax.Array, blocks: int) -> jax.Array:
    """``matrix @ matrix.T`` from the ``k (k + 1) / 2`` block products on and above the diagonal.

    Args:
        matrix: array of shape ``(n, P)``.
        blocks: number of row blocks ``k`` (1 gives the plain product); rows are
            zero-padded to a multiple of ``k``.

    """
    n = matrix.shape[0]
    if blocks <= 1:
        return matrix @ matrix.T
    size = -(-n // blocks)
    padded = jnp.pad(matrix, ((0, size * blocks - n), (0, 0)))
    parts = [padded[i * size : (i + 1) * size] for i in range(blocks)]
    upper = {(i, j): parts[i] @ parts[j].T for i in range(blocks) for j in range(i, blocks)}
    rows = [
        jnp.concatenate([upper[i, j] if i <= j else upper[j, i].T for j in range(blocks)], axis=1)
        for i in range(blocks)
    ]
    return jnp.concatenate(rows, axis=0)[:n, :n]


def jacobian(log_psi, parameters, model_state, samples, chunk_size: int | None) -> jax.Array:
    """Uncentred Jacobian of the complex ``log psi``, shape ``(M, 2, P)`` (real, imaginary)."""
    return nkjax.jacobian(
        log_psi, parameters, samples, model_state,
        mode="complex", dense=True, center=False, chunk_size=chunk_size,
    )  # fmt: skip


def _centre_pairs(matrix: jax.Array, samples: int) -> jax.Array:
    """``(C x I2) K (C x I2)`` with ``C = 1 - 11^T / M``, for ``K`` of shape ``(2M, 2M)``."""
    k = matrix.reshape(samples, 2, samples, 2)
    column_means = k.mean(axis=0, keepdims=True)
    row_means = k.mean(axis=2, keepdims=True)
    k = k - column_means - row_means + column_means.mean(axis=2, keepdims=True)
    return k.reshape(2 * samples, 2 * samples)


def kernel_solve(jacobian, local_energies, *, diag_shift, solver_fn, blocks: int):
    """The flat parameter update of kernel SR from the uncentred Jacobian.

    With ``J`` the ``2M x P`` Jacobian (rows: real and imaginary part of each sample),
    ``C`` the centring over samples and ``dv = 2 (E_loc - <E_loc>) / sqrt(M)`` split in
    real and imaginary rows, this is NetKet's
    ``O^T (O O^T + shift)^{-1} dv`` with ``O = C J / sqrt(M)``, computed as
    ``J^T C x / sqrt(M)`` with ``x = (C J J^T C / M + shift)^{-1} dv``.
    Returns the update and the solver's info.
    """
    samples = local_energies.size
    flat = jax.lax.collapse(jacobian, 0, 2)  # rows: Re 1, Im 1, Re 2, ...
    kernel = _centre_pairs(symmetric_gram(flat, blocks), samples) / samples
    kernel = kernel + diag_shift * jnp.eye(2 * samples, dtype=kernel.dtype)
    energies = local_energies.reshape(-1)
    dv = 2.0 * (energies - energies.mean()) / jnp.sqrt(samples)
    dv = jnp.stack([dv.real, dv.imag], axis=-1).reshape(-1)
    solution = solver_fn(kernel, dv)
    solution, info = solution if isinstance(solution, tuple) else (solution, None)
    pairs = solution.reshape(samples, 2)
    centred = (pairs - pairs.mean(axis=0)).reshape(-1)
    return flat.T @ centred / jnp.sqrt(samples), info or {}


@partial(jax.jit, static_argnames=("log_psi", "solver_fn", "mode", "chunk_size", "blocks"))
def _srt_symmetric(
    log_psi,
    local_energies,
    parameters,
    model_state,
    samples,
    *,
    diag_shift,
    solver_fn,
    mode,
    proj_reg=None,
    momentum=None,
    old_updates=None,
    chunk_size=None,
    weights=None,
    blocks: int,
):
    """NetKet's ``srt`` (``netket._src.ngd.sr_srt_common``) with :func:`kernel_solve`."""
    if proj_reg is not None or momentum is not None or weights is not None or mode != "complex":
        raise NotImplementedError("KernelSR needs mode='complex', no proj_reg, momentum, weights")
    updates, info = kernel_solve(
        jacobian(log_psi, parameters, model_state, samples, chunk_size), local_energies,
        diag_shift=diag_shift, solver_fn=solver_fn, blocks=blocks,
    )  # fmt: skip
    return ravel_pytree(parameters)[1](updates), old_updates, info


_SWAP_LOCK = threading.RLock()
"""Held while NetKet's module-level ``srt`` is swapped (see :class:`KernelSR`)."""


class KernelSR(nk.driver.VMC_SR):
    """``VMC_SR`` in explicit kernel mode whose kernel product uses its symmetry.

    For the kernel trick (``use_ntk=True, on_the_fly=False``, ``mode="complex"``) on one
    device: :func:`vitnqs.plan.plan_run` chooses it only there (several devices take
    NetKet's ``explicit`` product), and the constructor refuses anything else.

    NetKet 3.23 has no public hook for the kernel: ``VMC_SR.compute_loss_and_update``
    calls the module-level ``srt`` of ``netket._src.driver.vmc_sr`` inline. Rather than
    copy that method (about 50 lines on NetKet's private state), the module global is
    swapped for the call, under a re-entrant lock so that concurrent drivers in other
    threads never see each other's swap, and restored in every case. NetKet is pinned to
    3.23.x (``pyproject.toml``), so an upgrade is a decision, guarded by
    ``tests/test_sr.py``, which checks the update equals NetKet's own.
    """

    _kernel_blocks: int = struct.field(serialize=False, default=1)

    def __init__(self, *args, blocks: int | None = None, **kwargs):
        """``VMC_SR``'s arguments; ``blocks`` defaults to :func:`kernel_blocks`."""
        super().__init__(*args, **kwargs)
        if not self.use_ntk or self.on_the_fly or self.mode != "complex":
            raise ValueError(
                "KernelSR needs use_ntk=True, on_the_fly=False and mode='complex' "
                f"(got use_ntk={self.use_ntk}, on_the_fly={self.on_the_fly}, mode={self.mode})"
            )
        if jax.device_count() > 1:
            raise ValueError("KernelSR holds one device's Jacobian: use NetKet's explicit mode")
        self._kernel_blocks = blocks or kernel_blocks(self.state.n_samples)

    def compute_loss_and_update(self):
        """NetKet's step, with ``srt`` swapped for :func:`_srt_symmetric` during the call."""
        with _SWAP_LOCK:
            original = _netket_vmc_sr.srt
            _netket_vmc_sr.srt = partial(_srt_symmetric, blocks=self._kernel_blocks)
            try:
                return super().compute_loss_and_update()
            finally:
                _netket_vmc_sr.srt = original
