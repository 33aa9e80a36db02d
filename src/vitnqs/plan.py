"""The run plan: everything decided about how one run executes, decided once.

:func:`plan_run` takes a run, its options and the memory of one device, and returns a
:class:`RunPlan`: the SR mode (``auto`` resolved, NetKet's QGT form where ``M >= P``,
NetKet's dense product on several devices), whether the kernel trick is used, the chunk,
the devices and the memory estimate. The driver (:func:`vitnqs.loop.build_driver`),
the memory check, ``summary.json`` and the workflow's resource requests all read a plan;
nothing below it sees ``auto``.

The device's memory comes from one stated source, in this order
(:func:`device_memory`): ``gpu_memory_gb`` where the config declares it; a measurement
(the pilot's, when it has one); what the device reports at run time. Where none is known
(the workflow, before any job runs) the plan takes the mode that needs the most memory
of those ``auto`` chooses from, so that a job's request covers what its run picks.

Imports neither JAX nor NetKet.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vitnqs import resources
from vitnqs.config import FieldError, RunConfig, RunOptions

PILOT_STEPS = 20
"""Timed steps per run of the pilot after the compiling one (the H200 run was flat from
its second; :mod:`vitnqs.pilot`)."""
MEMORY_SOURCES = ("declared", "measured", "reported", "unknown")
"""Where a plan's device memory came from: ``gpu_memory_gb`` in the config, the pilot's
measurement, the device at run time, or nowhere (the hungrier mode is planned)."""


class MemoryRefused(FieldError):
    """The run's estimate exceeds the declared memory of one GPU (exit code 78)."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """How one run executes (see the module docstring)."""

    sr_mode: str
    """The SR kernel's mode, one of :data:`vitnqs.config.SR_MODES` (never ``auto``)."""
    use_ntk: bool
    """Kernel trick (``M < P``); otherwise NetKet's QGT form with an explicit Jacobian."""
    chunk_size: int | None
    """Samples per forward/backward chunk on one device."""
    n_devices: int
    """Devices the samples are sharded over."""
    device: str
    """``gpu``, ``cpu`` or ``auto`` (:data:`vitnqs.config.DEVICES`)."""
    n_parameters: int
    """Real parameters of the network."""
    memory: resources.MemoryEstimate
    """Bytes one device needs in :attr:`sr_mode`."""
    device_memory_bytes: float | None
    """Memory of one device the mode was chosen for (``None``: not known)."""
    memory_source: str
    """Where :attr:`device_memory_bytes` came from, one of :data:`MEMORY_SOURCES`."""
    requested_sr_mode: str
    """The ``sr_mode`` option as given (``auto`` or a mode)."""

    def describe(self) -> str:
        """One log line."""
        known = (
            "not known"
            if self.device_memory_bytes is None
            else f"{self.device_memory_bytes / 1e9:.1f} GB, {self.memory_source}"
        )
        return (
            f"SR mode {self.sr_mode} (asked: {self.requested_sr_mode}; device memory "
            f"{known}); memory estimate {self.memory.describe()}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The plan for ``summary.json``."""
        fields = dataclasses.asdict(self)
        fields["memory"] = {**fields["memory"], "total": self.memory.total}
        return fields

    def check_memory(self) -> None:
        """Refuse a run whose estimate exceeds the declared memory of one GPU.

        Raises:
            MemoryRefused: naming ``gpu_memory_gb``, with the numbers and the ways out.

        """
        limit = self.device_memory_bytes
        if self.memory_source != "declared" or limit is None or self.memory.total <= limit:
            return
        raise MemoryRefused(
            "gpu_memory_gb",
            f"the run needs about {self.memory.describe()} with SR mode {self.sr_mode}, "
            f"more than the {limit / 1e9:g} GB of one GPU; lower chunk_size or samples, or "
            "use more GPUs (gpus_per_run)"
            + ("" if self.sr_mode == "onthefly" else " or sr_mode onthefly"),
        )


def device_memory(
    options: RunOptions, measured_bytes: float | None = None, reported_bytes: float | None = None
) -> tuple[float | None, str]:
    """The memory of one device and its source, in the order of the module docstring."""
    if options.gpu_memory_gb is not None:
        return options.gpu_memory_gb * 1e9, "declared"
    if measured_bytes is not None:
        return measured_bytes, "measured"
    if reported_bytes is not None:
        return reported_bytes, "reported"
    return None, "unknown"


def plan_run(
    config: RunConfig,
    options: RunOptions,
    measured_bytes: float | None = None,
    reported_bytes: float | None = None,
) -> RunPlan:
    """Decide how ``config`` executes under ``options`` (see the module docstring).

    Args:
        config: the run (validated).
        options: how it executes (validated); ``sr_mode`` may be ``auto``.
        measured_bytes: memory of one device measured by the pilot, if any.
        reported_bytes: memory of one device as JAX reports it, at run time.

    """
    memory_bytes, source = device_memory(options, measured_bytes, reported_bytes)
    P = config.n_parameters
    use_ntk = config.samples < P
    # the dense product of several devices is NetKet's (KernelSR holds one device's)
    dense = "explicit" if options.n_devices > 1 else "symmetric"

    def estimate(mode: str) -> resources.MemoryEstimate:
        return resources.run_memory(
            config, mode, options.chunk_size, options.n_devices, options.local_energy
        )

    if not use_ntk:  # NetKet's QGT form: an explicit Jacobian, no kernel
        mode = "explicit"
    elif options.sr_mode == "auto":
        fits = memory_bytes is None or estimate(dense).total <= resources.FIT * memory_bytes
        mode = dense if fits else "onthefly"
    else:
        mode = dense if options.sr_mode == "symmetric" else options.sr_mode
    return RunPlan(
        sr_mode=mode,
        use_ntk=use_ntk,
        chunk_size=options.chunk_size,
        n_devices=options.n_devices,
        device=options.device,
        n_parameters=P,
        memory=estimate(mode),
        device_memory_bytes=memory_bytes,
        memory_source=source,
        requested_sr_mode=options.sr_mode,
    )


# -- the job's requests: from the pilot's measurements where they exist -----------------
SECONDS_PER_SAMPLE_SITE_LAYER = 8.3e-6
"""Time per step of the formula, per sample, site and layer on one A100: the paper's
Table 1 (T5, L = 10, 4 layers, M = 6000: 28 h / 5000 steps = 20 s per step)."""
TIME_MARGIN = {"formula": 1.5, "pilot": 1.3}
"""Factor on the projected time of a run (the formula is a rough scaling; the pilot
measured this run's own step on this device), plus :data:`TIME_EXTRA_MINUTES`."""
TIME_EXTRA_MINUTES = 10
"""Start-up, compilation and the final evaluation."""
MEMORY_MARGIN = {"formula": 1.2, "pilot": 1.3}
"""Factor on host memory: on the plan's estimate per device (a conservative request:
for a GPU run it is device memory), or on the pilot's measured peak of the process."""


def step_seconds(
    config: RunConfig, n_devices: int, pilot_row: dict[str, Any] | None = None
) -> float:
    """Seconds of one optimization step: the pilot's median, else the formula's."""
    if pilot_row is not None:
        return float(pilot_row["median_step_s"])
    return (
        SECONDS_PER_SAMPLE_SITE_LAYER * config.samples * config.n_sites * config.layers / n_devices
    )


def runtime_minutes(
    config: RunConfig,
    n_devices: int,
    attempt: int,
    max_runtime: int | None,
    pilot_row: dict[str, Any] | None = None,
) -> int:
    """Minutes one job of a run asks for: ``attempt`` times the estimate, at most the cap.

    The estimate is the pilot's projection (compilation plus every step at the measured
    median) with its margin where a pilot row exists, else the formula's
    (:data:`SECONDS_PER_SAMPLE_SITE_LAYER`). A run longer than ``max_runtime`` goes on
    over several jobs, each stopped by SLURM's warning with a checkpoint.
    """
    if pilot_row is not None:
        hours = pilot_row["projected_hours"]
        minutes = TIME_MARGIN["pilot"] * 60 * hours + TIME_EXTRA_MINUTES
    else:
        seconds = step_seconds(config, n_devices) * config.steps
        minutes = TIME_MARGIN["formula"] * seconds / 60 + TIME_EXTRA_MINUTES
    minutes *= attempt
    return int(minutes if max_runtime is None else min(minutes, max_runtime))


def job_memory_mb(
    estimate_bytes: float, n_devices: int, pilot_row: dict[str, Any] | None = None
) -> int:
    """Host memory one job of a run asks for, in MB (see :data:`MEMORY_MARGIN`)."""
    if pilot_row is not None:
        return int(MEMORY_MARGIN["pilot"] * pilot_row["peak_host_bytes"] / 1e6)
    return int(MEMORY_MARGIN["formula"] * n_devices * estimate_bytes / 1e6)


# -- the symmetrized evaluation (beyond the paper: vitnqs.symmetry) ----------------------
EVAL_CHAIN_LENGTH = 4
"""Fresh samples kept per chain in a final evaluation: the plain network's
(``vitnqs.optimize``, from the run's ``M`` chains) and the symmetrized one's
(``vitnqs symmetrize``), so that by default both use ``4 M`` samples."""


def symmetrized_samples(run_samples: int | None, samples: int | None = None) -> int:
    """Samples of the symmetrized evaluation, a whole number of chains.

    Args:
        run_samples: the run's samples per step ``M`` (needed without ``samples``).
        samples: asked for; default ``EVAL_CHAIN_LENGTH * M`` (``M`` chains,
            as many samples as the plain network's final evaluation). Rounded up to a
            multiple of :data:`EVAL_CHAIN_LENGTH`.

    """
    per_chain = EVAL_CHAIN_LENGTH
    if samples is None:
        if run_samples is None:
            raise ValueError("samples not given and the run's samples not known")
        return per_chain * run_samples
    if samples < 1:
        raise ValueError(f"samples={samples} must be positive")
    return -(-samples // per_chain) * per_chain


@dataclasses.dataclass(frozen=True)
class SymmetrizedPlan:
    """How the symmetrized evaluation of a finished run executes."""

    samples: int
    """Samples of the projected state (:func:`symmetrized_samples`): by default
    ``4 M`` from the run's ``M`` chains, as in the plain network's final evaluation."""
    chunk_size: int
    """Samples per network chunk: each costs :attr:`n_ops` evaluations of the network,
    so the run's chunk is divided by them (a divisor of :attr:`samples`)."""
    n_ops: int
    """Evaluations of the network per configuration (patch cosets x C4v x spin flip)."""
    memory: resources.MemoryEstimate
    """Bytes one device needs: the activations of one chunk, :attr:`n_ops` times."""


def plan_symmetrized(
    config: RunConfig, options: RunOptions, samples: int | None = None
) -> SymmetrizedPlan:
    """The symmetrized evaluation's samples, chunk and memory for a run.

    Args:
        config: the finished run.
        options: how its job executes (the run's chunk size).
        samples: samples of the projected state (default: :func:`symmetrized_samples`,
            ``4 M``).

    """
    samples = symmetrized_samples(config.samples, samples)
    n_ops = 2 * 8 * config.b**2
    target = max(1, (options.chunk_size or samples) // n_ops)
    chunk = max(d for d in range(1, target + 1) if samples % d == 0)
    estimate = resources.memory_estimate(
        samples, config.n_parameters, chunk * n_ops, "onthefly",
        n_conn=resources.n_connected(config.L, config.J2), n_patches=(config.L // config.b) ** 2,
        d=config.d, heads=config.heads,
    )  # fmt: skip
    memory = dataclasses.replace(estimate, jacobian=0.0, kernel=0.0)
    return SymmetrizedPlan(samples, chunk, n_ops, memory)


def plan_finetune(config: RunConfig, samples: int, chunk_size: int | None = None) -> RunPlan:
    """How the symmetrized fine-tuning of a finished run executes (:mod:`vitnqs.finetune`).

    The projected network costs ``n_ops`` evaluations per configuration, so its stored
    Jacobian would be paid for ``n_ops`` times over: fine-tuning takes NetKet's
    on-the-fly kernel where the kernel trick applies (``M < P``), NetKet's QGT form
    (``explicit``) otherwise, on one device.

    Args:
        config: the finished run (its network: ``P``, the lattice).
        samples: samples per fine-tuning step.
        chunk_size: configurations per chunk of the projected network (``None``: all).

    """
    P = config.n_parameters
    use_ntk = samples < P
    mode = "onthefly" if use_ntk else "explicit"
    estimate = resources.memory_estimate(
        samples, P, chunk_size, mode,
        n_conn=resources.n_connected(config.L, config.J2), n_patches=(config.L // config.b) ** 2,
        d=config.d, heads=config.heads,
    )  # fmt: skip
    n_ops = 2 * 8 * config.b**2
    return RunPlan(
        sr_mode=mode,
        use_ntk=use_ntk,
        chunk_size=chunk_size,
        n_devices=1,
        device="auto",
        n_parameters=P,
        memory=dataclasses.replace(estimate, activations=n_ops * estimate.activations),
        device_memory_bytes=None,
        memory_source="unknown",
        requested_sr_mode="auto",
    )
