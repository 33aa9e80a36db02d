"""From ``config.yaml`` to the table of optimization runs (one row per distinct run).

A preset holds shared hyperparameters, seeds and named sweeps; a sweep is a grid over
attention x L x J2 x layers, optionally overriding hyperparameters and seeds. Runs that
several sweeps share appear once, with all their sweep names in the ``sweeps`` column.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
from snakemake.utils import Paramspace

from vitnqs.devices import DeviceError
from vitnqs.optimize import ConfigError, RunConfig, RunOptions, check_memory

RUN_COLUMNS = (
    "attention",
    "L",
    "J2",
    "layers",
    "d",
    "heads",
    "b",
    "samples",
    "steps",
    "lr",
    "diag_shift",
    "seed",
)
"""The settings that identify a run (and name its directory), in order."""

FIGURE_SWEEPS = ("fig2", "fig3", "fig4", "table1")
"""Sweeps the figures and tables are drawn from; every preset must define them."""


def preset(config: dict[str, Any]) -> dict[str, Any]:
    """The selected preset of a (schema-validated) configuration."""
    name = config["preset"]
    if name not in config["presets"]:
        raise ConfigError(
            f"preset: unknown preset {name!r}; allowed: {', '.join(config['presets'])}"
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
            f"presets.{config['preset']}.sweeps: missing {', '.join(missing)} "
            f"(needed by the figures and tables)"
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
            run = RunConfig(
                attention=attention,
                L=int(L),
                J2=float(J2),
                layers=int(layers),
                seed=int(seed),
                **{k: hyper[k] for k in ("d", "heads", "b", "samples", "steps")},
                lr=float(hyper["lr"]),
                diag_shift=float(hyper["diag_shift"]),
            )
            try:
                run.validate()
                options.validate(run)
                if options.gpu_memory_gb is not None:
                    check_memory(run, options)
            except (ConfigError, DeviceError) as error:
                fields = {
                    "--n-devices": "gpus_per_run",
                    "--gpu-memory-gb": "gpu_memory_gb",
                    "--chunk-size": "chunk_size",
                }
                message = str(error)
                for option, field in fields.items():
                    message = message.replace(option, field)
                raise ConfigError(
                    f"presets.{config['preset']}.sweeps.{sweep_name}: {message}".replace("--", "")
                ) from None
            key = tuple(getattr(run, c) for c in RUN_COLUMNS)
            rows.setdefault(key, {**dict(zip(RUN_COLUMNS, key, strict=True)), "sweeps": []})
            rows[key]["sweeps"].append(sweep_name)
    table = pd.DataFrame(list(rows.values()))
    table["sweeps"] = table["sweeps"].map(";".join)
    return table


def run_space(table: pd.DataFrame) -> Paramspace:
    """The run directory names of a runs table: ``attention~t5_L~6_..._seed~0``.

    The pipeline's ``{run}`` wildcard; ``.instance({"run": name})`` gives the settings back.
    """
    return Paramspace(table[list(RUN_COLUMNS)], filename_params="*", single_wildcard="run")


def in_sweep(table: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Rows of a runs table (with a ``sweeps`` column) that belong to ``sweep``."""
    return table[table["sweeps"].str.split(";").map(lambda names: sweep in names)]
