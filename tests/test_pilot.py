"""The pilot: a run's own driver for a few steps, its row, its verdicts and the requests."""

import math

import pandas as pd
import pytest

from vitnqs import pilot as pilot_module
from vitnqs.cli import main
from vitnqs.config import RESULTS_VERSION, RUN_COLUMNS, RunConfig, RunOptions
from vitnqs.plan import TIME_EXTRA_MINUTES, TIME_MARGIN, plan_run, runtime_minutes

TINY = RunConfig("factored", 4, 0.5, 1, d=8, heads=2, samples=64, steps=200, lr=0.1,
                 diag_shift=1e-2)  # fmt: skip


@pytest.fixture(scope="module")
def row():
    return pilot_module.pilot(TINY, RunOptions(progress=False), steps=3)


def test_the_row_measures_the_runs_own_plan(row):
    plan = plan_run(TINY, RunOptions())
    assert {c: row[c] for c in RUN_COLUMNS} == {c: getattr(TINY, c) for c in RUN_COLUMNS}
    assert row["sr_mode"] == plan.sr_mode and row["memory_estimate_bytes"] == plan.memory.total
    assert (row["device_kind"], row["n_devices"], row["results_version"]) == (
        "cpu",
        1,
        RESULTS_VERSION,
    )
    assert row["finite"] and row["timed_steps"] == 3 and 0 < row["acceptance"] <= 1
    assert row["median_step_s"] > 0 and row["compile_s"] > 0
    # projected: compilation plus the other 199 steps at the median
    assert row["projected_hours"] * 3600 == pytest.approx(
        row["compile_s"] + TINY.steps * row["median_step_s"], rel=1e-9
    )
    assert set(pilot_module.KEY_COLUMNS) <= set(row)


def _verdict_row(**changes):
    base = {"device_memory_bytes": 80e9, "peak_device_bytes": 40e9, "peak_host_bytes": 4e9,
            "memory_estimate_bytes": 40e9, "projected_hours": 2.0, "finite": True}  # fmt: skip
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "max_runtime", "retries", "expected"),
    [
        ({}, None, None, "fits"),
        ({"peak_device_bytes": 70e9, "memory_estimate_bytes": 66e9}, None, None, "memory risk"),
        ({"peak_device_bytes": 47e9}, None, None, "estimate off"),  # 17.5 % over
        ({"peak_device_bytes": 45e9}, None, None, "fits"),  # 12.5 % over
        ({}, 30, 2, "needs more jobs than retries"),  # 2 h in 30-minute jobs: 4 > 3
        ({}, 60, 2, "fits"),
        ({"finite": False}, None, None, "not finite"),
        # a CPU: the process's resident memory against the estimate
        ({"peak_device_bytes": math.nan, "peak_host_bytes": 20e9}, None, None, "estimate off"),
    ],
)
def test_verdicts(changes, max_runtime, retries, expected):
    assert pilot_module.verdicts(_verdict_row(**changes), max_runtime, retries) == expected


def test_a_pilot_row_sizes_the_jobs_request(row):
    minutes = runtime_minutes(TINY, 1, 1, None, row)
    assert minutes == int(TIME_MARGIN["pilot"] * 60 * row["projected_hours"] + TIME_EXTRA_MINUTES)
    assert runtime_minutes(TINY, 1, 1, 5, row) <= 5  # the site's cap
    # a measured 3-hour run asks for 1.3 x 3 h + 10 min, whatever the formula says
    assert runtime_minutes(TINY, 1, 1, None, {"projected_hours": 3.0}) == 244
    assert runtime_minutes(TINY, 1, 1, None) == 10  # the formula: 200 tiny steps


def test_cli_pilot_and_table(tmp_path, capsys):
    argv = ["pilot", "--attention", "factored", "--L", "4", "--J2", "0.5", "--layers", "1",
            "--d", "8", "--heads", "2", "--samples", "64", "--steps", "200", "--lr", "0.1",
            "--diag-shift", "0.01", "--device", "cpu", "--timed-steps", "2"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["pilot-table", str(tmp_path / "a.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 1 and table.verdict.iloc[0] in ("fits", "estimate off")
    assert {"request_minutes", "request_mem_mb", "projected_hours"} <= set(table.columns)
    assert "projected" in capsys.readouterr().out
