"""The run command: outputs, resume after SIGTERM, corrupt checkpoints, NaN guard, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import numpy as np
import pandas as pd
import pytest

from vitnqs import checkpoint, files
from vitnqs.cli import main
from vitnqs.config import ConfigError, RunConfig, RunOptions
from vitnqs.optimize import _Run, optimize
from vitnqs.rundir import CHECKPOINT, DIVERGENCES, HISTORY_COLUMNS, PREVIOUS_CHECKPOINT
from vitnqs.stops import EXIT_INTERRUPTED, Diverged, Interrupted

TINY = RunConfig(
    attention="factored", L=4, J2=0.0, layers=1, d=8, heads=2, samples=32, steps=8, seed=1
)
EVERY2 = RunOptions(checkpoint_every=2, progress=False)
DETERMINISTIC = [c for c in HISTORY_COLUMNS if c != "time_s"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = optimize(TINY, out, EVERY2)
    return out, summary


def _history(out):
    return pd.read_csv(Path(out) / "history.csv")


def _assert_same_history(a, b):
    ha, hb = _history(a), _history(b)
    assert list(ha.step) == list(range(TINY.steps)) == list(hb.step)
    pd.testing.assert_frame_equal(ha[DETERMINISTIC], hb[DETERMINISTIC], check_exact=True)
    assert (Path(a) / "params.msgpack").read_bytes() == (Path(b) / "params.msgpack").read_bytes()


def _interrupt_at(monkeypatch, step_to_signal, signum=signal.SIGTERM):
    """Send a real signal to this process at the end of the given step."""
    original = _Run.step_end

    def step_end(self, step, log_data, driver, seconds):
        original(self, step, log_data, driver, seconds)
        if step == step_to_signal:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(_Run, step_end.__name__, step_end)


def test_outputs(uninterrupted):
    out, summary = uninterrupted
    history = _history(out)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert (
        history[["energy", "energy_error", "energy_variance", "rel_error", "acceptance", "lr"]]
        .notna()
        .all()
        .all()
    )
    np.testing.assert_allclose(
        history.rel_error, abs((history.energy + 0.7017802) / 0.7017802), atol=1e-7
    )
    assert history.lr.iloc[0] == pytest.approx(TINY.lr) and history.lr.is_monotonic_decreasing
    assert summary["n_parameters"] == 968 and summary["eval_samples"] == 4 * TINY.samples
    assert summary["reference_kind"] == "exact diagonalization"
    assert summary["rel_error"] == pytest.approx(
        abs((summary["energy"] + 0.7017802) / 0.7017802), abs=1e-7
    )
    assert summary["config"]["attention"] == "factored" and summary["versions"]["netket"]
    assert summary["device_platform"] == "cpu" and summary["median_step_time_s"] > 0
    assert json.loads((Path(out) / "summary.json").read_text()) == summary
    init = flax.serialization.msgpack_restore((Path(out) / "init_params.msgpack").read_bytes())
    final = flax.serialization.msgpack_restore((Path(out) / "params.msgpack").read_bytes())
    assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(final)
    assert not np.allclose(init["head"]["dense_re"]["kernel"], final["head"]["dense_re"]["kernel"])


def test_finished_run_is_a_noop(uninterrupted, capsys):
    out, summary = uninterrupted
    before = {p.name: p.stat().st_mtime_ns for p in Path(out).iterdir()}
    assert optimize(TINY, out, EVERY2) == summary
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in Path(out).iterdir()} == before


def test_other_settings_in_the_same_directory_are_refused(uninterrupted):
    out, _ = uninterrupted
    before = (Path(out) / "summary.json").read_bytes()
    with pytest.raises(ConfigError, match="lr: 0.03 there, 0.05 now"):
        optimize(RunConfig(**{**TINY.__dict__, "lr": 0.05}), out, EVERY2)
    assert (Path(out) / "summary.json").read_bytes() == before


def test_resume_after_sigterm_matches_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, step_to_signal=4)
    with pytest.raises(Interrupted, match="SIGTERM"):
        optimize(TINY, tmp_path, EVERY2)
    assert len(_history(tmp_path)) == 5 and not (tmp_path / "summary.json").exists()
    assert checkpoint.read_checkpoint(tmp_path / CHECKPOINT)["step"] == 5
    # Snakemake deletes the outputs of a failed (interrupted) job
    for output in ("init_params.msgpack", "history.csv"):
        (tmp_path / output).unlink()
    monkeypatch.undo()
    optimize(TINY, tmp_path, EVERY2)
    _assert_same_history(uninterrupted[0], tmp_path)
    init = (tmp_path / "init_params.msgpack").read_bytes()
    assert init == (uninterrupted[0] / "init_params.msgpack").read_bytes()


def test_corrupt_checkpoint_is_set_aside_and_the_previous_one_used(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    _interrupt_at(monkeypatch, step_to_signal=4, signum=signal.SIGURG)  # SLURM's warning
    with pytest.raises(Interrupted, match="SIGURG"):
        optimize(TINY, tmp_path, EVERY2)
    monkeypatch.undo()
    current = tmp_path / CHECKPOINT
    current.write_bytes(current.read_bytes()[:-100])  # truncated, as by a crash mid-write
    optimize(TINY, tmp_path, EVERY2)
    err = capsys.readouterr().err
    assert "unreadable (checksum mismatch" in err and "resuming" in err and "at step 4/8" in err
    assert len(list(tmp_path.glob("checkpoint.msgpack.corrupt-*"))) == 1
    _assert_same_history(uninterrupted[0], tmp_path)


def test_non_finite_parameters_stop_the_run_and_keep_the_last_checkpoint(tmp_path, monkeypatch):
    original = _Run.step_end

    def poison(self, step, log_data, driver, seconds):
        if step == 5:
            driver.state.parameters = jax.tree_util.tree_map(
                lambda a: a * np.nan, driver.state.parameters
            )
        original(self, step, log_data, driver, seconds)

    monkeypatch.setattr(_Run, "step_end", poison)
    with pytest.raises(Diverged, match="step 5: the parameters became non-finite after the update"):
        optimize(TINY, tmp_path, EVERY2)
    saved = checkpoint.load_checkpoint(tmp_path)
    assert saved["step"] == 4 and len(_history(tmp_path)) == 5
    assert _history(tmp_path).energy.notna().all()
    assert not (tmp_path / "summary.json").exists()


def test_exploding_energy_stops_the_run(tmp_path, monkeypatch):
    original = _Run.step_end

    def explode(self, step, log_data, driver, seconds):
        if step == 3:  # a mean far below -3/4 per bond: a broken estimate
            log_data["Energy"] = log_data["Energy"].replace(mean=-50.0 * TINY.n_sites)
        original(self, step, log_data, driver, seconds)

    monkeypatch.setattr(_Run, "step_end", explode)
    with pytest.raises(
        Diverged, match=r"step 3: the energy per site -50.0000 fell below .* -1.5000"
    ):
        optimize(TINY, tmp_path, EVERY2)
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attention", "softmax"], "--attention: invalid choice: 'softmax'"),
        (["--L", "5"], "--L/--b: L=5 is not divisible by the patch size b=2"),
        (["--d", "10", "--heads", "4"], "--d/--heads: d=10 is not divisible by heads=4"),
        (["--steps", "0"], "--steps: must be > 0"),
        (["--samples", "-5"], "--samples: must be >= 16"),
        (["--J2", "-0.1"], "--J2: must be between 0 and 10 (J1 = 1)"),
        (["--diag-shift", "inf"], "--diag-shift: must be finite and > 0 (got inf)"),
        (["--lr", "nan"], "--lr: must be finite and > 0 (got nan)"),
        (["--gpu-memory-gb", "inf"], "--gpu-memory-gb: must be finite and > 0 (got inf)"),
    ],
)
def test_bad_input_names_the_option_and_exits_2(args, message, tmp_path, capsys):
    base = {
        "--attention": "t5",
        "--L": "4",
        "--J2": "0",
        "--layers": "1",
        "--d": "8",
        "--heads": "2",
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["optimize", *[x for kv in base.items() for x in kv], "--out", str(tmp_path / "run")]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_sigterm_exit_code_and_resume(uninterrupted, tmp_path):
    """The real command in a subprocess: SIGTERM mid-run, distinct exit code, rerun resumes."""
    options = {"--attention": "factored", "--L": 4, "--J2": 0, "--layers": 1, "--d": 8,
               "--heads": 2, "--samples": 32, "--steps": 8, "--seed": 1,
               "--checkpoint-every": 2, "--out": tmp_path}  # fmt: skip
    argv = [
        sys.executable,
        "-m",
        "vitnqs",
        "optimize",
        *[str(x) for kv in options.items() for x in kv],
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        history = tmp_path / "history.csv"
        # after the first step (the compiling one), so that the 7 left leave a margin: the
        # signal has been seen to take effect up to 4 steps late on a loaded machine
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "SIGTERM" in err and "rerun the same command to resume" in err
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    _assert_same_history(uninterrupted[0], tmp_path)


def _set_energy_at(monkeypatch, step_to_change, per_site):
    """Make the energy of one step read ``per_site`` (the divergence guard's input)."""
    original = _Run.step_end

    def change(self, step, log_data, driver, seconds):
        if step == step_to_change:
            log_data["Energy"] = log_data["Energy"].replace(mean=per_site * TINY.n_sites)
        original(self, step, log_data, driver, seconds)

    monkeypatch.setattr(_Run, "step_end", change)


def test_exploding_state_above_the_spectrum_stops_the_run_and_drops_its_checkpoint(
    tmp_path, monkeypatch
):
    # 4 x 4, J2 = 0: 32 bonds of at most +1/4 each, 0.5 per site
    _set_energy_at(monkeypatch, 3, per_site=8.9e128)
    every_step = RunOptions(checkpoint_every=1, progress=False)
    with pytest.raises(
        Diverged, match=r"step 3: the energy per site 8.9e\+128 rose above .* 0.5000"
    ):
        optimize(TINY, tmp_path, every_step)
    # the checkpoint of step 3 held the parameters whose energy left the bounds
    assert checkpoint.load_checkpoint(tmp_path)["step"] == 2


def test_a_diverged_run_resumes_with_half_the_learning_rate_then_stops_for_good(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    _set_energy_at(monkeypatch, 5, per_site=-50.0)
    with pytest.raises(Diverged, match="rerunning resumes from it with the learning rate x0.5"):
        optimize(TINY, tmp_path, EVERY2)
    monkeypatch.undo()
    summary = optimize(TINY, tmp_path, EVERY2)  # the retry: from step 4, half the rate
    assert "remedy: the run diverged at step 5; it goes on from step 4" in capsys.readouterr().err
    assert summary["lr_factor"] == 0.5 and [d["step"] for d in summary["divergences"]] == [5]
    history, clean = _history(tmp_path), _history(uninterrupted[0])
    pd.testing.assert_frame_equal(history[DETERMINISTIC][:4], clean[DETERMINISTIC][:4])
    np.testing.assert_allclose(history.lr[4:], 0.5 * clean.lr[4:], rtol=1e-12)
    # after the remedies allowed, a further divergence is not retried: refused at once
    (tmp_path / "summary.json").unlink()
    records = json.loads((tmp_path / DIVERGENCES).read_text())
    (tmp_path / DIVERGENCES).write_text(json.dumps(records * 3))
    with pytest.raises(Diverged, match="diverged 3 times .* it is not retried"):
        optimize(TINY, tmp_path, EVERY2)


def test_a_truncated_summary_makes_the_run_unfinished(uninterrupted, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted[0], run)
    (run / "summary.json").write_text((run / "summary.json").read_text()[:200])
    summary = optimize(TINY, run, EVERY2)
    assert "summary.json is unreadable" in capsys.readouterr().err
    assert summary["energy"] == uninterrupted[1]["energy"]  # the same final evaluation
    assert json.loads((run / "summary.json").read_text()) == summary


def test_no_readable_checkpoint_says_the_run_starts_over(tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, step_to_signal=4)
    with pytest.raises(Interrupted):
        optimize(TINY, tmp_path, EVERY2)
    monkeypatch.undo()
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        (tmp_path / name).write_bytes(b"garbage")
    optimize(TINY, tmp_path, EVERY2)
    err = capsys.readouterr().err
    assert "no readable checkpoint left" in err and "starts over from step 0" in err
    assert "resuming" not in err


TINY_ARGV = [
    *("optimize", "--attention", "factored", "--L", "4", "--J2", "0", "--layers", "1"),
    *("--d", "8", "--heads", "2", "--samples", "32", "--steps", "8", "--seed", "1", "--quiet"),
]


@pytest.mark.parametrize("where", ["build_driver", "final_evaluation"])
def test_sigterm_outside_the_step_loop_exits_75(where, tmp_path, monkeypatch, capsys):
    """During start-up or the final evaluation: exit 75, the run resumes to the same end."""
    import vitnqs.optimize as module

    original = getattr(module, where)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, where, signalled)
    assert main([*TINY_ARGV, "--out", str(tmp_path)]) == EXIT_INTERRUPTED
    assert "SIGTERM" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("fault", ["not a directory", "disk full"])
def test_a_filesystem_error_is_one_line_naming_the_path(fault, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "run"
    if fault == "not a directory":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "run"
    else:

        def full(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(files, "write_atomic", full)
    assert main([*TINY_ARGV, "--out", str(out)]) == 74
    err = capsys.readouterr().err.strip().splitlines()[-1]
    reason = "Not a directory" if fault == "not a directory" else "No space left on device"
    assert err.startswith("vitnqs optimize: error: ") and reason in err and str(tmp_path) in err
