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

Every request of the workflow's jobs (time, memory, GPUs, retries, SLURM's warning) is
computed here too, each margin and fixed number a named constant: the rules and
``workflow/rules/common.smk`` hold no number of their own (``tests/test_requests.py``).

Imports neither JAX, NetKet nor Snakemake.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from vitnqs import resources
from vitnqs.config import PAPER_MODEL, FieldError, RunConfig, RunOptions

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


# -- the jobs' requests ------------------------------------------------------------------
# Every number a rule of the workflow asks for (time, memory, GPUs, retries, SLURM's
# warning) comes from here: workflow/rules/common.smk only translates a job's wildcards
# into a RunConfig and calls these; the rules hold no number of their own.

# the optimization runs: from the pilot's measurements where they exist
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
FAILURE_RETRIES = 2
"""Retries of a resumable job beyond the jobs its length needs under the site's cap: for
node failures and preemptions (each retry resumes from the run's checkpoint)."""
WARNING_SHARE = 0.25
"""SLURM's warning before the time limit, as a share of the job's time (the run then
checkpoints and exits 75), within :data:`WARNING_MIN_SECONDS` and
:data:`WARNING_MAX_SECONDS`."""
WARNING_MAX_SECONDS = 300
"""At most 5 minutes of warning, however long the job (a quarter of a 48-hour job would
be 12 hours): the run only checkpoints and exits."""
WARNING_MIN_SECONDS = 30
"""At least slurmctld's period: it acts on time limits every 30 s, so the warning comes
``N`` to ``N + 30`` s before the limit and the job ends at the first check after it; the
run has ``N`` to ``N + 30`` s to finish."""
WARNING_SIGNAL = "URG"
"""SIGURG, not SIGUSR1, and no ``B:``: SLURM signals every process of the job step, the
Snakemake process that runs the rule and its shell too; they ignore SIGURG (by default)
but die from SIGUSR1, which kills the run before it checkpoints. With ``B:`` only the
batch shell gets it, dies, and the job ends at once (:mod:`vitnqs.stops`)."""
MIN_MAX_RUNTIME = 2
"""The shortest time cap (the site's ``max_runtime``, minutes) the workflow accepts: a
one-minute job would be mostly SLURM's warning (:data:`WARNING_MIN_SECONDS` and up to
slurmctld's period); the cluster tests spread a run over jobs of 2 to 4 minutes."""


def capped_minutes(minutes: float, max_runtime: int | None) -> int:
    """A time request in whole minutes, at most the site's cap (``None``: no cap)."""
    return int(minutes if max_runtime is None else min(minutes, max_runtime))


def max_runtime_error(max_runtime: Any) -> str | None:
    """Why a site's ``max_runtime`` is refused (see :data:`MIN_MAX_RUNTIME`), or ``None``."""
    if max_runtime is None or (isinstance(max_runtime, int) and max_runtime >= MIN_MAX_RUNTIME):
        return None
    return (
        f"default-resources: max_runtime must be a number of minutes >= {MIN_MAX_RUNTIME} "
        f"(the GPU partition's MaxTime), got {max_runtime!r}"
    )


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
    return capped_minutes(minutes, max_runtime)


def job_memory_mb(
    estimate_bytes: float, n_devices: int, pilot_row: dict[str, Any] | None = None
) -> int:
    """Host memory one job of a run asks for, in MB (see :data:`MEMORY_MARGIN`)."""
    if pilot_row is not None:
        return int(MEMORY_MARGIN["pilot"] * pilot_row["peak_host_bytes"] / 1e6)
    return int(MEMORY_MARGIN["formula"] * n_devices * estimate_bytes / 1e6)


def run_retries(
    configs: Sequence[RunConfig],
    n_devices: int,
    max_runtime: int | None,
    pilot_rows: Sequence[dict[str, Any] | None],
) -> int:
    """Retries of the optimize rule.

    The jobs the longest run needs under the cap (its first attempt's estimate,
    uncapped), less the first, plus :data:`FAILURE_RETRIES`.

    Args:
        configs: every run of the sweep.
        n_devices: devices per run.
        max_runtime: the site's cap in minutes (``None``: one job per run).
        pilot_rows: the pilot's row of each of ``configs`` (``None`` where it has none).

    """
    longest = max(
        runtime_minutes(config, n_devices, 1, None, row)
        for config, row in zip(configs, pilot_rows, strict=True)
    )
    jobs = 1 if max_runtime is None else math.ceil(longest / max_runtime)
    return jobs - 1 + FAILURE_RETRIES


def slurm_warning(job_minutes: int) -> str:
    """The ``sbatch`` option of SLURM's warning before a job's time limit.

    A share of the job's time within bounds (:data:`WARNING_SHARE`), by
    :data:`WARNING_SIGNAL`.
    """
    share = int(60 * job_minutes * WARNING_SHARE)
    seconds = min(WARNING_MAX_SECONDS, max(WARNING_MIN_SECONDS, share))
    return f"--signal={WARNING_SIGNAL}@{seconds}"


