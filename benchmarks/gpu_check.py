"""GPU check of the pipeline's code: devices, the pilot, a 30-step run, the phase table.

Run by ``benchmarks/gpu_check.sh`` (which installs what the machine lacks); each
section writes its files into ``--out`` as soon as they are done, so a run cut short by
a time limit still returns the first ones. The sections, in their default order (name
any of them with ``--sections``, comma-separated; each stops at the ``--minutes``
budget):

``env``: ``env.json``: device, memory, versions;
``pilot6``, ``pilot10``, ``pilot1``: ``vitnqs pilot`` (5 timed steps) of the paper
preset's runs: T5 and Decoupled at L = 6 (4 layers), the three attentions at L = 10,
then the 1-layer runs; a row per run as it is measured (``pilot_<section>_*.csv``) and
``pilot_<section>.csv`` with the verdicts;
``run30``: ``run30.csv``: 31 steps (0-30) at the paper preset's settings on 6 x 6 (J2 = 0.5,
   Factored, 4 layers), energy, relative error and acceptance printed every 5 steps;
   the check: everything finite and E(30) below E(0) by more than 10 error bars;
``phases``: ``phases_*.csv``: ``python -m vitnqs benchmark`` at the paper preset's samples and
   chunk size: L = 6 in every SR mode (the default first), L = 10 in the default
   mode, then L = 6 with the float32 network.

``--device cpu`` runs the same code at a toy size (smoke preset, 4 x 4) on the CPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
            "jax-cuda12-pjrt", "flax", "optax", "netket", "numpy", "scipy", "numba",
            "sparse", "plum-dispatch", "igraph", "pandas")  # fmt: skip


def section(title: str) -> float:
    """Print a section header; return the time it started."""
    print(f"\n=== {title} ({time.strftime('%H:%M:%S')}) ===", flush=True)
    return time.perf_counter()


def environment(out: Path, device: str) -> dict:
    """Section 1: device, memory and versions; exit 4 if a GPU was asked for but is absent."""
    import jax

    info = {"python": platform.python_version(), "host": platform.node()}
    for name in PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                         capture_output=True, text=True)  # fmt: skip
    info["vitnqs_git"] = git.stdout.strip() or None
    info["devices"] = [str(d) for d in jax.devices()]
    info["platform"] = jax.devices()[0].platform
    from vitnqs.measure import device_memory_bytes

    info["device_memory_gb"] = device_memory_bytes() / 1e9
    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if device == "gpu" \
        else None  # fmt: skip
    info["nvidia_smi"] = smi.stdout.strip() if smi else None
    for key, value in info.items():
        print(f"{key:>18}: {value}")
    (out / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    if device == "gpu" and info["platform"] != "gpu":
        print("FAIL: --device gpu but JAX has no GPU backend", flush=True)
        sys.exit(4)
    return info


def preset_settings(name: str) -> dict:
    """Hyperparameters and chunk size of a preset of config.yaml."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    preset = config["presets"][name]
    return {**preset["hyperparameters"], "chunk_size": preset["chunk_size"]}


def run30(out: Path, toy: bool) -> bool:
    """Section 2: the first 31 steps of a paper-preset run; True if the check passes."""
    import jax
    import numpy as np

    from vitnqs import measure
    from vitnqs.config import RunConfig, RunOptions
    from vitnqs.optimize import build_driver
    from vitnqs.plan import plan_run
    from vitnqs.references import reference_energy, relative_error

    s = preset_settings("smoke" if toy else "paper")
    L, layers, steps = (4, 1, 31) if toy else (6, 4, 31)
    config = RunConfig(
        attention="factored", L=L, J2=0.5, layers=layers, d=s["d"], heads=s["heads"],
        # toy: 256 samples, so that 30 steps clear 10 error bars with a margin (64: 11)
        b=s["b"], samples=256 if toy else s["samples"], steps=1000 if toy else s["steps"],
        lr=s["lr"],
        diag_shift=s["diag_shift"],
    )  # fmt: skip
    print(f"{config}\nchunk_size {s['chunk_size']}; {steps} steps of the {config.steps}-step "
          "schedule")  # fmt: skip
    options = RunOptions(chunk_size=s["chunk_size"], progress=False)
    plan = plan_run(config, options, reported_bytes=measure.device_memory_bytes())
    driver = build_driver(config, options, plan)
    print(f"parameters {driver.state.n_parameters}, SR driver {type(driver).__name__}, "
          f"{plan.describe()}")  # fmt: skip
    reference = reference_energy(L, config.J2)
    rows, clock = [], measure.Stopwatch()

    def callback(step, log_data, driver):
        jax.block_until_ready(driver.state.parameters)
        stats = log_data["Energy"]
        energy = float(np.real(stats.mean)) / config.n_sites
        row = {
            "step": step,
            "energy": energy,
            "energy_error": float(stats.error_of_mean) / config.n_sites,
            "rel_error": relative_error(energy, reference),
            "acceptance": float(driver.state.sampler_state.acceptance),
            "time_s": clock.stop(),
        }
        clock.start()
        rows.append(row)
        if step % 5 == 0 or step == steps - 1:
            print("step {step:3d}  E/N {energy:.6f} +- {energy_error:.6f}  rel.err {rel_error:.3e}"
                  "  acc {acceptance:.3f}  {time_s:.2f} s".format(**row), flush=True)  # fmt: skip
        return True

    driver.run(steps, callback=callback, show_progress=False)
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out / "run30.csv", index=False)
    first, final = rows[0], rows[-1]
    sigma = math.hypot(first["energy_error"], final["energy_error"])
    finite = bool(np.isfinite(table[["energy", "energy_error"]].to_numpy()).all())
    drop = (first["energy"] - final["energy"]) / sigma if sigma > 0 else math.nan
    passed = finite and drop > 10
    median_step = measure.median_after_compile(list(table["time_s"]))
    print(f"{'PASS' if passed else 'FAIL'}: finite={finite}, E(0)-E({final['step']}) = "
          f"{drop:.1f} error bars (need > 10); median step {median_step:.2f} s "
          f"(step 0 with compilation {rows[0]['time_s']:.1f} s)", flush=True)  # fmt: skip
    return passed


