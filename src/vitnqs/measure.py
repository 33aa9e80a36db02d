"""One measuring kit for time and memory.

The runs, the step-time job, the phase benchmark and the GPU check all read their
clocks and allocators through it:

* :func:`timed`: wall and process-CPU seconds of one call, waiting for JAX's results;
* :func:`median_after_compile`: the median of step times without the first (compiling)
  step;
* :func:`peak_device_bytes`: peak bytes in use from JAX's allocator, largest over every
  device (``None`` on a CPU, whose allocator reports nothing); not nvidia-smi, which
  shows the memory JAX preallocates;
* :func:`device_memory_bytes`: the memory JAX may use on a device (the host's physical
  memory on a CPU);
* :func:`peak_host_bytes`: the process's peak resident memory.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Timing(NamedTuple):
    """A call's result and its cost."""

    result: Any
    """What the call returned (its JAX arrays ready)."""
    wall_s: float
    """Wall-clock seconds."""
    cpu_s: float
    """CPU seconds of the process, all threads: the steadier measure on shared cores."""


def timed(function: Callable[[], Any]) -> Timing:
    """Time ``function()`` until its JAX results are ready."""
    import jax

    start, start_cpu = time.perf_counter(), time.process_time()
    result = jax.block_until_ready(function())
    return Timing(result, time.perf_counter() - start, time.process_time() - start_cpu)


def median_after_compile(step_times: Sequence[float]) -> float | None:
    """Median of step times after the first, which includes compilation.

    ``None`` if there are fewer than two.
    """
    return statistics.median(step_times[1:]) if len(step_times) > 1 else None


def peak_device_bytes(devices: Sequence[Any] | None = None) -> int | None:
    """Largest peak of bytes in use over ``devices`` (default: all of JAX's).

    From JAX's allocator; ``None`` where no device reports one (the CPU).
    """
    import jax

    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices or jax.devices()]
    peaks = [int(p) for p in peaks if p is not None]
    return max(peaks) if peaks else None


def device_memory_bytes(device: Any | None = None) -> float:
    """Memory JAX may use on ``device`` (default: the first).

    A GPU's limit, or the host's physical memory on a CPU.
    """
    import jax

    stats = (device or jax.devices()[0]).memory_stats() or {}
    if "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def peak_host_bytes() -> int:
    """Peak resident memory of this process (Linux reports kibibytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stopwatch:
    """Wall time between :meth:`start` and :meth:`stop`.

    For a step inside a driver's loop, whose callbacks start and stop it (the step's
    energy is read before it stops, which waits for JAX).
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        """Start (again) now."""
        self.started = time.perf_counter()

    def stop(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self.started
