"""One variational optimization of the ViT on the J1-J2 model, resumable and crash-safe.

:func:`optimize` writes the run directory of :mod:`vitnqs.rundir`: its history, step by
step, then the parameters and the summary of the final evaluation; a checkpoint (driver
state, sampler state and RNG, optimizer state, step counter and history) every few
minutes.

Re-running with the same directory resumes from the last good checkpoint; a finished
run is a no-op. SIGTERM, SIGURG (the SLURM warning signal, see ``workflow/rules/common.smk``),
SIGUSR1 and SIGINT write a checkpoint at the next step boundary and exit with
:data:`~vitnqs.stops.EXIT_INTERRUPTED`. One process at a time works in a directory: it
holds the run's lock (:func:`vitnqs.checkpoint.lock_run_dir`) and a second one stops at
once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import flax
import jax
import netket as nk
import numpy as np
import optax

from vitnqs import checkpoint, devices, files, measure
from vitnqs.config import RESULTS_VERSION, RunConfig, RunOptions, read_reference_file
from vitnqs.estimates import per_site
from vitnqs.evaluation import PLAIN_EVAL_DISCARD, TAIL_PROBE_POWER, final_evaluation
from vitnqs.loop import JumpGuard, StepControl, StepMonitor, build_driver, divergence, lr_schedule
from vitnqs.physics import energy_bounds
from vitnqs.plan import EVAL_CHAIN_LENGTH, RunPlan, plan_run
from vitnqs.progress import Progress
from vitnqs.references import Reference, reference_energy, relative_error
from vitnqs.rundir import (
    CHECKPOINT,
    DIVERGENCES,
    HISTORY,
    HISTORY_COLUMNS,
    HISTORY_DEFAULTS,
    INIT_PARAMS,
    PARAMS,
    REMEDIES,
    SUMMARY,
    check_same_run,
    read_finished,
    read_records,
    vouch,
    write_history,
)
from vitnqs.stability import COLLAPSE_SAMPLES_FACTOR, WINDOW, Remedy, collapsed
from vitnqs.stops import Diverged, StopSignals

UNRECORDED_CHECKPOINT_VERSION = 1
"""The results version assumed for a checkpoint that records none (written before
checkpoints recorded it): the oldest, so that a run resumed from it is never stamped
current."""
MAX_REMEDIES = 2
"""A diverged run is resumed at most this many times, each time from its last good
checkpoint with half the learning rate; one more divergence stops it for good."""


class _Run:
    """State of one invocation of :func:`optimize`."""

    def __init__(
        self,
        config: RunConfig,
        options: RunOptions,
        out: Path,
        signals: StopSignals,
        factor: float,
        remedies: list[dict[str, Any]],
    ):
        self.config, self.options, self.out, self.signals = config, options, out, signals
        self.reference: Reference | None = None
        self.history: list[dict[str, float]] = []
        self.elapsed_before = 0.0  # wall time of earlier invocations
        self.started = time.perf_counter()
        self.checkpoint_step: int | None = None  # the step of the current checkpoint file
        self.results_versions = [RESULTS_VERSION]  # of the code of every part of the run
        self.schedule = lr_schedule(config, factor)
        self.energy_bounds = energy_bounds(config.L, config.J2)
        self.progress = Progress(config.steps, enabled=options.progress)
        # the in-run remedies (vitnqs.stability): those recorded so far set the factors
        self.remedies = remedies
        jumps = sum(r["event"] == "jump" for r in remedies)
        collapses = sum(r["event"] == "collapse" for r in remedies)
        self.control = StepControl(self.schedule, config.max_update, 0.5**jumps)
        self.samples_factor = COLLAPSE_SAMPLES_FACTOR**collapses
        self.jump_guard: JumpGuard | None = None
        self.watch_from = 0  # the first step of the current watch (jumps, collapses)

    def watch(self, step: int) -> None:
        """Watch for jumps and collapses from ``step`` on, while remedies are left."""
        self.watch_from = step
        jumps = sum(r["event"] == "jump" for r in self.remedies)
        left = jumps < self.config.jump_remedies
        self.jump_guard = JumpGuard(step) if left else None

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
                "results_versions": self.results_versions,
            },
        )
        self.checkpoint_step = driver.step_count

    def restore(self, driver, payload: dict[str, Any]):
        """Return ``driver`` restored from a checkpoint payload, and load the history."""
        check_same_run(self.config, payload["config"], self.out / CHECKPOINT)
        driver = flax.serialization.from_bytes(driver, payload["driver"])
        columns = payload["history"]
        n = len(columns["step"])
        self.history = [
            {
                c: float(columns[c][i] if c in columns else HISTORY_DEFAULTS[c])
                for c in HISTORY_COLUMNS
            }
            for i in range(n)
        ]
        self.elapsed_before = float(payload["elapsed"])
        written_by = payload.get("results_versions", [UNRECORDED_CHECKPOINT_VERSION])
        self.results_versions = sorted({*map(int, written_by), RESULTS_VERSION})
        if driver.step_count != n:
            raise checkpoint.CheckpointError(
                f"checkpoint holds step {driver.step_count} but {n} history rows"
            )
        self.checkpoint_step = n
        return driver

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def step_end(self, step: int, log_data: dict, driver, seconds: float) -> None:
        """The step's row in the history, after the divergence guard."""
        stats = log_data["Energy"]
        energy, error, variance = per_site(stats, self.config.n_sites)
        problem = divergence(energy, driver.state.parameters, self.energy_bounds)
        if problem:
            raise Diverged(f"step {step}: {problem}")
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
            "update_scale": self.control.scale,
            "time_s": seconds,
        }
        self.history.append(row)
        write_history(self.out / HISTORY, [row])
        self.progress.update(row)
        self.look_for_trouble(driver)

    # -- in-run remedies (vitnqs.stability) ------------------------------------------------
    def look_for_trouble(self, driver) -> None:
        """Raise :class:`~vitnqs.stability.Remedy` on a jump or a collapse to remedy."""
        if self.jump_guard is not None:
            jump = self.jump_guard.observe(self.history, driver)
            if jump is not None:
                raise Remedy(
                    {"event": "jump", "step": jump.step, "returned_to": jump.best_step + 1,
                     "best_mean": jump.best_mean, "mean": jump.mean, "sigmas": jump.sigmas,
                     "update_factor": self.control.factor / 2}
                )  # fmt: skip
        collapses = sum(r["event"] == "collapse" for r in self.remedies)
        watched = [r["acceptance"] for r in self.history if r["step"] >= self.watch_from]
        if collapses < self.config.collapse_remedies and collapsed(watched):
            step = int(self.history[-1]["step"])
            samples = self.config.samples * self.samples_factor * COLLAPSE_SAMPLES_FACTOR
            raise Remedy(
                {"event": "collapse", "step": step, "returned_to": step + 1,
                 "acceptance": float(np.mean(watched[-WINDOW:])), "samples": samples}
            )  # fmt: skip

    def remedy(self, driver, record: dict[str, Any]):
        """Apply a remedy in place; record it, checkpoint, and return the driver to go on."""
        if record["event"] == "jump":
            driver = flax.serialization.from_state_dict(driver, self.jump_guard.best_state)
            self.history = [r for r in self.history if r["step"] < record["returned_to"]]
            write_history(self.out / HISTORY, self.history, rewrite=True)
            self.control.factor = record["update_factor"]
            what = (
                f"the energy jumped {record['sigmas']:.1f} error bars at step {record['step']}: "
                f"back to step {record['returned_to']} with the update x{self.control.factor:g}"
            )
        else:
            self.samples_factor *= COLLAPSE_SAMPLES_FACTOR
            driver.state.n_samples = record["samples"]
            what = (
                f"the chains collapsed (acceptance {record['acceptance']:.3f}) at step "
                f"{record['step']}: {record['samples']} samples per step from now on"
            )
        self.remedies.append(record)
        files.write_atomic(
            self.out / REMEDIES, (json.dumps(self.remedies, indent=2) + "\n").encode()
        )
        self.save(driver)
        self.watch(driver.step_count)
        print(f"[vitnqs] remedy: {what}", file=sys.stderr)
        return driver


