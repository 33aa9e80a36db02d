"""The bounded SR step, the jump and collapse remedies, and the names of runs without them."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from netket import jax as nkjax
from netket.callbacks import AbstractCallback
from netket.utils import struct

from vitnqs import checkpoint, rundir, stability
from vitnqs.config import RunConfig, RunOptions, run_name
from vitnqs.findings import accuracy_rows
from vitnqs.loop import StepControl, build_driver, predicted_change
from vitnqs.optimize import _Run, optimize
from vitnqs.tables import troubles

TINY = RunConfig(
    attention="factored", L=4, J2=0.0, layers=1, d=8, heads=2, samples=32, steps=30, seed=3
)
OPTIONS = RunOptions(checkpoint_every=5, progress=False)


# ---- the definitions ---------------------------------------------------------------------


def test_a_healthy_descent_has_no_jump_even_with_tiny_error_bars():
    steps = np.arange(100)
    energies = -0.5 - 0.1 * (1 - np.exp(-steps / 20)) + 1e-5 * np.sin(steps)
    assert stability.find_jump(energies, np.full(100, 1e-4)) is None


def test_a_rise_of_many_error_bars_is_a_jump_at_the_window_that_rose():
    energies = np.r_[np.linspace(-0.40, -0.60, 40), np.full(30, -0.45)]
    jump = stability.find_jump(energies, np.full(70, 1e-3))
    # windows of 10: the mean rises 3 combined error bars (3 * sqrt(2) * 1e-3 / sqrt(10))
    # above the best (ending at step 39) within the first steps after the rise
    assert jump is not None and jump.best_step == 39 and 40 <= jump.step <= 41
    assert jump.sigmas > stability.JUMP_SIGMAS and jump.mean > jump.best_mean


def test_a_collapse_is_a_low_acceptance_over_a_window():
    assert stability.collapsed([0.3] * 20 + [0.05] * 10)
    assert not stability.collapsed([0.3] * 20 + [0.05] * 5)  # window mean 0.175
    assert not stability.collapsed([0.05] * 9)


# ---- the bounded step --------------------------------------------------------------------


def test_the_predicted_change_is_the_centred_jacobian_norm():
    """``||O dθ||^2 / M`` from one JVP equals it from NetKet's dense centred Jacobian."""
    driver = build_driver(TINY, OPTIONS)
    vstate = driver.state
    vstate.sample()
    update = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.key(1), x.shape), vstate.parameters
    )
    samples = vstate.samples.reshape(-1, TINY.n_sites)
    jacobian = nkjax.jacobian(
        vstate._apply_fun, vstate.parameters, samples, vstate.model_state,
        mode="complex", dense=True, center=True,
    )  # fmt: skip  # (M, 2, P): real and imaginary parts of d log psi, centred
    flat = jax.flatten_util.ravel_pytree(update)[0]
    changes = jnp.einsum("mkp,p->mk", jacobian, flat)
    expected = float(jnp.mean(jnp.sum(changes**2, axis=1)))
    assert predicted_change(vstate, update) == pytest.approx(expected, rel=1e-10)


class _Applied(AbstractCallback, mutable=True):
    """Records the predicted change of the update the driver is about to apply."""

    changes: list = struct.field(pytree_node=False, serialize=False)
    schedule: object = struct.field(pytree_node=False, serialize=False)

    def __init__(self, schedule):
        self.changes, self.schedule = [], schedule

    def before_parameter_update(self, step, log_data, driver):
        lr = float(self.schedule(step))
        self.changes.append(lr**2 * predicted_change(driver.state, driver._dp))


def _run_with(control, steps=6):
    driver = build_driver(TINY, OPTIONS)
    applied = _Applied(control.schedule)
    scales = []

    class Scales(AbstractCallback, mutable=True):
        def on_step_end(self, step, log_data, driver):
            scales.append(control.scale)

    driver.run(steps, callback=[control, applied, Scales()], show_progress=False)
    return driver, applied.changes, scales