def run_gpus(options: RunOptions, gpus_for_cpu_presets: bool) -> int:
    """GPUs of an optimization job.

    Its devices; none for a preset on the CPU (its jobs go to the default partition)
    unless the config opts in (``gpus_for_cpu_presets``, e.g. to test a cluster's GPU
    scheduling with CPU-sized runs).
    """
    return options.n_devices if options.device != "cpu" or gpus_for_cpu_presets else 0


# the jobs that time steps (the pilot, step_times, benchmark_phases)
ONE_DEVICE_GPUS = 1
"""GPUs of a job that runs on one device where the runs get GPUs: the timing jobs (one
run at a time, alone) and the symmetrized evaluation and fine-tuning."""
TIMING_TIME_MARGIN = TIME_MARGIN["formula"]
"""Factor on the projected time of a job that times a few steps (``pilot_run``,
``step_times``): the formula's, whatever the rate's source, plus
:data:`TIME_EXTRA_MINUTES`."""
COMPILE_STEPS = 1
"""The compiling step a pilot takes before its timed ones (:mod:`vitnqs.pilot`)."""
STEP_TIMES_STEPS = 10
"""Timed steps per run of ``step_times`` (the fig3 sweep), after its compiling step."""
STEP_TIMES_EXTRA_STEPS = 2
"""Steps of each run of ``step_times`` counted beyond :data:`STEP_TIMES_STEPS`: its
compiling step and one for the warm-up."""
STEP_TIMES_STARTUP_MINUTES = 2
"""Start-up of each run of ``step_times`` (its driver's build), on top of its steps."""
BENCHMARK_EXTRA_MINUTES = 30
"""Time of ``benchmark_phases`` beyond its budget (the preset's ``max_minutes``, after
which it starts no case): the case under way when the budget ends, and the start-up."""
BENCHMARK_J2 = 0.5
"""J2 of the phase benchmark's cases (``vitnqs benchmark``'s default, which the
workflow leaves)."""
TIMING_GPU_HOST_MB = 8000
"""Host memory of a timing job on a GPU: the host holds little (the paper-size phase
benchmark on an H200 peaked at 4.2 GB)."""
TIMING_MIN_HOST_MB = 2000
"""Least host memory of a timing job on the CPU, however small its cases (JAX and
NetKet alone take about 1 GB, :data:`vitnqs.resources.BASELINE_BYTES`)."""


def pilot_minutes(
    config: RunConfig,
    n_devices: int,
    timed_steps: int,
    attempt: int,
    max_runtime: int | None,
    pilot_row: dict[str, Any] | None = None,
) -> int:
    """Minutes of a pilot job.

    Its steps (:data:`COMPILE_STEPS` and ``timed_steps``) at the run's rate
    (:func:`step_seconds`), with :data:`TIMING_TIME_MARGIN` and
    :data:`TIME_EXTRA_MINUTES` for start-up and compilation, ``attempt`` times, capped.
    """
    seconds = step_seconds(config, n_devices, pilot_row) * (timed_steps + COMPILE_STEPS)
    return capped_minutes(
        attempt * (TIMING_TIME_MARGIN * seconds / 60 + TIME_EXTRA_MINUTES), max_runtime
    )


def step_times_minutes(
    configs: Sequence[RunConfig],
    pilot_rows: Sequence[dict[str, Any] | None],
    attempt: int,
    max_runtime: int | None,
) -> int:
    """Minutes of ``step_times``.

    Each timed run's steps (:data:`STEP_TIMES_STEPS` and :data:`STEP_TIMES_EXTRA_STEPS`)
    at its rate on one device, with :data:`TIMING_TIME_MARGIN`,
    :data:`STEP_TIMES_STARTUP_MINUTES` each and :data:`TIME_EXTRA_MINUTES`, ``attempt``
    times, capped.

    Args:
        configs: the runs it times.
        pilot_rows: the pilot's row of each (``None`` where it has none).
        attempt: the job's attempt (1 first).
        max_runtime: the site's cap in minutes (``None``: none).

    """
    steps = STEP_TIMES_STEPS + STEP_TIMES_EXTRA_STEPS
    seconds = sum(
        step_seconds(config, 1, row) * steps
        for config, row in zip(configs, pilot_rows, strict=True)
    )
    minutes = (
        TIMING_TIME_MARGIN * seconds / 60
        + STEP_TIMES_STARTUP_MINUTES * len(configs)
        + TIME_EXTRA_MINUTES
    )
    return capped_minutes(attempt * minutes, max_runtime)


