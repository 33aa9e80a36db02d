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

from vitnqs.optimize import ConfigError, RunConfig

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


def runs_table(config: dict[str, Any]) -> pd.DataFrame:
    """Every run of the selected preset, validated, with the sweeps that use it.

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
            except ConfigError as error:
                raise ConfigError(
                    f"presets.{config['preset']}.sweeps.{sweep_name}: {error}".replace("--", "")
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
