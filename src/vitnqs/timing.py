"""Time per optimization step, measured one run at a time (Figure 3, Table 1, findings).

The runs of a sweep share the machine with each other, so the step times they record
measure the load as much as the attention. Here the runs of a plan are timed by one
process that the pipeline runs alone (the ``step_times`` rule takes every core): per
lattice size, one driver per run is built and compiled, then single steps are taken in
turn, so that any change of load hits every attention alike.
"""

from __future__ import annotations

import statistics
import time

import jax
import pandas as pd

from vitnqs.optimize import RunConfig, RunOptions, build_driver
from vitnqs.sweeps import RUN_COLUMNS, in_sweep

TIMED_SWEEP = "fig3"
"""The sweep whose runs are timed (Figure 3 plots time per step against L)."""


def timing_plan(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of :data:`TIMED_SWEEP` to time: its first seed (the seed does not change the cost).

    Args:
        runs: a runs table of :func:`vitnqs.sweeps.runs_table`.

    """
    plan = in_sweep(runs, TIMED_SWEEP)
    plan = plan[plan["seed"] == plan["seed"].min()]
    return plan[list(RUN_COLUMNS)].reset_index(drop=True)


def _config(row: pd.Series) -> RunConfig:
    settings = {c: row[c] for c in RUN_COLUMNS}
    for name in ("L", "layers", "d", "heads", "b", "samples", "steps", "seed"):
        settings[name] = int(settings[name])
    for name in ("J2", "lr", "diag_shift"):
        settings[name] = float(settings[name])
    return RunConfig(**settings)


def time_steps(plan: pd.DataFrame, steps: int, chunk_size: int | None) -> pd.DataFrame:
    """Median wall time of ``steps`` optimization steps of every run of ``plan``.

    The first step of each run (its compilation) is timed apart. The timed steps are the
    run's own first steps (same seed and learning-rate schedule).

    Args:
        plan: rows with the columns :data:`vitnqs.sweeps.RUN_COLUMNS`.
        steps: timed steps per run, after the compilation step.
        chunk_size: samples per chunk, as in the runs.

    Returns:
        ``plan`` with ``n_parameters``, ``median_step_time_s``, ``compile_step_s``,
        ``timed_steps`` and ``device``.

    """
    options = RunOptions(chunk_size=chunk_size, progress=False)
    results = []
    for _, group in plan.groupby("L", sort=True):
        drivers = [build_driver(_config(row), options) for _, row in group.iterrows()]
        times: list[list[float]] = [[] for _ in drivers]
        for _ in range(steps + 1):
            for driver, record in zip(drivers, times, strict=True):
                start = time.perf_counter()
                driver.run(1, show_progress=False)
                jax.block_until_ready(driver.state.parameters)
                record.append(time.perf_counter() - start)
        for (_, row), driver, record in zip(group.iterrows(), drivers, times, strict=True):
            results.append(
                {
                    **row.to_dict(),
                    "n_parameters": int(driver.state.n_parameters),
                    "median_step_time_s": statistics.median(record[1:]),
                    "compile_step_s": record[0],
                    "timed_steps": steps,
                    "device": str(jax.devices()[0]),
                }
            )
    return pd.DataFrame(results)