def phases(out: Path, toy: bool, deadline: float) -> None:
    """Section 3: the phase table, most important cases first, until the deadline."""
    s = preset_settings("smoke" if toy else "paper")
    common = ["--samples", str(s["samples"]), "--steps", "2" if toy else "3"]
    if s["chunk_size"]:
        common += ["--chunk-size", str(s["chunk_size"])]
    if toy:
        common += ["--d", "8", "--heads", "2", "--layers", "1", "--attention", "factored"]
    from vitnqs.config import RunConfig, RunOptions
    from vitnqs.plan import plan_run

    # the device memory from section 1: JAX in this (parent) process would take the
    # GPU's memory away from the benchmark's child processes
    env = json.loads((out / "env.json").read_text())
    memory = (env["device_memory_gb"] or 16) * 1e9
    largest = RunConfig("t5", 4 if toy else 10, 0.5, 1 if toy else 4, d=s["d"], heads=s["heads"],
                        samples=s["samples"])  # fmt: skip
    default = plan_run(
        largest, RunOptions(chunk_size=s["chunk_size"]), reported_bytes=memory
    ).sr_mode
    others = [mode for mode in ("explicit", "symmetric", "onthefly") if mode != default]
    small = ["--L", "4"] if toy else ["--L", "6"]
    # most important first: the default mode at L = 6 (with the other modes on the
    # same samples), at L = 10, then the float32 network
    parts = [
        ("L6", [*small, "--sr-modes", default, *others, "--no-driver-step"]),
        ("L10", [] if toy else ["--L", "10", "--sr-modes", default, "--no-driver-step"]),
        ("L6_float32", [*small, "--sr-modes", default, "--network-dtypes", "float32",
                        "--attention", "factored", *([] if toy else ["t5"]), "--no-driver-step"]),
    ]  # fmt: skip
    for name, extra in parts:
        if not extra:
            continue
        left = (deadline - time.perf_counter()) / 60
        if left < 1:
            print(f"phases {name}: skipped, {left:.1f} min left", flush=True)
            continue
        section(f"phases {name}")
        command = [sys.executable, "-m", "vitnqs", "benchmark", *common, *extra,
                   "--max-minutes", f"{max(left - 1.5, 0.1):.1f}",
                   "--out", str(out / f"phases_{name}.csv")]  # fmt: skip
        print(" ".join(command[1:]), flush=True)
        subprocess.run(command)


PILOT_SECTIONS = {
    # name: (title, runs as (attention, L, layers), share of the time left it may take)
    "pilot6": ("pilot: T5 and Decoupled at L = 6, 4 layers",
               [("t5", 6, 4), ("decoupled", 6, 4)]),
    "pilot10": ("pilot: the three attentions at L = 10, 4 layers",
                [("t5", 10, 4), ("decoupled", 10, 4), ("factored", 10, 4)]),
    "pilot1": ("pilot: the 1-layer runs (L = 6)",
               [("t5", 6, 1), ("decoupled", 6, 1), ("factored", 6, 1)]),
}  # fmt: skip
SECTION_MINUTES = {"pilot6": 3.5, "pilot10": 4.5, "pilot1": 3.0}
"""Each pilot section's own time guard on a GPU (issue 15: T5 ~3 s/step at L = 6, ~8 s at
L = 10, plus 25-40 s of compilation per run); ``--minutes`` bounds them all."""
PILOT_TIMED_STEPS = 5
"""The pilot's timed steps per run on the GPU machine (the H200 run was flat from its
second step)."""


