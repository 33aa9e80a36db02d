"""One variational optimization of the ViT on the J1-J2 model, resumable and crash-safe.

:func:`optimize` writes into its output directory:

* ``history.csv``: one row per step (see :data:`HISTORY_COLUMNS`);
* ``summary.json``: settings, parameter count, final energy, timings, versions, device;
* ``init_params.msgpack`` and ``params.msgpack``: initial and final parameters;
* ``checkpoint.msgpack`` (+ ``checkpoint.prev.msgpack``): driver state, sampler state and
  RNG, optimizer state, step counter and history, for resuming.

Re-running with the same directory resumes from the last good checkpoint; a finished
run is a no-op. SIGTERM, SIGURG (the SLURM warning signal, see ``workflow/rules/common.smk``),
SIGUSR1 and SIGINT write a checkpoint at the next step boundary and exit with
:data:`EXIT_INTERRUPTED`. One process at a time works in a directory: it holds
``run.lock`` (:func:`vitnqs.checkpoint.lock_run_dir`) and a second one stops at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import optax
from netket.callbacks import AbstractCallback
from netket.utils import struct

from vitnqs import checkpoint, devices, resources
from vitnqs.models import ATTENTIONS, ViT, validate_architecture
from vitnqs.physics import energy_lower_bound, exchange_sampler, j1j2_hamiltonian
from vitnqs.progress import Progress
from vitnqs.references import Reference, reference_energy, relative_error
from vitnqs.sr import KernelSR

EXIT_BAD_INPUT = 2
"""Exit code for invalid options or a directory holding a different run."""
EXIT_DIVERGED = 3
"""Exit code when the energy or the parameters stop being finite."""
EXIT_INTERRUPTED = 75
"""Exit code after a signal: a checkpoint was written, rerun the command to resume."""
EXIT_BAD_SETUP = devices.EXIT_BAD_SETUP
"""Exit code when the machine cannot run the run as asked (e.g. ``--device gpu`` without a
usable GPU, or too little GPU memory; sysexits' EX_CONFIG); nothing was written."""
EXIT_BUSY = 73
"""Exit code when another process holds the run directory's lock; nothing was touched."""

HISTORY_COLUMNS = (
    "step",
    "energy",
    "energy_error",
    "energy_variance",
    "rel_error",
    "acceptance",
    "r_hat",
    "lr",
    "time_s",
)
"""Columns of ``history.csv``: mean, error of the mean and variance of the local energy
per site ``E_loc / N`` (S.S units), relative error to the reference, acceptance,
split-R-hat over an exponential window of past steps (empty when NetKet gives none),
learning rate and wall time of the step in seconds."""

EVAL_CHAIN_LENGTH = 4
"""Final evaluation: this many fresh samples per chain, i.e. 4 x ``samples`` in total."""
EVAL_DISCARD = 4
"""Sweeps discarded per chain before the final evaluation."""


NETWORK_DTYPES = ("float64", "float32")
"""Allowed arithmetic of the network (see :attr:`RunOptions.network_dtype`)."""


class ConfigError(ValueError):
    """An option is out of range; the message names it."""


class Interrupted(Exception):
    """A signal asked the run to stop; a checkpoint has been written."""


class Diverged(RuntimeError):
    """The energy or the parameters became non-finite; the last checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines one optimization run (defaults: the paper's)."""

    attention: str
    """Attention mechanism, one of :data:`vitnqs.models.ATTENTIONS`."""
    L: int
    """Linear lattice size."""
    J2: float
    """Next-nearest-neighbour coupling (J1 = 1)."""
    layers: int
    """Number of encoder blocks."""
    d: int = 60
    """Embedding dimension."""
    heads: int = 10
    """Number of attention heads."""
    b: int = 2
    """Linear patch size."""
    samples: int = 6000
    """Monte Carlo samples per step (= Markov chains, one sample each)."""
    steps: int = 5000
    """Optimization steps."""
    lr: float = 0.03
    """Initial learning rate tau0; cosine decay to 0 over ``steps``."""
    diag_shift: float = 1e-4
    """Diagonal shift of the SR kernel."""
    seed: int = 0
    """Seed of the parameter initialization and of the sampler."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        try:
            validate_architecture(self.attention, self.L, self.layers, self.d, self.heads, self.b)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        checks = [
            ("samples", self.samples, isinstance(self.samples, int) and self.samples > 0, "> 0"),
            ("steps", self.steps, isinstance(self.steps, int) and self.steps > 0, "> 0"),
            ("lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "> 0"),
            ("diag-shift", self.diag_shift, self.diag_shift > 0, "> 0"),
            ("J2", self.J2, self.J2 >= 0 and math.isfinite(self.J2), ">= 0"),
            ("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, ">= 0"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"--{name}: must be {allowed} (got {value!r})")

    @property
    def n_sites(self) -> int:
        """Number of lattice sites."""
        return self.L * self.L


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to execute a run; none of these change the result beyond rounding."""

    chunk_size: int | None = None
    """Samples per forward/backward chunk (memory bound); ``None`` for no chunking."""
    checkpoint_every: int | None = None
    """Steps between checkpoints; ``None`` for about every 5 minutes."""
    progress: bool = True
    """Print progress on stderr."""
    sr_mode: str = "auto"
    """How the SR kernel is built: ``explicit``, ``onthefly`` (see
    :data:`vitnqs.resources.SR_MODES`) or ``auto``
    (:func:`vitnqs.resources.choose_sr_mode` from the samples, parameters and memory)."""
    network_dtype: str = "float64"
    """Arithmetic of the network (``float64`` or ``float32``); parameters, kernel and
    solve stay float64."""
    reference_file: Path | None = None
    """JSON written by ``vitnqs reference``; ``None`` computes the reference here."""
    device: str = "auto"
    """``gpu``, ``cpu`` or ``auto``: see :data:`vitnqs.devices.DEVICES`."""
    n_devices: int = 1
    """Devices NetKet shards the samples over (the workflow's ``gpus_per_run``)."""
    gpu_memory_gb: float | None = None
    """Memory of one GPU; a run whose estimate exceeds it is refused before it starts."""

    def validate(self, config: RunConfig | None = None) -> None:
        """Raise :class:`ConfigError` naming the first invalid option.

        Args:
            config: if given, also check that its samples split evenly over the devices
                and into chunks (NetKet shards the chains over the devices, then chunks
                each device's samples).

        """
        for name, value in (
            ("chunk-size", self.chunk_size),
            ("checkpoint-every", self.checkpoint_every),
            ("n-devices", self.n_devices),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name}: must be a positive integer (got {value!r})")
        if self.network_dtype not in NETWORK_DTYPES:
            raise ConfigError(
                f"--network-dtype: unknown dtype {self.network_dtype!r}; "
                f"allowed: {', '.join(NETWORK_DTYPES)}"
            )
        if self.sr_mode not in ("auto", *resources.SR_MODES):
            raise ConfigError(
                f"--sr-mode: unknown mode {self.sr_mode!r}; "
                f"allowed: auto, {', '.join(resources.SR_MODES)}"
            )
        if self.device not in devices.DEVICES:
            raise ConfigError(
                f"--device: must be one of {', '.join(devices.DEVICES)} (got {self.device!r})"
            )
        if self.gpu_memory_gb is not None and not self.gpu_memory_gb > 0:
            raise ConfigError(f"--gpu-memory-gb: must be > 0 (got {self.gpu_memory_gb!r})")
        if config is None:
            return
        if config.samples % self.n_devices:
            raise ConfigError(
                f"--samples/--n-devices: {config.samples} samples do not split evenly over "
                f"{self.n_devices} devices (gpus_per_run); use a multiple of {self.n_devices}"
            )
        per_device = config.samples // self.n_devices
        if self.chunk_size is not None and self.chunk_size < per_device:
            if per_device % self.chunk_size:
                raise ConfigError(
                    f"--chunk-size: {self.chunk_size} does not divide the {per_device} "
                    f"samples per device ({config.samples} samples over {self.n_devices} "
                    "device(s)); use a divisor of it"
                )


def lr_schedule(config: RunConfig) -> optax.Schedule:
    """Cosine decay of the learning rate from ``lr`` to 0 over the run."""
    return optax.cosine_decay_schedule(init_value=config.lr, decay_steps=config.steps)


def build_driver(config: RunConfig, options: RunOptions) -> nk.driver.VMC_SR:
    """The NetKet SR driver with a freshly initialized variational state."""
    model = ViT(
        config.attention, config.layers, config.d, config.heads, config.b,
        dtype=jnp.dtype(options.network_dtype),
    )  # fmt: skip
    hamiltonian = j1j2_hamiltonian(config.L, config.J2)
    init_key, sampler_key = jax.random.split(jax.random.key(config.seed))
    vstate = nk.vqs.MCState(
        exchange_sampler(config.L, n_chains=config.samples),
        model,
        n_samples=config.samples,
        n_discard_per_chain=0,  # one new sample per chain and step, as in the paper
        chunk_size=options.chunk_size,
        seed=init_key,
        sampler_seed=sampler_key,
    )
    use_ntk = config.samples < vstate.n_parameters  # kernel trick when M < P
    mode = options.sr_mode
    if mode == "auto":
        mode = resolve_sr_mode(config, options)
    if not use_ntk:  # NetKet's QGT form: an explicit Jacobian, no kernel
        mode = "explicit"

    driver_class = KernelSR if mode == "symmetric" else nk.driver.VMC_SR
    return driver_class(
        hamiltonian,
        optax.sgd(lr_schedule(config)),
        diag_shift=config.diag_shift,
        variational_state=vstate,
        use_ntk=use_ntk,
        on_the_fly=mode == "onthefly",
        mode="complex",
    )


def resolve_sr_mode(config: RunConfig, options: RunOptions) -> str:
    """``options.sr_mode``, or for ``auto`` the mode chosen for the device's memory.

    The memory is ``options.gpu_memory_gb`` if declared, else what JAX reports.
    """
    if options.sr_mode != "auto":
        return options.sr_mode
    memory = options.gpu_memory_gb
    memory = resources.available_memory_bytes() if memory is None else memory * 1e9
    return resources.run_sr_mode(config, options.chunk_size, options.n_devices, memory)


def sr_mode_of(driver: nk.driver.VMC_SR) -> str:
    """The SR mode (:data:`vitnqs.resources.SR_MODES`) a driver runs in."""
    if driver.on_the_fly:
        return "onthefly"
    return "symmetric" if isinstance(driver, KernelSR) else "explicit"


class _RunMonitor(AbstractCallback, mutable=True):
    """History rows, progress, divergence guard, periodic and signal-driven checkpoints."""

    run: Any = struct.field(pytree_node=False, serialize=False)

    def __init__(self, run: _Run):
        self.run = run

    def on_step_start(self, step, log_data, driver):
        self.run.step_start(step, driver)

    def on_step_end(self, step, log_data, driver):
        self.run.step_end(step, log_data, driver)

    def on_run_end(self, step, driver):
        self.run.save(driver)


class _Run:
    """State of one invocation of :func:`optimize`."""

    def __init__(self, config: RunConfig, options: RunOptions, out: Path):
        self.config, self.options, self.out = config, options, out
        self.reference: Reference | None = None
        self.history: list[dict[str, float]] = []
        self.elapsed_before = 0.0  # wall time of earlier invocations
        self.started = time.perf_counter()
        self.step_started = 0.0
        self.last_save = time.perf_counter()
        self.signal_received: int | None = None
        self.schedule = lr_schedule(config)
        self.energy_bound = energy_lower_bound(config.L, config.J2)
        self.progress = Progress(config.steps, enabled=options.progress)

    # -- checkpoints ---------------------------------------------------------------
    def save(self, driver) -> None:
        checkpoint.save_checkpoint(
            self.out,
            {
                "config": dataclasses.asdict(self.config),
                "step": driver.step_count,
                "driver": flax.serialization.to_bytes(driver),
                "history": {c: [row[c] for row in self.history] for c in HISTORY_COLUMNS},
                "elapsed": self.elapsed(),
            },
        )
        self.last_save = time.perf_counter()

    def restore(self, driver, payload: dict[str, Any]):
        """Return ``driver`` restored from a checkpoint payload, and load the history."""
        _check_same_run(self.config, payload["config"], self.out / checkpoint.CURRENT)
        driver = flax.serialization.from_bytes(driver, payload["driver"])
        columns = payload["history"]
        n = len(columns["step"])
        self.history = [{c: float(columns[c][i]) for c in HISTORY_COLUMNS} for i in range(n)]
        self.elapsed_before = float(payload["elapsed"])
        if driver.step_count != n:
            raise checkpoint.CheckpointError(
                f"checkpoint holds step {driver.step_count} but {n} history rows"
            )
        return driver

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def due_for_checkpoint(self, step: int) -> bool:
        every = self.options.checkpoint_every
        if every is None:
            return time.perf_counter() - self.last_save > 300
        return step % every == 0

    # -- per-step hooks --------------------------------------------------------------
    def step_start(self, step: int, driver) -> None:
        # Here the previous step's update is applied and step_count points to the next
        # step: the state a resumed run must start from.
        if self.signal_received is not None:
            self.save(driver)
            raise Interrupted(
                f"received {signal.Signals(self.signal_received).name} at step {step}: "
                f"checkpoint written to {self.out / checkpoint.CURRENT}; rerun the same "
                "command to resume"
            )
        if step > 0 and self.due_for_checkpoint(step):
            self.save(driver)
        self.step_started = time.perf_counter()

    def step_end(self, step: int, log_data: dict, driver) -> None:
        stats = log_data["Energy"]
        params_finite = all(
            bool(np.isfinite(leaf).all())
            for leaf in jax.tree_util.tree_leaves(driver.state.parameters)
        )
        energy, error, variance = _per_site(stats, self.config.n_sites)
        problem = None
        if not math.isfinite(energy):
            problem = f"the energy became non-finite ({energy})"
        elif not params_finite:
            problem = "the parameters became non-finite after the update"
        elif energy < self.energy_bound:
            problem = (
                f"the energy per site {energy:.4f} fell below the rigorous bound "
                f"{self.energy_bound:.4f} (exploding estimate)"
            )
        if problem:
            raise Diverged(
                f"step {step}: {problem}; the last good checkpoint in {self.out} is kept. "
                "Lower --lr or raise --diag-shift (with a new --out directory)."
            )
        online = log_data.get("Energy_ema")
        r_hat = getattr(online if online is not None else stats, "R_hat", math.nan)
        row = {
            "step": step,
            "energy": energy,
            "energy_error": error,
            "energy_variance": variance,
            "rel_error": relative_error(energy, self.reference),
            "acceptance": float(driver.state.sampler_state.acceptance),
            "r_hat": float(np.real(r_hat)) if r_hat is not None else math.nan,
            "lr": float(self.schedule(step)),
            "time_s": time.perf_counter() - self.step_started,
        }
        self.history.append(row)
        _append_history(self.out / "history.csv", [row])
        self.progress.update(row)


def _check_same_run(config: RunConfig, stored: dict[str, Any], where: Path) -> None:
    """Refuse to mix runs: the directory must hold this very configuration."""
    mine = dataclasses.asdict(config)
    diffs = [
        f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in mine.items() if stored.get(k) != v
    ]
    if diffs:
        raise ConfigError(
            f"{where} belongs to a run with other settings ({'; '.join(diffs)}); "
            "use another --out directory (nothing was changed)"
        )


def _append_history(path: Path, rows: list[dict[str, float]], rewrite: bool = False) -> None:
    new = rewrite or not path.exists()
    with open(path, "w" if new else "a") as f:
        if new:
            f.write(",".join(HISTORY_COLUMNS) + "\n")
        for row in rows:
            f.write(
                ",".join("" if _isnan(row[c]) else _cell(c, row[c]) for c in HISTORY_COLUMNS) + "\n"
            )
        f.flush()


def _isnan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(column: str, value: float) -> str:
    return str(int(value)) if column == "step" else repr(float(value))


def _install_signal_handlers(run: _Run) -> dict[int, Any]:
    def handler(signum, frame):
        if run.signal_received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        run.signal_received = signum
        print(
            f"\n[vitnqs] {signal.Signals(signum).name} received: checkpointing after this step",
            file=sys.stderr,
            flush=True,
        )

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGURG, signal.SIGUSR1, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _code_revision() -> str | None:
    """Git commit of the vitnqs source (with ``+dirty`` if modified), if it is a checkout."""
    import subprocess

    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    import pandas

    from vitnqs import __version__

    return {
        "vitnqs": __version__,
        "vitnqs_git": _code_revision(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        "netket": nk.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
    }


def _per_site(stats: nk.stats.Stats, n_sites: int) -> tuple[float, float, float]:
    """Mean, error of the mean and variance of the local energy, all per site."""
    return (
        float(np.real(stats.mean)) / n_sites,
        float(stats.error_of_mean) / n_sites,
        float(stats.variance) / n_sites**2,
    )


def _final_evaluation(driver, config: RunConfig) -> tuple[float, float, float, int]:
    """Energy per site, its error and variance on fresh samples; and their number."""
    vstate = driver.state
    vstate.n_discard_per_chain = EVAL_DISCARD
    vstate.n_samples = EVAL_CHAIN_LENGTH * config.samples
    vstate.reset()
    return (*_per_site(vstate.expect(driver._ham), config.n_sites), int(vstate.n_samples))


def _peak_device_memory(used: list[Any]) -> int | None:
    """Largest peak of bytes in use on one device, from JAX's allocator (``None`` on CPU).

    Not nvidia-smi: it shows the memory JAX preallocates, not what the run needed.
    """
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in used]
    peaks = [int(p) for p in peaks if p is not None]
    return max(peaks) if peaks else None


def _reference(config: RunConfig, path: Path | None) -> Reference | None:
    """The reference energy from ``path`` (checked to match the run) or computed now."""
    if path is None:
        return reference_energy(config.L, config.J2)
    record = json.loads(Path(path).read_text())
    if record["L"] != config.L or abs(record["J2"] - config.J2) > 1e-12:
        raise ConfigError(
            f"--reference: {path} is for L={record['L']}, J2={record['J2']}, "
            f"not L={config.L}, J2={config.J2}"
        )
    if record.get("energy") is None:
        return None
    return Reference(record["energy"], record["uncertainty"], record["kind"], record["source"])


def optimize(
    config: RunConfig, out: str | Path, options: RunOptions | None = None
) -> dict[str, Any]:
    """Run (or resume, or recognise as finished) one optimization.

    Args:
        config: the run's settings.
        out: output directory (created if needed).
        options: execution options.

    Returns:
        The content of ``summary.json``.

    Raises:
        ConfigError: invalid options, or ``out`` holds a run with other settings.
        DeviceError: JAX cannot run on the devices asked for (before anything is written).
        RunDirBusy: another process works in ``out`` (nothing is touched).
        Interrupted: a signal stopped the run after writing a checkpoint.
        Diverged: the energy or parameters became non-finite.

    """
    options = options or RunOptions()
    config.validate()
    options.validate(config)
    out = Path(out)
    finished = _finished(config, out)
    if finished is not None:
        return finished
    used = devices.require_device(options.device, options.n_devices)
    print(f"[vitnqs] {devices.describe(used, options.device)}", file=sys.stderr)
    requested = options.sr_mode
    options = dataclasses.replace(options, sr_mode=resolve_sr_mode(config, options))
    memory = check_memory(config, options)
    print(
        f"[vitnqs] SR mode {options.sr_mode} (asked: {requested}); memory estimate "
        f"{memory.describe()}",
        file=sys.stderr,
    )
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.lock_run_dir(out):
        # another process may have finished the run since the first look
        return _finished(config, out) or _optimize(config, out, options, used)


def check_memory(config: RunConfig, options: RunOptions) -> resources.MemoryEstimate:
    """The run's memory estimate per device, checked against ``options.gpu_memory_gb``.

    Raises:
        DeviceError: the estimate exceeds the declared GPU memory (with the numbers).

    """
    limit = options.gpu_memory_gb
    memory_bytes = None if limit is None else limit * 1e9
    mode = options.sr_mode
    if mode == "auto":
        mode = resources.run_sr_mode(config, options.chunk_size, options.n_devices, memory_bytes)
    memory = resources.run_memory(config, options.chunk_size, mode, options.n_devices)
    if limit is not None and memory.total > limit * 1e9:
        raise devices.DeviceError(
            f"--gpu-memory-gb: the run needs about {memory.describe()} with SR mode {mode}, "
            f"more than the {limit:g} GB of one GPU; lower --chunk-size or --samples, or use "
            "more GPUs (gpus_per_run)" + ("" if mode == "onthefly" else " or --sr-mode onthefly")
        )
    return memory


def _finished(config: RunConfig, out: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` (checked to be this run), else ``None``."""
    summary_path = out / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    _check_same_run(config, summary["config"], summary_path)
    print(f"[vitnqs] {out} already holds the finished run; nothing to do", file=sys.stderr)
    return summary


def _optimize(config: RunConfig, out: Path, options: RunOptions, used: list[Any]) -> dict[str, Any]:
    """:func:`optimize` once the devices are checked and the directory is locked."""
    summary_path = out / "summary.json"
    run = _Run(config, options, out)
    run.reference = _reference(config, options.reference_file)
    if run.reference is None:
        print(
            f"[vitnqs] WARNING: no reference energy known for L={config.L}, J2={config.J2} "
            "(ED covers L <= 4, the literature table the rest); rel_error stays empty",
            file=sys.stderr,
        )
    driver = build_driver(config, options)
    init_params = flax.serialization.to_bytes(driver.state.parameters)
    payload = checkpoint.load_checkpoint(out)
    if payload is not None:
        driver = run.restore(driver, payload)  # refuses a checkpoint of other settings
        print(
            f"[vitnqs] resuming {out} at step {driver.step_count}/{config.steps}", file=sys.stderr
        )
    # Written on resume too (the seed makes it the same): Snakemake deletes the outputs
    # of a failed, i.e. interrupted, job.
    checkpoint.write_atomic(out / "init_params.msgpack", init_params)
    _append_history(out / "history.csv", run.history, rewrite=True)  # drop rows past the checkpoint

    previous_handlers = _install_signal_handlers(run)
    try:
        run.progress.start(driver.step_count)
        driver.run(
            config.steps - driver.step_count,
            callback=_RunMonitor(run),
            show_progress=False,
        )
    finally:
        run.progress.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)

    # All outputs again, in full: Snakemake deletes the outputs of a job that fails, also
    # of one that a second driver started on this directory while this run held the lock.
    checkpoint.write_atomic(out / "init_params.msgpack", init_params)
    _append_history(out / "history.csv", run.history, rewrite=True)
    checkpoint.write_atomic(
        out / "params.msgpack", flax.serialization.to_bytes(driver.state.parameters)
    )
    energy, error, variance, n_eval = _final_evaluation(driver, config)
    step_times = [row["time_s"] for row in run.history[1:]]  # step 0 includes compilation
    summary = {
        "config": dataclasses.asdict(config),
        "options": {
            "chunk_size": options.chunk_size,
            "checkpoint_every": options.checkpoint_every,
            "network_dtype": options.network_dtype,
            "device": options.device,
            "n_devices": options.n_devices,
        },
        "n_parameters": int(driver.state.n_parameters),
        "sr": "kernel (NTK, M < P)" if driver.use_ntk else "QGT (M >= P)",
        "sr_mode": sr_mode_of(driver),
        "energy": energy,
        "energy_error": error,
        "energy_variance": variance,
        "eval_samples": n_eval,
        "eval_note": (
            f"{EVAL_CHAIN_LENGTH} fresh samples per chain after {EVAL_DISCARD} discarded sweeps"
        ),
        "reference_energy": None if run.reference is None else run.reference.energy,
        "reference_uncertainty": None if run.reference is None else run.reference.uncertainty,
        "reference_kind": None if run.reference is None else run.reference.kind,
        "reference_source": None if run.reference is None else run.reference.source,
        "rel_error": None if run.reference is None else relative_error(energy, run.reference),
        "median_step_time_s": statistics.median(step_times) if step_times else None,
        "total_time_s": run.elapsed(),
        "versions": _versions(),
        "device": str(used[0]),
        "device_platform": used[0].platform,
        "devices": [str(d) for d in used],
        "peak_device_memory_bytes": _peak_device_memory(used),
        "memory_estimate_bytes": resources.run_memory(
            config, options.chunk_size, options.sr_mode, options.n_devices
        ).total,
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    checkpoint.write_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    print(
        f"[vitnqs] done: E/N = {energy:.6f} +- {error:.6f}"
        + ("" if run.reference is None else f", rel. error {summary['rel_error']:.2e}"),
        file=sys.stderr,
    )
    return summary


__all__ = [
    "ATTENTIONS",
    "ConfigError",
    "Diverged",
    "EXIT_BAD_INPUT",
    "EXIT_BAD_SETUP",
    "EXIT_BUSY",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "Interrupted",
    "RunConfig",
    "RunOptions",
    "optimize",
]
