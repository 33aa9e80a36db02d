"""From ``config.yaml`` to the table of optimization runs (one row per distinct run).

A preset holds shared hyperparameters, seeds and named sweeps; a sweep is a grid over
attention x L x J2 x layers, optionally overriding hyperparameters and seeds. Runs that
several sweeps share appear once, with all their sweep names in the ``sweeps`` column.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from vitnqs.config import (
    RUN_COLUMNS,
    ConfigError,
    FieldError,
    RunConfig,
    RunOptions,
    run_name,
)
from vitnqs.plan import plan_run
from vitnqs.tables import in_sweep

__all__ = ["RUN_COLUMNS", "preset", "run_names", "run_options", "runs_table"]

FIGURE_SWEEPS = ("fig2", "fig3", "fig4", "table1")
"""Sweeps the figures and tables are drawn from; every preset must define them."""


def preset(config: dict[str, Any]) -> dict[str, Any]:
    """The selected preset of a (schema-validated) configuration."""
    name = config["preset"]
    if name not in config["presets"]:
        raise ConfigError(
            "preset", f"unknown preset {name!r}; allowed: {', '.join(config['presets'])}"
        )
    return config["presets"][name]


def run_options(config: dict[str, Any]) -> RunOptions:
    """How the selected preset's runs execute: chunk size, device, GPUs, GPU memory."""
    chosen = preset(config)
    return RunOptions(
        chunk_size=chosen["chunk_size"],
        device=chosen["device"],
        n_devices=config.get("gpus_per_run", 1),
        gpu_memory_gb=config.get("gpu_memory_gb") if chosen["device"] != "cpu" else None,
    )


CONFIG_KEYS = {"n_devices": "gpus_per_run", "samples/n_devices": "samples/gpus_per_run"}
"""config.yaml's names of the run options that it names otherwise."""


def runs_table(config: dict[str, Any]) -> pd.DataFrame:
    """Every run of the selected preset, validated, with the sweeps that use it.

    Besides each run's settings this checks, before anything runs, that its samples split
    evenly over ``gpus_per_run`` devices and into chunks, and that its memory estimate
    fits ``gpu_memory_gb``.

    Raises:
        ConfigError: naming the config field of the first invalid value.

    """
    chosen = preset(config)
    missing = [s for s in FIGURE_SWEEPS if s not in chosen["sweeps"]]
    if missing:
        raise ConfigError(
            f"presets.{config['preset']}.sweeps",
            f"missing {', '.join(missing)} (needed by the figures and tables)",
        )
    options = run_options(config)
    rows: dict[tuple, dict[str, Any]] = {}
    for sweep_name, sweep in chosen["sweeps"].items():
        hyper = {**chosen["hyperparameters"], **sweep.get("hyperparameters", {})}
        seeds = sweep.get("seeds", chosen["seeds"])
        grid = itertools.product(
            sweep["attention"], sweep["L"], sweep["J2"], sweep["layers"], seeds
        )
        for attention, L, J2, layers, seed in grid:
            settings = {"attention": attention, "L": L, "J2": J2, "layers": layers, "seed": seed}
            run = RunConfig.from_row({**hyper, **settings})
            try:
                run.validate()
                options.validate(run)
                plan_run(run, options).check_memory()  # the declared gpu_memory_gb, if any
            except FieldError as error:
                field = CONFIG_KEYS.get(error.field, error.field)
                raise ConfigError(
                    f"presets.{config['preset']}.sweeps.{sweep_name}", f"{field}: {error.message}"
                ) from None
            key = tuple(getattr(run, c) for c in RUN_COLUMNS)
            rows.setdefault(key, {**dict(zip(RUN_COLUMNS, key, strict=True)), "sweeps": []})
            rows[key]["sweeps"].append(sweep_name)
    table = pd.DataFrame(list(rows.values()))
    table["sweeps"] = table["sweeps"].map(";".join)
    return table


def run_names(table: pd.DataFrame) -> list[str]:
    """The run directory names of a runs table (:func:`vitnqs.config.run_name`).

    The pipeline's ``{run}`` wildcard; :meth:`vitnqs.config.RunConfig.from_name` gives the
    settings back.
    """
    return [run_name(RunConfig.from_row(row)) for _, row in table.iterrows()]


TIMED_SWEEP = "fig3"
"""The sweep whose runs are timed one at a time (Figure 3 plots time per step against L)."""


def timing_plan(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of :data:`TIMED_SWEEP` to time: its first seed (the seed does not change the cost).

    Args:
        runs: a runs table of :func:`runs_table`.

    """
    plan = in_sweep(runs, TIMED_SWEEP)
    plan = plan[plan["seed"] == plan["seed"].min()]
    return plan[list(RUN_COLUMNS)].reset_index(drop=True)