def lr_factor(out: Path) -> tuple[float, list[dict[str, Any]]]:
    """The learning-rate factor of a run's remedies, and its recorded divergences.

    Each divergence halves the learning rate of the resumed run (from its last good
    checkpoint); after :data:`MAX_REMEDIES` of them a further one stops the run.

    Raises:
        Diverged: the run diverged more than :data:`MAX_REMEDIES` times already.

    """
    path = out / DIVERGENCES
    records = read_records(path, ("step", "lr_factor"))
    if len(records) > MAX_REMEDIES:
        steps = ", ".join(str(r["step"]) for r in records)
        raise Diverged(
            f"{out} diverged {len(records)} times (steps {steps}), the last time with the "
            f"learning rate x{0.5 ** (len(records) - 1):g}: it is not retried. Lower lr or "
            f"raise diag_shift in config.yaml (a new run), or delete {path} to retry as is"
        )
    return 0.5 ** len(records), records


def _record_divergence(run: _Run, error: Diverged, factor: float, records: list) -> str:
    """Keep the last good checkpoint, record the divergence; return the remedy's words."""
    step = len(run.history)
    # a checkpoint of the diverged step holds the parameters whose energy left the bounds
    if run.checkpoint_step is not None and run.checkpoint_step >= step:
        checkpoint.discard_current(run.out)
    record = {"step": step, "problem": str(error), "lr_factor": factor}
    files.write_atomic(
        run.out / DIVERGENCES, (json.dumps([*records, record], indent=2) + "\n").encode()
    )
    if len(records) < MAX_REMEDIES:
        return (
            f"the last good checkpoint in {run.out} is kept; rerunning resumes from it with "
            f"the learning rate x{factor / 2:g} (remedy {len(records) + 1} of {MAX_REMEDIES})"
        )
    return (
        f"the run has diverged {len(records) + 1} times and is not retried: lower lr or raise "
        "diag_shift (a new run)"
    )


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


