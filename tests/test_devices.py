"""Device guard, several devices per run, and one process per run directory."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vitnqs import checkpoint, devices
from vitnqs.config import ConfigError, RunConfig, RunOptions
from vitnqs.optimize import optimize
from vitnqs.rundir import LOCK
from vitnqs.stops import EXIT_BAD_SETUP, EXIT_BUSY

TINY = RunConfig(
    attention="factored", L=4, J2=0.0, layers=1, d=8, heads=2, samples=32, steps=8, seed=1
)
TINY_ARGS = [
    *("--attention", "factored", "--L", "4", "--J2", "0", "--layers", "1", "--d", "8"),
    *("--heads", "2", "--samples", "32", "--steps", "8", "--seed", "1", "--quiet"),
]


def _cli(*args, env=None, timeout=600, command="optimize"):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "vitnqs", command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),  # SLURM: node has GPUs, job none
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"CUDA_VISIBLE_DEVICES": "1"}, "CUDA_VISIBLE_DEVICES=1"),
        ({"SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"}, "SLURM_JOB_GPUS=0,1"),
    ],
)
def test_allocated_gpus(environ, expected):
    assert devices.allocated_gpus(environ) == expected


@pytest.mark.skipif(
    devices.cuda_plugin_installed() is not None, reason="a CUDA plugin is installed here"
)
def test_gpu_run_without_cuda_stops_before_writing_anything(tmp_path):
    done, took = _cli(*TINY_ARGS, "--device", "gpu", "--out", tmp_path / "run")
    assert done.returncode == EXIT_BAD_SETUP, done.stderr
    assert "--device gpu: JAX has no GPU backend: no CUDA-enabled jaxlib installed" in done.stderr
    assert "requirements-cuda.lock" in done.stderr and "conda" in done.stderr
    assert not (tmp_path / "run").exists()
    print(f"\n[devices] --device gpu refused after {took:.1f} s (process start to exit)")


@pytest.mark.skipif(
    devices.cuda_plugin_installed() is not None, reason="a CUDA plugin is installed here"
)
@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("step-times", ("--plan", "plan.csv", "--steps", "2")),
        ("benchmark", ("--L", "4", "--layers", "1", "--d", "8", "--heads", "2")),
    ],
)
def test_timing_commands_are_guarded_like_runs(command, args, tmp_path):
    """The jobs that time steps hold a GPU on a cluster too: a CPU fallback is refused."""
    out = tmp_path / "times.csv"
    done, _ = _cli(*args, "--device", "gpu", "--out", out, command=command)
    assert done.returncode == EXIT_BAD_SETUP, done.stderr
    assert f"vitnqs {command}: error: --device gpu: JAX has no GPU backend" in done.stderr
    assert not out.exists()


def test_auto_refuses_a_gpu_allocation_that_jax_cannot_use(tmp_path):
    env = {**_env(), "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
    done, _ = _cli(*TINY_ARGS, "--out", tmp_path / "run", env=env)
    assert done.returncode == EXIT_BAD_SETUP, done.stderr
    assert "--device auto: this job holds GPUs (SLURM_JOB_GPUS=0) but JAX runs on cpu" in (
        done.stderr
    )
    assert "no CUDA-enabled jaxlib installed" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_cuda_plugin_that_fails_is_told_apart(monkeypatch):
    monkeypatch.setattr(devices, "cuda_plugin_installed", lambda: "jax-cuda12-plugin 0.10.2")
    problem = devices._gpu_problem()
    assert problem.startswith("the CUDA plugin failed to start (jax-cuda12-plugin 0.10.2")
    assert "Unknown backend" in problem  # JAX's own error is kept
    assert "no CUDA-enabled jaxlib" not in problem


def test_cpu_on_a_gpu_allocation_says_so():
    import jax

    line = devices.describe(jax.devices(), "cpu", {"SLURM_JOB_GPUS": "1"})
    assert line.startswith("device cpu: running on 1 cpu device(s): ")
    assert "the allocated GPUs (SLURM_JOB_GPUS=1) stay unused (--device cpu)" in line
    assert "unused" not in devices.describe(jax.devices(), "auto", {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RunOptions(device="tpu"), "device: must be one of gpu, cpu, auto (got 'tpu')"),
        (RunOptions(n_devices=0), "n_devices: must be a positive integer (got 0)"),
        (RunOptions(n_devices=3), "samples/n_devices: 32 samples do not split evenly"),
        (RunOptions(n_devices=2, chunk_size=5), "chunk_size: 5 does not divide the 16"),
    ],
)
def test_device_options_are_checked_up_front(options, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        optimize(TINY, tmp_path / "run", options)
    assert not (tmp_path / "run").exists()


def test_device_count_mismatch_is_refused(tmp_path):
    # this process's JAX has one CPU device; the run asks for 2 with the divisibility right
    with pytest.raises(devices.DeviceError, match=r"shard over 2 device\(s\).*JAX sees 1"):
        optimize(TINY, tmp_path / "run", RunOptions(n_devices=2, device="cpu"))


def _env():
    import os

    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src}


def test_two_devices_match_one_device(tmp_path):
    """NetKet shards the chains over 2 virtual CPU devices: same energies as on 1."""
    one = optimize(TINY, tmp_path / "one", RunOptions(progress=False))
    done, took = _cli(*TINY_ARGS, "--device", "cpu", "--n-devices", "2", "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running on 2 cpu device(s): cpu:0, cpu:1" in done.stderr
    two = json.loads((tmp_path / "two/summary.json").read_text())
    assert two["devices"] == ["cpu:0", "cpu:1"] and two["options"]["n_devices"] == 2
    assert one["devices"] == ["cpu:0"]
    # final energies (fresh samples) and every step's energy, within error bars; in fact
    # the sharded sampler draws the same chains, so they agree far closer than that
    assert abs(two["energy"] - one["energy"]) < one["energy_error"]
    h1, h2 = pd.read_csv(tmp_path / "one/history.csv"), pd.read_csv(tmp_path / "two/history.csv")
    assert len(h1) == len(h2) == TINY.steps
    assert ((h1.energy - h2.energy).abs() < 0.01 * h1.energy_error).all(), (h1, h2)
    print(
        f"\n[devices] E/N 1 device {one['energy']:.12f} +- {one['energy_error']:.6f}, "
        f"2 devices {two['energy']:.12f} ({took:.0f} s)"
    )


def test_second_process_on_a_locked_run_dir_stops_at_once(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_checkpoint(run, {"step": 3, "note": "the first process's"})
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    with checkpoint.lock_run_dir(run):  # this process is the first writer
        holder = (run / LOCK).read_text()
        done, took = _cli(*TINY_ARGS, "--device", "cpu", "--out", run, env=_env())
        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    assert done.returncode == EXIT_BUSY, done.stderr
    assert f"{run} is in use by another process ({holder.strip()})" in done.stderr
    assert "touches nothing" in done.stderr
    assert after == {**before, LOCK: after[LOCK]}
    assert after[LOCK][0] == holder.encode()
    print(f"\n[devices] second process on a locked run directory exited after {took:.1f} s")


def test_the_lock_is_released_when_its_holder_exits(tmp_path):
    with checkpoint.lock_run_dir(tmp_path):
        pass
    with checkpoint.lock_run_dir(tmp_path):  # free again
        assert "pid" in (tmp_path / LOCK).read_text()
