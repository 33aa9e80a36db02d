"""Time per optimization step of whole runs, one run at a time (Figure 3, Table 1, findings).

Where :mod:`vitnqs.bench.phases` splits one step of a model into its phases to compare
each with the machine's limit, this module times the driver's whole step of the runs of
a sweep, as the runs execute it (their run plan), for the figures and tables. The runs
share the machine with each other, so the step times they record measure the load as
much as the attention; here one process that the pipeline runs alone (the
``step_times`` rule takes every core) builds and compiles one driver per run of a
lattice size, then takes single steps of each in turn, so that any change of load hits
every attention alike.
"""

from __future__ import annotations

import pandas as pd

from vitnqs import measure
from vitnqs.config import RunConfig, RunOptions
from vitnqs.loop import build_driver
from vitnqs.plan import plan_run


def _one_step(driver):
    driver.run(1, show_progress=False)
    return driver.state.parameters  # what measure.timed waits for


def time_steps(plan: pd.DataFrame, steps: int, options: RunOptions) -> pd.DataFrame:
    """Median wall time of ``steps`` optimization steps of every run of ``plan``.

    The first step of each run (its compilation) is timed apart. The timed steps are the
    run's own first steps (same seed and learning-rate schedule).

    Args:
        plan: rows with the columns :data:`vitnqs.config.RUN_COLUMNS`
            (:func:`vitnqs.sweeps.timing_plan`).
        steps: timed steps per run, after the compilation step.
        options: how the runs execute (chunk size, device), as in the runs.

    Returns:
        ``plan`` with ``n_parameters``, ``sr_mode``, ``median_step_time_s``,
        ``compile_step_s``, ``timed_steps``, ``device`` and ``peak_device_memory_bytes``.

    """
    import jax

    memory = measure.device_memory_bytes()
    results = []
    for _, group in plan.groupby("L", sort=True):
        runs = [RunConfig.from_row(row) for _, row in group.iterrows()]
        plans = [plan_run(run, options, reported_bytes=memory) for run in runs]
        drivers = [build_driver(run, options, p) for run, p in zip(runs, plans, strict=True)]
        times: list[list[float]] = [[] for _ in drivers]
        for _ in range(steps + 1):
            for driver, record in zip(drivers, times, strict=True):
                step = measure.timed(lambda d=driver: _one_step(d))
                record.append(step.wall_s)
        for (_, row), run_plan, record in zip(group.iterrows(), plans, times, strict=True):
            results.append(
                {
                    **row.to_dict(),
                    "n_parameters": run_plan.n_parameters,
                    "sr_mode": run_plan.sr_mode,
                    "median_step_time_s": measure.median_after_compile(record),
                    "compile_step_s": record[0],
                    "timed_steps": steps,
                    "device": str(jax.devices()[0]),
                    "peak_device_memory_bytes": measure.peak_device_bytes(),
                }
            )
    return pd.DataFrame(results)
