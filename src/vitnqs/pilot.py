"""The pilot: one short job per run, at the run's full size, before the sweep spends GPU-days.

:func:`pilot` builds a run's own driver with its run plan (:func:`vitnqs.plan.plan_run`:
SR mode, chunk, devices), compiles it, takes a few steps of its real schedule and reports
what the full run will cost and whether it is sound: the compile time and the median
time per step, the peak device memory beside the plan's estimate and the device's
limit, whether every energy stayed finite, how many error bars the energy fell, the
acceptance, the projected hours of the full run, and the time and memory its job
would request. :func:`verdicts` turns a row into words (:data:`VERDICTS`).

It never touches a run's directory: it writes nothing but its own row. Rows are keyed by
run, device model, devices per run and :data:`vitnqs.config.RESULTS_VERSION`
(:data:`KEY_COLUMNS`), so that a row measured on another setup is never used for this one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from vitnqs import measure
from vitnqs.config import RESULTS_VERSION, RUN_COLUMNS, RunConfig, RunOptions
from vitnqs.estimates import per_site
from vitnqs.plan import PILOT_STEPS, job_memory_mb, runtime_minutes
from vitnqs.stops import Diverged, StopSignals

MEMORY_RISK = 0.85
"""A peak above this share of the device's memory is a risk."""
ESTIMATE_TOLERANCE = 0.15
"""A peak further than this from the plan's estimate means the formula needs fixing."""
VERDICTS = (
    "fits",
    "memory risk",
    "estimate off",
    "needs more jobs than retries",
    "not finite",
    "diverged",
)
"""What :func:`verdicts` may say (``fits`` only when nothing else is said)."""
KEY_COLUMNS = (*RUN_COLUMNS, "device_kind", "n_devices", "results_version")
"""What makes a pilot row apply to a job: the run, the device model, the devices per run
and the version of the results."""


def pilot(
    config: RunConfig,
    options: RunOptions,
    steps: int = PILOT_STEPS,
    signals: StopSignals | None = None,
) -> dict[str, Any]:
    """Time and check the first ``steps + 1`` steps of a run, as its job will run them.

    The run's own divergence guard (:func:`vitnqs.loop.divergence`) watches every step:
    a step that leaves the spectrum's bounds or turns non-finite ends the pilot early,
    and its row says so (``diverged``).

    Args:
        config: the run (its full size: samples, model, schedule).
        options: how its job executes (device, GPUs, chunk), validated.
        steps: timed steps after the compiling one.
        signals: the command's stop-signal handlers (a signal stops it at a step).

    Returns:
        One row: the run's settings, :data:`KEY_COLUMNS` and the measurements.

    """
    import jax

    from vitnqs.loop import StepMonitor, build_driver, divergence
    from vitnqs.physics import energy_bounds
    from vitnqs.plan import plan_run

    device = jax.devices()[0]
    bounds = energy_bounds(config.L, config.J2)
    problems: list[str] = []
    plan = plan_run(config, options, reported_bytes=measure.device_memory_bytes(device))
    clock, times, energies, errors, acceptances = measure.Stopwatch(), [], [], [], []

    def record(step, log_data, driver, seconds):
        energy = per_site(log_data["Energy"], config.n_sites)
        energies.append(energy.mean)
        errors.append(energy.error)
        acceptances.append(float(driver.state.sampler_state.acceptance))
        times.append(seconds)
        problem = divergence(energy.mean, driver.state.parameters, bounds)
        if problem:
            problems.append(f"step {step}: {problem}")
            raise Diverged(problems[-1])

    driver = build_driver(config, options, plan)
    build_s = clock.stop()
    try:
        driver.run(steps + 1, callback=StepMonitor(record, signals=signals), show_progress=False)
    except Diverged:
        pass  # recorded: the row says where
    parameters = jax.tree_util.tree_leaves(driver.state.parameters)
    finite = bool(np.isfinite(energies).all()) and all(
        bool(np.isfinite(x).all()) for x in parameters
    )
    sigma = math.hypot(errors[0], errors[-1])
    median = measure.median_after_compile(times)
    peak = measure.peak_device_bytes()
    return {
        **{c: getattr(config, c) for c in RUN_COLUMNS},
        "device_kind": getattr(device, "device_kind", device.platform),
        "n_devices": options.n_devices,
        "results_version": RESULTS_VERSION,
        "platform": device.platform,
        "sr_mode": plan.sr_mode,
        "n_parameters": plan.n_parameters,
        "compile_s": build_s + times[0] - (median or 0.0),
        "median_step_s": median,
        "timed_steps": steps,
        "peak_device_bytes": peak,
        "peak_host_bytes": measure.peak_host_bytes(),
        "memory_estimate_bytes": plan.memory.total,
        "device_memory_bytes": plan.device_memory_bytes,
        "finite": finite,
        "diverged": problems[0] if problems else "",
        "energy_first": energies[0],
        "energy_last": energies[-1],
        "energy_drop_sigma": (energies[0] - energies[-1]) / sigma if sigma > 0 else math.nan,
        "acceptance": acceptances[-1],
        "projected_hours": (build_s + times[0] + (median or 0.0) * (config.steps - 1)) / 3600,
    }