def timing_memory_mb(
    configs: Sequence[RunConfig],
    options: RunOptions,
    chunk: int | None,
    sr_modes: Sequence[str] = ("auto",),
) -> int:
    """Host memory (MB) of a job that times ``configs`` one at a time on one device.

    On a GPU :data:`TIMING_GPU_HOST_MB`; on the CPU the largest case's estimate (in each
    of ``sr_modes``, with ``chunk``) with :data:`MEMORY_MARGIN`, at least
    :data:`TIMING_MIN_HOST_MB`.
    """
    if options.device != "cpu":
        return TIMING_GPU_HOST_MB
    largest = max(
        plan_run(
            config, dataclasses.replace(options, chunk_size=chunk, sr_mode=mode, n_devices=1)
        ).memory.total
        for config in configs
        for mode in sr_modes
    )
    return max(TIMING_MIN_HOST_MB, job_memory_mb(largest, 1))


def benchmark_configs(bench: Mapping[str, Any]) -> list[RunConfig]:
    """The largest case of the phase benchmark at each L (T5: the most parameters).

    Args:
        bench: a preset's ``benchmark`` section (``L``, ``samples``, optional ``model``).

    """
    model = {"layers": PAPER_MODEL["layers"], **bench.get("model", {})}
    return [
        RunConfig(attention="t5", L=L, J2=BENCHMARK_J2, samples=bench["samples"], **model)
        for L in bench["L"]
    ]


def benchmark_minutes(bench: Mapping[str, Any], max_runtime: int | None) -> int:
    """Minutes of ``benchmark_phases``: its budget and :data:`BENCHMARK_EXTRA_MINUTES`."""
    return capped_minutes(bench["max_minutes"] + BENCHMARK_EXTRA_MINUTES, max_runtime)


def benchmark_memory_mb(bench: Mapping[str, Any], options: RunOptions) -> int:
    """Host memory (MB) of ``benchmark_phases``: :func:`timing_memory_mb` of its cases."""
    modes = bench.get("sr_modes", ["auto"])
    return timing_memory_mb(benchmark_configs(bench), options, bench["chunk_size"], modes)


# jobs of fixed size
ATTENTION_MAPS_MINUTES = 30
"""Time of ``attention_maps``: a few forward passes of one network on the CPU."""
ATTENTION_MAPS_MB = 4000
"""Host memory of ``attention_maps``: the network and the maps of a few samples."""
SYMMETRIZE_MINUTES = 60
"""Time per attempt of a symmetrized evaluation (``symmetrize``,
``finetuned_symmetrized``); a retry asks for a multiple of it."""
FINETUNE_MINUTES = 120
"""Time per attempt of the symmetrized fine-tuning (``finetune``); a retry asks for a
multiple of it and resumes from the checkpoint."""


def attempt_minutes(minutes_per_attempt: int, attempt: int, max_runtime: int | None) -> int:
    """``attempt`` times a fixed time request, at most the site's cap."""
    return capped_minutes(attempt * minutes_per_attempt, max_runtime)


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


# -- the symmetrized fine-tuning (vitnqs.finetune) ----------------------------------------
@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    """How the symmetrized fine-tuning of a finished run executes."""

    samples: int
    """Samples per step: by default the run's ``M``, one per chain as in the run."""
    chunk_size: int
    """Samples per network chunk: the symmetrized evaluation's
    (:attr:`SymmetrizedPlan.chunk_size`), which the workflow gives both."""
    n_ops: int
    """Evaluations of the network per configuration (:attr:`SymmetrizedPlan.n_ops`)."""
    sr_mode: str
    """NetKet's ``onthefly`` kernel where the kernel trick applies, else ``explicit``."""
    use_ntk: bool
    """Kernel trick (``M < P``); otherwise NetKet's QGT form."""
    memory: resources.MemoryEstimate
    """Bytes one device needs: an SR step on :attr:`samples` in :attr:`sr_mode` and the
    symmetrized evaluation's activations of one chunk."""


def plan_finetune(
    config: RunConfig, options: RunOptions, samples: int | None = None
) -> FinetunePlan:
    """The symmetrized fine-tuning's SR mode, samples, chunk and memory for a run.

    The projected network costs ``n_ops`` evaluations per configuration: fine-tuning
    takes NetKet's on-the-fly kernel where the kernel trick applies (``M < P``), which
    holds one chunk's Jacobian, and NetKet's QGT form (``explicit``) otherwise, on one
    device. Unlike the final evaluation (:func:`plan_symmetrized`, ``4 M`` samples and
    no SR), a step samples ``M`` and solves SR on them; its chunk, and so the
    activations, are the evaluation's.

    Args:
        config: the finished run.
        options: how its job executes (the run's chunk size).
        samples: samples per step (default the run's ``M``).

    """
    evaluation = plan_symmetrized(config, options)
    samples = config.samples if samples is None else samples
    use_ntk = samples < config.n_parameters
    mode = "onthefly" if use_ntk else "explicit"
    sr = resources.memory_estimate(samples, config.n_parameters, evaluation.chunk_size, mode)
    memory = dataclasses.replace(evaluation.memory, jacobian=sr.jacobian, kernel=sr.kernel)
    return FinetunePlan(samples, evaluation.chunk_size, evaluation.n_ops, mode, use_ntk, memory)