def test_the_bounded_step_is_plain_sr_when_the_bound_is_not_reached():
    from vitnqs.loop import lr_schedule

    plain, _, _ = _run_with(StepControl(lr_schedule(TINY)))
    loose, changes, scales = _run_with(StepControl(lr_schedule(TINY), max_update=1e9))
    assert scales == [1.0] * 6 and max(changes) < 1e9
    for a, b in zip(
        jax.tree_util.tree_leaves(plain.state.parameters),
        jax.tree_util.tree_leaves(loose.state.parameters),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_the_bounded_step_bounds_the_update_when_forced():
    from vitnqs.loop import lr_schedule

    bound = 1e-6
    _, changes, scales = _run_with(StepControl(lr_schedule(TINY), max_update=bound))
    assert all(s < 1 for s in scales)
    np.testing.assert_allclose(changes, bound, rtol=1e-6)  # scaled exactly onto the bound


def test_the_history_records_the_factor_and_an_old_checkpoint_still_resumes(tmp_path):
    config = dataclasses.replace(TINY, steps=8, max_update=1e-6)
    optimize(config, tmp_path / "a", OPTIONS)
    history = pd.read_csv(tmp_path / "a" / rundir.HISTORY)
    assert (history["update_scale"] < 1).all()
    # a checkpoint written before the column existed: the run resumes with its default
    run = tmp_path / "b"
    plain = dataclasses.replace(config, max_update=0.0)
    optimize(dataclasses.replace(plain, steps=8), run, OPTIONS)
    payload = checkpoint.load_checkpoint(run)
    del payload["history"]["update_scale"]
    checkpoint.save_checkpoint(run, payload)
    (run / rundir.SUMMARY).unlink()
    summary = optimize(plain, run, OPTIONS)
    assert (pd.read_csv(run / rundir.HISTORY)["update_scale"] == 1.0).all()
    assert summary["energy"] == json.loads((run / rundir.SUMMARY).read_text())["energy"]


# ---- the remedies ------------------------------------------------------------------------


def _raise_energy_from(monkeypatch, first_step, by):
    """Steps from ``first_step`` on read ``by`` per site higher (a jump of the history),
    until the run remedies it."""
    original = _Run.step_end

    def step_end(self, step, log_data, driver, seconds):
        if step >= first_step and not self.remedies:
            stats = log_data["Energy"]
            log_data["Energy"] = stats.replace(mean=stats.mean + by * TINY.n_sites)
        original(self, step, log_data, driver, seconds)

    monkeypatch.setattr(_Run, "step_end", step_end)


def test_a_jump_returns_to_the_best_window_with_half_the_step(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    optimize(TINY, plain, OPTIONS)
    clean = pd.read_csv(plain / rundir.HISTORY)
    _raise_energy_from(monkeypatch, first_step=22, by=0.5)
    config = dataclasses.replace(TINY, jump_remedies=1)
    summary = optimize(config, tmp_path / "run", OPTIONS)
    (record,) = json.loads((tmp_path / "run" / rundir.REMEDIES).read_text())
    assert record["event"] == "jump" and record["step"] >= 22 and record["update_factor"] == 0.5
    back = record["returned_to"]
    assert back <= 22 and summary["remedies"] == [record]
    history = pd.read_csv(tmp_path / "run" / rundir.HISTORY)
    assert list(history["step"]) == list(range(TINY.steps))
    # the state of the best window came back whole: the step after it reads the same energy
    # as the run without the remedy; from there on the updates are halved
    assert history.loc[back, "energy"] == clean.loc[back, "energy"]
    assert (history["update_scale"][back:] == 0.5).all()
    assert (history["update_scale"][:back] == 1.0).all()


def test_a_collapse_takes_more_samples_from_then_on(tmp_path, monkeypatch):
    original = _Run.step_end

    def step_end(self, step, log_data, driver, seconds):
        original(self, step, log_data, driver, seconds)
        if step < 15:  # the acceptance reads 0.05 for the first steps
            self.history[-1]["acceptance"] = 0.05
            self.look_for_trouble(driver)

    monkeypatch.setattr(_Run, "step_end", step_end)
    config = dataclasses.replace(TINY, steps=16, collapse_remedies=1)
    summary = optimize(config, tmp_path, OPTIONS)
    (record,) = summary["remedies"]
    assert record["event"] == "collapse" and record["samples"] == 4 * TINY.samples
    assert record["step"] == stability.WINDOW - 1


# ---- the tables and the findings mark them -----------------------------------------------


def test_a_jump_is_marked_in_the_findings():
    history = pd.DataFrame(
        {"energy": np.r_[np.linspace(-0.4, -0.6, 40), np.full(30, -0.45)],
         "energy_error": 1e-3, "acceptance": 0.3}
    )  # fmt: skip
    marks = troubles(history)
    assert marks["jump"].startswith("step 4") and marks["collapse"] == ""
    base = {"L": 6, "J2": 0.5, "layers": 1, "sweeps": "fig2", "remedies": ""}
    runs = pd.DataFrame(
        [{**base, "attention": a, "seed": 0, "rel_error": 1e-2, "jump": "", "collapse": ""}
         for a in ("t5", "decoupled")]
        + [{**base, "attention": "factored", "seed": 0, "rel_error": 1e-2, **marks}]
    )  # fmt: skip
    (row,) = accuracy_rows(runs)
    assert "Factored seed 0 jumped at step 4" in row["numbers"]


# ---- names ---------------------------------------------------------------------------------


def test_run_names_are_unchanged_with_the_options_off():
    """Every preset's run directories keep the names Snakemake's Paramspace gave them before
    the stability options existed; a set option adds itself to the name."""
    from pathlib import Path

    import yaml
    from snakemake.utils import Paramspace

    from vitnqs.config import NAMED_ALWAYS
    from vitnqs.sweeps import run_names, runs_table

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    for preset in ("paper", "laptop", "quick", "smoke"):
        table = runs_table({**config, "preset": preset})
        before = Paramspace(table[list(NAMED_ALWAYS)], filename_params="*")
        assert run_names(table) == list(before.instance_patterns)
    bounded = dataclasses.replace(TINY, max_update=0.05, jump_remedies=2)
    assert run_name(bounded) == run_name(TINY) + "_max_update~0.05_jump_remedies~2"
    assert RunConfig.from_name(run_name(bounded)) == bounded