def requests(row: dict[str, Any], max_runtime: int | None) -> dict[str, Any]:
    """The time and memory the real job would request, sized from the pilot's row."""
    config = RunConfig.from_row(row)
    return {
        "request_minutes": runtime_minutes(config, row["n_devices"], 1, max_runtime, row),
        "request_mem_mb": job_memory_mb(row["memory_estimate_bytes"], row["n_devices"], row),
    }


def verdicts(row: dict[str, Any], max_runtime: int | None, retries: int | None) -> str:
    """The row's verdicts, ``; ``-joined (:data:`VERDICTS`).

    Args:
        row: a row of :func:`pilot`.
        max_runtime: the site's cap on a job, in minutes (``None``: none).
        retries: the optimize rule's retries (``None``: not limited).

    """
    found = []
    limit, peak = row["device_memory_bytes"], row["peak_device_bytes"]
    if peak is None or (isinstance(peak, float) and math.isnan(peak)):
        peak = row["peak_host_bytes"]  # a CPU: the process's resident memory
    if limit and peak > MEMORY_RISK * limit:
        found.append("memory risk")
    if abs(peak / row["memory_estimate_bytes"] - 1) > ESTIMATE_TOLERANCE:
        found.append("estimate off")
    if max_runtime is not None and retries is not None:
        jobs = math.ceil(60 * row["projected_hours"] / max_runtime)
        if jobs > retries + 1:
            found.append("needs more jobs than retries")
    if not row["finite"]:
        found.append("not finite")
    diverged = row.get("diverged")
    if isinstance(diverged, str) and diverged:
        found.append("diverged")
    return "; ".join(found) or "fits"


def summary(table: pd.DataFrame) -> str:
    """The projected GPU-hours of the sweep and one line per run with its verdict."""
    gpu_hours = (table["projected_hours"] * table["n_devices"]).sum()
    lines = [
        f"pilot: {len(table)} runs, projected {gpu_hours:.1f} device-hours for the whole "
        f"sweep ({table['device_kind'].iloc[0]}, {table['n_devices'].iloc[0]} per run)"
    ]
    for row in table.itertuples():
        lines.append(
            f"  {row.attention:>9} L={row.L:<2} J2={row.J2:<4g} layers={row.layers} "
            f"seed={row.seed}: "
            f"{row.median_step_s:.3g} s/step, {row.projected_hours:.2f} h, "
            f"peak {_gb(row.peak_device_bytes, row.peak_host_bytes)} GB of "
            f"{_gb(row.device_memory_bytes)} (estimate {_gb(row.memory_estimate_bytes)}), "
            f"{row.sr_mode}, dE {row.energy_drop_sigma:.1f} sigma, acc {row.acceptance:.2f}: "
            f"{row.verdict}"
        )
    return "\n".join(lines)


def _gb(*values) -> str:
    for value in values:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return f"{value / 1e9:.1f}"
    return "?"


class PilotRows:
    """The rows of a ``pilot.csv`` that apply to a workflow's jobs, by run.

    A row applies when its devices per run and results version are the workflow's and,
    where the site names its GPU model (``gpu_type``), its device model contains that
    name; other rows are stale for this setup and never used. Without a row the job's
    requests come from the formulas (:mod:`vitnqs.plan`).
    """

    def __init__(self, table: pd.DataFrame | None, n_devices: int, device_kind: str | None = None):
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.skipped = 0
        for _, row in (pd.DataFrame() if table is None else table).iterrows():
            applies = row["n_devices"] == n_devices and row["results_version"] == RESULTS_VERSION
            if device_kind is not None:
                applies &= device_kind.lower() in str(row["device_kind"]).lower()
            if not applies:
                self.skipped += 1
                continue
            self.rows[_key(RunConfig.from_row(row))] = row.to_dict()  # the last row wins

    @classmethod
    def load(cls, path, n_devices: int, device_kind: str | None = None) -> PilotRows:
        """The applicable rows of ``path``, or none if it does not exist."""
        from pathlib import Path

        table = pd.read_csv(path) if Path(path).exists() else None
        return cls(table, n_devices, device_kind)

    def get(self, config: RunConfig) -> dict[str, Any] | None:
        """The pilot's row of ``config``, if one applies."""
        return self.rows.get(_key(config))

    def device_memory(self, config: RunConfig) -> float | None:
        """The memory of the device the pilot measured ``config`` on, if a row applies."""
        row = self.get(config)
        value = None if row is None else row.get("device_memory_bytes")
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def __len__(self) -> int:
        return len(self.rows)


def _key(config: RunConfig) -> tuple:
    return tuple(getattr(config, c) for c in RUN_COLUMNS)