def pilot_section(name: str, out: Path, toy: bool, deadline: float) -> int:
    """A pilot section: ``vitnqs pilot`` per run (each in its own process), then its table.

    Each run's row is written to ``out`` as soon as it is measured; no run starts with
    less than a minute left before ``deadline``, and a run is stopped at it. Returns 1 if
    a run failed (not if one was skipped or stopped for time: that is said).
    """
    title, runs = PILOT_SECTIONS[name]
    s = preset_settings("smoke" if toy else "paper")
    rows, failed = [], 0
    for attention, L, layers in runs:
        if toy:  # the smoke preset's model on 4 x 4, its samples
            L, layers = 4, 1
        left = deadline - time.perf_counter()
        label = f"{name} {attention} L={L} layers={layers}"
        if left < 60:
            print(f"{label}: skipped, {left:.0f} s left", flush=True)
            continue
        row = out / f"pilot_{name}_{attention}_L{L}_l{layers}.csv"
        command = [
            sys.executable,
            "-m",
            "vitnqs",
            "pilot",
            "--attention",
            attention,
            "--L",
            str(L),
            "--J2",
            "0.5",
            "--layers",
            str(layers),
            *[
                f"--{k.replace('_', '-')}={s[k]}"
                for k in ("d", "heads", "b", "samples", "steps", "lr", "diag_shift")
            ],
            "--device",
            "cpu" if toy else "gpu",
            "--timed-steps",
            str(2 if toy else PILOT_TIMED_STEPS),
            "--out",
            str(row),
        ]
        if s["chunk_size"]:
            command += ["--chunk-size", str(s["chunk_size"])]
        print(" ".join(command[2:]), flush=True)
        try:
            code = subprocess.run(command, timeout=left).returncode
        except subprocess.TimeoutExpired:
            print(f"{label}: stopped at the section's deadline", flush=True)
            continue
        if code == 0:
            rows.append(str(row))
        else:
            print(f"{label}: FAILED (exit {code})", flush=True)
            failed += 1
    if rows:
        table = [sys.executable, "-m", "vitnqs", "pilot-table", *rows,
                 "--out", str(out / f"pilot_{name}.csv")]  # fmt: skip
        subprocess.run(table)
    return 1 if failed else 0  # a run skipped or stopped for time is said, not failed


def main() -> int:
    """Run the sections (each in its own process: a JAX process keeps its GPU memory)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--out", required=True, help="directory for the section files")
    parser.add_argument("--minutes", type=float, default=8.5, help="time budget of the check")
    parser.add_argument(
        "--sections",
        default="env,pilot6,pilot10,pilot1,run30,phases",
        help="which sections to run, in order, each with its own time guard (%(default)s); "
        "1, 2 and 3 are the old names of env, run30 and phases",
    )
    parser.add_argument("--section", help=argparse.SUPPRESS)  # one section, in a child
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    toy = args.device == "cpu"
    if args.section == "1":
        environment(out, args.device)
        return 0
    if args.section == "2":
        t = time.perf_counter()
        passed = run30(out, toy)
        print(f"section 2 took {time.perf_counter() - t:.0f} s", flush=True)
        return 0 if passed else 1
    start = time.perf_counter()
    deadline = start + 60 * args.minutes
    titles = {
        "1": "device and versions",
        "2": "30 steps at the paper preset's settings" + (" (toy size)" if toy else ""),
    }
    old_names = {"1": "env", "2": "run30", "3": "phases"}  # "--sections 123"
    names = [
        old_names.get(name, name)
        for token in args.sections.split(",")
        for name in (token if token.isdigit() else [token.strip()])
    ]
    status = 0
    for name in names:
        if name == "phases":
            section("phase table")
            phases(out, toy, deadline)
        elif name in PILOT_SECTIONS:
            section(PILOT_SECTIONS[name][0] + (" (toy size)" if toy else ""))
            guard = time.perf_counter() + 60 * SECTION_MINUTES[name] * (0.5 if toy else 1)
            status = status or pilot_section(name, out, toy, min(deadline, guard))
        elif name in ("env", "run30"):
            number = {"env": "1", "run30": "2"}[name]
            section(titles[number])
            child = [sys.executable, __file__, "--section", number, "--device", args.device,
                     "--out", str(out)]  # fmt: skip
            code = subprocess.run(child).returncode
            if name == "env" and code:
                return code  # no GPU: nothing else can run
            status = status or code
        else:
            print(f"unknown section {name!r}; known: env, {', '.join(PILOT_SECTIONS)}, run30, "
                  "phases", flush=True)  # fmt: skip
            return 2
    print(f"\ngpu_check done in {time.perf_counter() - start:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