def _reference(config: RunConfig, path: Path | None) -> Reference | None:
    """The reference energy from ``path`` (checked to match the run) or computed now."""
    if path is None:
        return reference_energy(config.L, config.J2)
    record = read_reference_file(path, config)
    if record["energy"] is None:
        return None
    return Reference(record["energy"], record["uncertainty"], record["kind"], record["source"])


def optimize(
    config: RunConfig,
    out: str | Path,
    options: RunOptions | None = None,
    used: list[Any] | None = None,
    signals: StopSignals | None = None,
) -> dict[str, Any]:
    """Run (or resume, or recognise as finished) one optimization.

    Args:
        config: the run's settings.
        out: output directory (created if needed).
        options: execution options.
        used: the JAX devices, already checked by :func:`vitnqs.devices.require_device`
            (the command line checks them before it loads NetKet); checked here if not.
        signals: the signal handlers installed by the caller (installed here if not).

    Returns:
        The content of ``summary.json``.

    Raises:
        ConfigError: invalid options, or ``out`` holds a run with other settings.
        DeviceError: JAX cannot run on the devices asked for (before anything is written).
        MemoryRefused: the run needs more than the declared GPU memory (idem).
        RunDirBusy: another process works in ``out`` (nothing is touched).
        Interrupted: a signal stopped the run (after writing a checkpoint in the loop).
        Diverged: the energy or parameters left their bounds; the last good checkpoint
            is kept and a rerun resumes from it with half the learning rate.
        OSError: a file of the run could not be written.

    """
    options = options or RunOptions()
    config.validate()
    options.validate(config)
    out = Path(out)
    if signals is None:
        with StopSignals() as signals:
            return optimize(config, out, options, used, signals)
    finished = read_finished(config, out)
    if finished is not None:
        print(f"[vitnqs] {out} already holds the finished run; nothing to do", file=sys.stderr)
        return finished
    if used is None:
        used = devices.require_device(options.device, options.n_devices)
    print(f"[vitnqs] {devices.describe(used, options.device)}", file=sys.stderr)
    plan = plan_run(config, options, reported_bytes=measure.device_memory_bytes(used[0]))
    plan.check_memory()
    print(f"[vitnqs] {plan.describe()}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.lock_run_dir(out):
        # another process may have finished the run since the first look
        finished = read_finished(config, out)
        return finished or _optimize(config, out, options, plan, used, signals)


def _optimize(
    config: RunConfig,
    out: Path,
    options: RunOptions,
    plan: RunPlan,
    used: list[Any],
    signals: StopSignals,
) -> dict[str, Any]:
    """:func:`optimize` once the devices are checked and the directory is locked."""
    factor, divergences = lr_factor(out)
    remedies = read_records(out / REMEDIES, ("event", "step"))
    run = _Run(config, options, out, signals, factor, remedies)
    run.reference = _reference(config, options.reference_file)
    if run.reference is None:
        print(
            f"[vitnqs] WARNING: no reference energy known for L={config.L}, J2={config.J2} "
            "(ED covers L <= 4, the literature table the rest); rel_error stays empty",
            file=sys.stderr,
        )
    driver = build_driver(config, options, plan, factor)
    init_params = flax.serialization.to_bytes(driver.state.parameters)
    payload = checkpoint.load_checkpoint(out)
    if payload is not None:
        driver = run.restore(driver, payload)  # refuses a checkpoint of other settings
        print(
            f"[vitnqs] resuming {out} at step {driver.step_count}/{config.steps}", file=sys.stderr
        )
    if divergences:
        print(
            f"[vitnqs] remedy: the run diverged at step {divergences[-1]['step']}; it goes on "
            f"from step {driver.step_count} with the learning rate x{factor:g}",
            file=sys.stderr,
        )
    # Written on resume too (the seed makes it the same): Snakemake deletes the outputs
    # of a failed, i.e. interrupted, job.
    files.write_atomic(out / INIT_PARAMS, init_params)
    write_history(out / HISTORY, run.history, rewrite=True)  # drop rows past the checkpoint

    if run.samples_factor > 1:  # the collapse remedies so far
        driver.state.n_samples = config.samples * run.samples_factor
    run.watch(driver.step_count)
    try:
        run.progress.start(driver.step_count)
        monitor = StepMonitor(
            run.step_end,
            save=run.save,
            signals=signals,
            checkpoint_every=options.checkpoint_every,
            where=out / CHECKPOINT,
        )
        while True:
            try:
                driver.run(
                    config.steps - driver.step_count,
                    callback=[run.control, monitor],
                    show_progress=False,
                )
                break
            except Remedy as event:
                driver = run.remedy(driver, event.record)
    except Diverged as error:
        remedy = _record_divergence(run, error, factor, divergences)
        raise Diverged(f"{error}; {remedy}") from None
    finally:
        run.progress.close()

    # a signal during the last step: the checkpoint of the end is written (on_run_end)
    signals.check(f"at the end of the steps (checkpoint written to {out / CHECKPOINT})")
    # All outputs again, in full: Snakemake deletes the outputs of a job that fails, also
    # of one that a second driver started on this directory while this run held the lock.
    files.write_atomic(out / INIT_PARAMS, init_params)
    write_history(out / HISTORY, run.history, rewrite=True)
    files.write_atomic(out / PARAMS, flax.serialization.to_bytes(driver.state.parameters))
    with signals.immediate():  # nothing to save: a rerun repeats the evaluation
        clock = measure.Stopwatch()
        evaluation = final_evaluation(driver.state, driver._ham, config)
        eval_time = clock.stop()
    reference = {} if run.reference is None else dataclasses.asdict(run.reference)
    summary = {
        "config": dataclasses.asdict(config),
        # the oldest code that computed a part of it: a run resumed from an older
        # version's checkpoint is mixed, never current
        "results_version": min(run.results_versions),
        "results_versions": run.results_versions,
        "options": {
            "chunk_size": options.chunk_size,
            "checkpoint_every": options.checkpoint_every,
            "network_dtype": options.network_dtype,
            "local_energy": options.local_energy,
            "device": options.device,
            "n_devices": options.n_devices,
            "sr_mode": options.sr_mode,
            "gpu_memory_gb": options.gpu_memory_gb,
        },
        "plan": plan.as_dict(),
        "n_parameters": plan.n_parameters,
        "sr": "kernel (NTK, M < P)" if plan.use_ntk else "QGT (M >= P)",
        "sr_mode": plan.sr_mode,
        **evaluation.fields(),
        "eval_note": (
            f"{EVAL_CHAIN_LENGTH} fresh samples per chain after {PLAIN_EVAL_DISCARD} "
            f"discarded sweeps; the variance from {evaluation.probe_samples} samples of "
            f"|psi|^{TAIL_PROBE_POWER:g}, reweighted (the tail probe)"
        ),
        "reference_energy": reference.get("energy"),
        "reference_uncertainty": reference.get("uncertainty"),
        "reference_kind": reference.get("kind"),
        "reference_source": reference.get("source"),
        "rel_error": (
            None if run.reference is None else relative_error(evaluation.energy, run.reference)
        ),
        "divergences": divergences,
        "lr_factor": factor,
        "remedies": run.remedies,
        "median_step_time_s": measure.median_after_compile([r["time_s"] for r in run.history]),
        "eval_time_s": eval_time,  # the final evaluation, compilation included
        "total_time_s": run.elapsed(),
        "versions": _versions(),
        "device": str(used[0]),
        "device_platform": used[0].platform,
        "devices": [str(d) for d in used],
        "peak_device_memory_bytes": measure.peak_device_bytes(used),
        "memory_estimate_bytes": plan.memory.total,
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        # what the summary vouches for, checked by every reader (vitnqs.rundir)
        "files": vouch(out, len(run.history)),
    }
    files.write_atomic(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    print(
        f"[vitnqs] done: E/N = {evaluation.energy:.6f} +- {evaluation.energy_error:.6f}"
        + ("" if run.reference is None else f", rel. error {summary['rel_error']:.2e}")
        + f", V-score {evaluation.v_score:.3g} +- {evaluation.v_score_error:.2g}"
        + (f" (unreliable: {evaluation.unreliable})" if evaluation.unreliable else ""),
        file=sys.stderr,
    )
    return summary


__all__ = ["optimize"]
