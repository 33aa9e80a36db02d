"""Which devices a run uses, chosen before JAX starts and checked before the first step.

A run asks for ``gpu``, ``cpu`` or ``auto`` (:data:`vitnqs.config.DEVICES`) and a number of
devices (NetKet shards the samples over every device JAX sees). :func:`configure` must run before
JAX initializes its backends (NetKet does so when it is imported): it is the only way to
keep JAX off a GPU or to split the CPU into several devices. :func:`require_device` then
checks what JAX actually has and raises :class:`DeviceError`, with the reason and the fix,
when the run would waste its allocation, e.g. a SLURM job holding a GPU with JAX on the CPU.

This module imports JAX lazily and never NetKet, so that the command line can call
:func:`configure` first.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from typing import Any

CUDA_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin")
"""Packages that give JAX its CUDA backend (``pip install -r requirements-cuda.lock``)."""

INSTALL_HINT = (
    "install the CUDA build (`pip install -r requirements-cuda.lock -e .`) or run the "
    "workflow with `--software-deployment-method conda` (envs/vitnqs-cuda.yaml)"
)


class DeviceError(RuntimeError):
    """The requested devices are not usable; the message says why and how to fix it."""


XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
"""``XLA_FLAGS`` of a CPU run given one thread (the workflow's runs side by side): XLA's
thread pool takes every core by default. Results change in the last digits with it."""


def allocated_gpus(environ: Mapping[str, str] | None = None) -> str | None:
    """The GPUs the batch system gave this process, or ``None`` if it gave none.

    A non-empty ``SLURM_JOB_GPUS``, or a ``CUDA_VISIBLE_DEVICES`` other than SLURM's
    ``NoDevFiles`` (which it sets when the node has GPUs but the job got none).

    Args:
        environ: the environment to read (default: this process's).

    Returns:
        The variable and its value, e.g. ``"SLURM_JOB_GPUS=0"``, or ``None``.

    """
    environ = os.environ if environ is None else environ
    for name in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = environ.get(name, "").strip()
        if value and value != "NoDevFiles":
            return f"{name}={value}"
    return None


def cuda_plugin_installed() -> str | None:
    """Name and version of the installed JAX CUDA plugin, or ``None``."""
    for name in CUDA_PLUGINS:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def configure(kind: str, count: int = 1) -> None:
    """Set JAX's platform and CPU device count; call before JAX initializes its backends.

    ``cpu`` hides every other platform from JAX; with ``count > 1`` the CPU is split into
    that many devices (NetKet then shards the samples over them, as over several GPUs).
    Does nothing for ``gpu`` and ``auto`` (JAX takes every visible GPU by itself), or
    when the backends are already initialized (:func:`require_device` then reports a
    mismatch).

    Args:
        kind: one of :data:`vitnqs.config.DEVICES` (validated by ``RunOptions``).
        count: devices the run shards over.

    """
    import jax
    from jax._src import xla_bridge  # no public way to ask this

    if kind != "cpu" or xla_bridge.backends_are_initialized():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"  # and in child processes (vitnqs benchmark cases)
    jax.config.update("jax_platforms", "cpu")
    if count > 1:
        jax.config.update("jax_num_cpu_devices", count)


def _gpu_problem() -> str | None:
    """Why JAX has no GPU backend (``None`` if it has one)."""
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError as error:
        plugin = cuda_plugin_installed()
        if plugin is None:
            return f"no CUDA-enabled jaxlib installed (the CPU build of jax): {INSTALL_HINT}"
        return (
            f"the CUDA plugin failed to start ({plugin} is installed; a driver or CUDA "
            f"library problem on this node, check `nvidia-smi`): {error}"
        )
    return None


def require_device(
    kind: str, count: int = 1, environ: Mapping[str, str] | None = None
) -> list[Any]:
    """Check that JAX runs on the requested kind and number of devices.

    Args:
        kind: one of :data:`vitnqs.config.DEVICES` (validated by ``RunOptions``).
        count: devices the run shards over (``gpus_per_run``).
        environ: the environment to read for a GPU allocation (default: this process's).

    Returns:
        The JAX devices the run uses.

    Raises:
        DeviceError: ``gpu`` without a GPU backend; ``cpu`` when JAX was started on
            another platform; ``auto`` when GPUs are allocated but JAX cannot use them;
            or a device count other than ``count``. The message tells a missing CUDA
            build apart from a CUDA plugin that failed to start.

    """
    import jax

    platform = jax.default_backend()
    gpus = allocated_gpus(environ)
    if kind == "gpu" and platform != "gpu":
        raise DeviceError(f"--device gpu: JAX has no GPU backend: {_gpu_problem()}")
    if kind == "cpu" and platform != "cpu":
        raise DeviceError(
            f"--device cpu: JAX was started on {platform} before the device could be "
            "chosen (call vitnqs.devices.configure before importing netket)"
        )
    if kind == "auto" and gpus is not None and platform != "gpu":
        raise DeviceError(
            f"--device auto: this job holds GPUs ({gpus}) but JAX runs on {platform}: "
            f"{_gpu_problem()}. Pass --device cpu to run on the CPU on purpose."
        )
    devices = jax.devices()
    if len(devices) != count:
        raise DeviceError(
            f"--devices: the run is set to shard over {count} device(s) (gpus_per_run) "
            f"but JAX sees {len(devices)}: {', '.join(str(d) for d in devices)}"
            + (f" ({gpus})" if gpus else "")
        )
    return devices


def describe(devices: list[Any], kind: str, environ: Mapping[str, str] | None = None) -> str:
    """One log line: the devices in use, and allocated GPUs left unused on purpose."""
    names = ", ".join(str(d) for d in devices)
    line = f"device {kind}: running on {len(devices)} {devices[0].platform} device(s): {names}"
    gpus = allocated_gpus(environ)
    if devices[0].platform == "cpu" and gpus is not None:
        line += f"; the allocated GPUs ({gpus}) stay unused (--device {kind})"
    return line
