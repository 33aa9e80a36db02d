"""Faults that must never put a wrong number into a table (issue 22).

A finished run is checked before it is read; versions tell the truth; the tables keep
the learning rate a run used; the pilot applies the run's guard; bad input is refused
at the edge with exit code 2; signals and full disks end cleanly.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vitnqs import checkpoint, files, rundir
from vitnqs.cli import main
from vitnqs.config import RESULTS_VERSION, RunConfig, RunOptions
from vitnqs.optimize import UNRECORDED_CHECKPOINT_VERSION, _Run, optimize
from vitnqs.pilot import pilot, verdicts
from vitnqs.stops import EXIT_BAD_INPUT, EXIT_DAMAGED_RUN, EXIT_INTERRUPTED, Interrupted
from vitnqs.tables import collect

TINY = RunConfig(
    attention="factored", L=4, J2=0.0, layers=1, d=8, heads=2, samples=16, steps=6, seed=2
)
EVERY2 = RunOptions(checkpoint_every=2, progress=False)
TINY_ARGV = [
    *("--attention", "factored", "--L", "4", "--J2", "0", "--layers", "1", "--d", "8"),
    *("--heads", "2", "--samples", "16", "--steps", "6", "--seed", "2", "--quiet"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished run (about 15 s), copied by the tests that change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, optimize(TINY, out, EVERY2)


def _copy(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    return run


def _cut_last_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def vars_of(config: RunConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(config)


# ---- 1. a finished run is checked before anything reads it ---------------------------------


def test_the_summary_vouches_for_the_history_and_the_parameters(finished):
    out, summary = finished
    vouched = summary["files"]
    assert vouched["history_rows"] == TINY.steps
    for name in rundir.VOUCHED:
        assert vouched[name] == rundir.file_record(out / name)
    rundir.check_finished(out, summary)  # intact: no complaint


def test_a_cut_history_is_refused_by_every_reader_and_restored_by_a_rerun(
    finished, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    full = (run / rundir.HISTORY).read_text()
    _cut_last_line(run / rundir.HISTORY)
    sweeps = pd.DataFrame([{**vars_of(TINY), "sweeps": "fig2"}])
    with pytest.raises(rundir.DamagedRun, match=r"history.csv does not match"):
        collect(sweeps, [run])
    with pytest.raises(rundir.DamagedRun, match="history.csv"):
        rundir.load_run(run)  # the symmetrized evaluation, the attention maps, fine-tuning
    code = main(["collect", "--sweeps", str(_write(tmp_path, sweeps)), "--runs-dir",
                 str(tmp_path), "--out-runs", str(tmp_path / "r.csv"), "--out-history",
                 str(tmp_path / "h.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_DAMAGED_RUN and "rerun the run's command" in err
    assert not (tmp_path / "h.csv").exists()
    # the run's own command: it counts as unfinished, resumes from its last checkpoint
    summary = optimize(TINY, run, EVERY2)
    assert "the run counts as unfinished" in capsys.readouterr().err
    assert (run / rundir.HISTORY).read_text() == full
    assert summary["energy"] == finished[1]["energy"]  # the same final evaluation


def test_a_summary_of_older_code_is_checked_on_the_history_rows(finished, tmp_path):
    run = _copy(finished, tmp_path)
    summary = json.loads((run / rundir.SUMMARY).read_text())
    del summary["files"]  # as written before summaries vouched for files
    (run / rundir.SUMMARY).write_text(json.dumps(summary))
    rundir.check_finished(run, summary)
    _cut_last_line(run / rundir.HISTORY)
    with pytest.raises(rundir.DamagedRun, match=f"has {TINY.steps - 1} rows where the run took"):
        rundir.check_finished(run, summary)


def test_a_changed_parameter_file_is_refused(finished, tmp_path):
    run = _copy(finished, tmp_path)
    data = bytearray((run / rundir.PARAMS).read_bytes())
    data[-1] ^= 1
    (run / rundir.PARAMS).write_bytes(bytes(data))
    with pytest.raises(rundir.DamagedRun, match="params.msgpack does not match"):
        rundir.read_checked(run)


def _write(tmp_path: Path, sweeps: pd.DataFrame) -> Path:
    sweeps = sweeps.assign(run="run")
    path = tmp_path / "sweeps.csv"
    sweeps.to_csv(path, index=False)
    return path


# ---- 2. versions that tell the truth ------------------------------------------------------


def _interrupt_at(monkeypatch, step_to_signal):
    original = _Run.step_end

    def step_end(self, step, log_data, driver, seconds):
        original(self, step, log_data, driver, seconds)
        if step == step_to_signal:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(_Run, "step_end", step_end)


@pytest.mark.parametrize("written_by", [[RESULTS_VERSION - 1], None])
def test_a_checkpoint_of_older_code_never_yields_a_current_summary(
    written_by, tmp_path, monkeypatch
):
    _interrupt_at(monkeypatch, step_to_signal=2)
    with pytest.raises(Interrupted):
        optimize(TINY, tmp_path, EVERY2)
    monkeypatch.undo()
    payload = checkpoint.load_checkpoint(tmp_path)
    assert payload["results_versions"] == [RESULTS_VERSION]
    if written_by is None:  # a checkpoint of the code before checkpoints recorded it
        del payload["results_versions"]
    else:
        payload["results_versions"] = written_by
    checkpoint.save_checkpoint(tmp_path, payload)
    summary = optimize(TINY, tmp_path, EVERY2)
    oldest = UNRECORDED_CHECKPOINT_VERSION if written_by is None else written_by[0]
    assert summary["results_version"] == oldest < RESULTS_VERSION
    assert summary["results_versions"] == [oldest, RESULTS_VERSION]


# ---- 3. the tables keep what the run did --------------------------------------------------


def test_the_collected_tables_keep_the_learning_rate_the_run_used(finished, tmp_path):
    run = _copy(finished, tmp_path)
    summary = json.loads((run / rundir.SUMMARY).read_text())
    summary["lr_factor"] = 0.5  # as after a divergence remedy
    (run / rundir.SUMMARY).write_text(json.dumps(summary))
    runs, history = collect(pd.DataFrame([{**vars_of(TINY), "sweeps": "fig2"}]), [run])
    assert list(history.columns).count("lr") == 1 and (history["lr"] == TINY.lr).all()
    own = pd.read_csv(run / rundir.HISTORY)["lr"]
    pd.testing.assert_series_equal(history["step_lr"], own, check_names=False)
    assert runs["lr"].item() == TINY.lr and runs["lr_effective"].item() == 0.5 * TINY.lr


# ---- 4. the pilot applies the run's own guard ---------------------------------------------


def test_the_pilot_says_diverged_for_energies_outside_the_spectrum(monkeypatch):
    import vitnqs.physics

    # every energy lies above these bounds: the run's guard would stop it at step 0
    monkeypatch.setattr(vitnqs.physics, "energy_bounds", lambda L, J2: (-10.0, -5.0))
    row = pilot(TINY, RunOptions(progress=False), steps=3)
    assert row["diverged"].startswith("step 0: the energy per site"), row
    assert "rose above the rigorous bound" in row["diverged"]
    assert "diverged" in verdicts(row, None, None).split("; ")
    assert "fits" not in verdicts(row, None, None)


# ---- 5. bad input refused at the edge, exit 2 naming the field ---------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--L", "3", "--b", "3"], "--L: 3 x 3 = 9 sites cannot hold total Sz = 0"),
        (["--seed", str(2**63)], "--seed: must be an integer from 0 to 2**63 - 1"),
        (["--J2", "1e308"], "--J2: must be between 0 and 10"),
        (["--samples", "2"], "--samples: must be >= 16"),
    ],
)
def test_values_the_run_cannot_use_are_refused(args, message, tmp_path, capsys):
    argv = ["optimize", *TINY_ARGV, *args, "--out", str(tmp_path / "run")]
    assert main(argv) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--reference: cannot read"),
        ("{not json", "--reference: cannot read"),
        ('{"L": 4}', "--reference: .* is not a reference file of `vitnqs reference`"),
        ('{"L": 6, "J2": 0.0, "energy": null}', "--reference: .* is for L=6"),
    ],
)
def test_an_unreadable_or_malformed_reference_file_is_refused(content, message, tmp_path, capsys):
    path = tmp_path / "reference.json"
    if content is not None:
        path.write_text(content)
    argv = ["optimize", *TINY_ARGV, "--reference", str(path), "--out", str(tmp_path / "run")]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert pd.Series([err]).str.contains(message).item(), err


def test_a_corrupt_divergence_record_is_set_aside(finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.DIVERGENCES).write_text('[{"step": 3, "prob')
    summary = optimize(TINY, run, EVERY2)
    assert "is unreadable" in capsys.readouterr().err and summary["lr_factor"] == 1.0
    assert len(list(run.glob(f"{rundir.DIVERGENCES}.corrupt-*"))) == 1
    assert summary["energy"] == finished[1]["energy"]


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("symmetrize", ["--samples", "4"], "--samples: must be >= 64"),
        ("symmetrize", ["--seed", "-1"], "--seed: must be an integer from 0"),
        ("finetune", ["--steps", "0"], "--steps: must be a positive integer"),
        ("finetune", ["--steps", "2", "--lr", "inf"], "--lr: must be finite and > 0"),
    ],
)
def test_symmetrize_and_finetune_refuse_bad_input_with_exit_2(
    command, args, message, finished, tmp_path, capsys
):
    argv = [command, "--run-dir", str(finished[0]), *args, "--out", str(tmp_path / "out")]
    assert main(argv) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_symmetrize_refuses_a_directory_without_a_finished_run(tmp_path, capsys):
    argv = ["symmetrize", "--run-dir", str(tmp_path), "--out", str(tmp_path / "s.json")]
    assert main(argv) == EXIT_BAD_INPUT
    assert "--run-dir: " in capsys.readouterr().err


# ---- 6. no signal gap -------------------------------------------------------------------


def test_sigterm_during_the_last_step_stops_before_the_final_evaluation(
    finished, tmp_path, monkeypatch
):
    _interrupt_at(monkeypatch, step_to_signal=TINY.steps - 1)
    with pytest.raises(Interrupted, match="at the end of the steps"):
        optimize(TINY, tmp_path, EVERY2)
    assert not (tmp_path / rundir.SUMMARY).exists()
    assert checkpoint.load_checkpoint(tmp_path)["step"] == TINY.steps
    monkeypatch.undo()
    summary = optimize(TINY, tmp_path, EVERY2)  # resumes: only the final evaluation is left
    assert summary["energy"] == finished[1]["energy"]


@pytest.fixture(scope="module")
def interpreter_start():
    """Seconds Python takes to start here, now (a loaded machine starts it slower): a signal
    before that reaches no handler of ours, whatever the program."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import vitnqs.stops"], check=True)
    return time.perf_counter() - start


@pytest.mark.parametrize("after", [0.0, 0.2, 0.5, 1.0, 2.0])
def test_sigterm_at_any_moment_of_start_up_exits_75(after, interpreter_start, tmp_path):
    argv = [sys.executable, "-m", "vitnqs", "optimize", *TINY_ARGV, "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5 * interpreter_start + after)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "SIGTERM" in err and not (tmp_path / rundir.SUMMARY).exists()


# ---- 7. disk faults, finished ------------------------------------------------------------


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "summary.json"
    with pytest.raises(OSError) as error:
        files.write_atomic(target, b"{}")
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
