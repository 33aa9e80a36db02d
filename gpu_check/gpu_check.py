"""GPU check of the pipeline's code: devices, the pilot, local energies, 30 steps, phases.

Run by ``gpu_check/gpu_check.sh`` (which installs what the machine lacks); each
section writes its files into ``--out`` as soon as they are done, so a run cut short by
a time limit still returns the first ones. The sections, in their default order (name
any of them with ``--sections``, comma-separated; each stops at the ``--minutes``
budget):

``env``: ``env.json``: device, memory, versions;
``pilot6``, ``pilot10``, ``pilot1``: ``vitnqs pilot`` (5 timed steps) of the paper
preset's runs: T5 and Decoupled at L = 6 (4 layers), the three attentions at L = 10,
then the 1-layer runs; a row per run as it is measured (``pilot_<section>_*.csv``) and
``pilot_<section>.csv`` with the verdicts;
``localenergy``: ``localenergy_phases.csv`` and ``.md``: ``python -m vitnqs benchmark`` at
   L = 6 (paper model and preset: J2 = 0.5, samples and chunk size, Factored and T5) with
   the compact and the padded local energies as the driver's, a case each (every case
   also times both modes on the same samples and gives the waste), then a
   ``jax.profiler`` trace of both modes on the same samples in ``trace_localenergy/``
   with the wall time of each call and the largest ops (kernels on a GPU) of each mode
   in ``trace_localenergy/summary.txt``;
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
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
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
    from vitnqs.loop import build_driver
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


def default_sr_mode(out: Path, s: dict, L: int, layers: int) -> str:
    """The SR mode a T5 run at ``L`` picks with the preset settings ``s`` on this device.

    The device memory is section ``env``'s (``env.json`` in ``out``): JAX in this (parent)
    process would take the GPU's memory away from the benchmark's child processes.
    Without ``env.json`` (``env`` not run) it is taken as 16 GB, and said so.
    """
    from vitnqs.config import RunConfig, RunOptions
    from vitnqs.plan import plan_run

    try:
        env = json.loads((out / "env.json").read_text())
    except (OSError, ValueError):
        print(f"no env.json in {out} (run section env first): device memory taken as 16 GB",
              flush=True)  # fmt: skip
        env = {}
    memory = (env.get("device_memory_gb") or 16) * 1e9
    config = RunConfig("t5", L, 0.5, layers, d=s["d"], heads=s["heads"], samples=s["samples"])
    return plan_run(config, RunOptions(chunk_size=s["chunk_size"]), reported_bytes=memory).sr_mode


def run_child(command: list[str], timeout: float) -> int | None:
    """Run ``command``, and the processes it starts, for at most ``timeout`` seconds.

    Returns its exit status, or ``None`` if it was stopped at the timeout: its process
    group is killed, so that a benchmark's case process does not outlive it (and keep
    the GPU's memory).
    """
    child = subprocess.Popen(command, start_new_session=True)
    try:
        return child.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return None


def phases(out: Path, toy: bool, deadline: float) -> None:
    """Section 3: the phase table, most important cases first, until the deadline."""
    s = preset_settings("smoke" if toy else "paper")
    common = ["--samples", str(s["samples"]), "--steps", "2" if toy else "3"]
    if s["chunk_size"]:
        common += ["--chunk-size", str(s["chunk_size"])]
    if toy:
        common += ["--d", "8", "--heads", "2", "--layers", "1", "--attention", "factored"]
    # the mode the largest run (T5 at L = 10) picks
    default = default_sr_mode(out, s, 4 if toy else 10, 1 if toy else 4)
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


LOCALENERGY_MINUTES = 6.0
"""Section localenergy's own time guard on a GPU: four benchmark cases at L = 6 (about a
minute each with compilation, issue 15), then the trace; the toy takes half."""
TRACE_MINUTES = 2.0
"""Time kept for the trace at the end of section localenergy (the toy: a quarter)."""
TRACE_CALLS = 3
"""Traced calls of each local-energy mode (after one compiling call)."""
TRACE_ATTENTION = "t5"
"""The attention of the traced model (the costlier one; the benchmark has both)."""


def localenergy(out: Path, toy: bool, device: str, deadline: float) -> int:
    """Section localenergy: both local-energy modes in the phase table, then a trace.

    The benchmark (its cases in child processes) may run until ``TRACE_MINUTES`` before
    ``deadline``; the trace runs in its own child (``--section localenergy``) until
    ``deadline``. Neither starts with less than a minute (the toy: 20 s) left, and each is
    stopped at its time. Returns 1 if one of them failed (not if skipped or stopped for
    time: that is said).
    """
    s = preset_settings("smoke" if toy else "paper")
    L, layers = (4, 1) if toy else (6, 4)
    reserve = 60 * TRACE_MINUTES * (0.25 if toy else 1)
    least = 20 if toy else 60
    failed = 0
    left = deadline - reserve - time.perf_counter()
    if left < least:
        print(f"localenergy benchmark: skipped, {left:.0f} s left", flush=True)
    else:
        section("localenergy: the phase table with compact and padded local energies")
        command = [
            sys.executable, "-m", "vitnqs", "benchmark", "--L", str(L), "--J2", "0.5",
            "--samples", str(s["samples"]), "--steps", "1" if toy else "3",
            *(["--chunk-size", str(s["chunk_size"])] if s["chunk_size"] else []),
            "--d", str(s["d"]), "--heads", str(s["heads"]), "--layers", str(layers),
            "--attention", "factored", *([] if toy else ["t5"]),
            "--sr-modes", default_sr_mode(out, s, L, layers),
            "--local-energies", "compact", "padded", "--no-driver-step", "--device", device,
            "--max-minutes", f"{max(left / 60 - 1.5, 0.1):.1f}",
            "--out", str(out / "localenergy_phases.csv"),
            "--markdown", str(out / "localenergy_phases.md"),
        ]  # fmt: skip
        print(" ".join(command[1:]), flush=True)
        code = run_child(command, left)
        if code is None:
            print("localenergy benchmark: stopped at its time (the cases done are written)",
                  flush=True)  # fmt: skip
        elif code:
            print(f"localenergy benchmark: FAILED (exit {code})", flush=True)
            failed = 1
    left = deadline - time.perf_counter()
    if left < least:
        print(f"localenergy trace: skipped, {left:.0f} s left", flush=True)
        return failed
    section("localenergy: profiler trace of both modes on the same samples")
    child = [sys.executable, __file__, "--section", "localenergy", "--device", device,
             "--out", str(out)]  # fmt: skip
    code = run_child(child, left)
    if code is None:
        print("localenergy trace: stopped at the section's deadline", flush=True)
    elif code:
        print(f"localenergy trace: FAILED (exit {code})", flush=True)
        failed = 1
    return failed


def trace_local_energies(out: Path, toy: bool) -> None:
    """Child of section localenergy: a ``jax.profiler`` trace of both local-energy modes.

    The T5 model and samples of the section's benchmark (one sweep of the chains from
    their start): after one compiling call of each mode, ``TRACE_CALLS`` calls of each,
    alternating, inside the trace (``trace_localenergy/`` in ``out``), each in a
    ``TraceAnnotation`` named after its mode. Writes and prints
    ``trace_localenergy/summary.txt``: the wall times, and the three largest ops (on a
    GPU: kernels) of each mode by their total time in the trace.
    """
    import jax

    from vitnqs import measure
    from vitnqs.bench.local_energy import local_energy_calls
    from vitnqs.config import RunConfig, RunOptions
    from vitnqs.loop import build_driver

    s = preset_settings("smoke" if toy else "paper")
    L, layers = (4, 1) if toy else (6, 4)
    config = RunConfig(TRACE_ATTENTION, L, 0.5, layers, d=s["d"], heads=s["heads"], b=s["b"],
                       samples=s["samples"])  # fmt: skip
    options = RunOptions(chunk_size=s["chunk_size"], progress=False)
    driver = build_driver(config, options)
    driver.state.sample()
    calls = local_energy_calls(driver.state, config.L, config.J2)
    first = {mode: measure.timed(call).wall_s for mode, call in calls.items()}  # compiles
    folder = out / "trace_localenergy"
    times: dict[str, list[float]] = {mode: [] for mode in calls}
    with jax.profiler.trace(str(folder)):
        for _ in range(TRACE_CALLS):
            for mode, call in calls.items():  # alternating, as measure_modes measures
                with jax.profiler.TraceAnnotation(f"local_energies_{mode}"):
                    times[mode].append(measure.timed(call).wall_s)
    lines = [
        f"local energies of {config.attention} L={L} J2={config.J2:g} d={config.d} "
        f"h={config.heads} {layers} layers, {config.samples} samples, chunk "
        f"{options.chunk_size}, on "
        f"{jax.devices()[0]}; trace in {folder}",
    ]
    for mode, seconds in times.items():
        lines.append(f"{mode}: first call (compiles) {first[mode]:.3g} s; traced calls "
                     + " ".join(f"{t:.3g}" for t in seconds) + " s")  # fmt: skip
    ratio = statistics.median(times["padded"]) / statistics.median(times["compact"])
    lines.append(f"padded / compact (medians of the traced calls): {ratio:.2f}")
    xplanes = sorted(folder.glob("plugins/profile/*/*.xplane.pb"), key=lambda f: f.stat().st_mtime)
    if xplanes:
        lines += trace_ops(xplanes[-1], [f"local_energies_{mode}" for mode in calls])
    else:
        lines.append(f"no .xplane.pb under {folder}")
    viewers = [name for name in ("xprof", "tensorboard_plugin_profile")
               if importlib.util.find_spec(name)]  # fmt: skip
    lines.append(
        f"read the trace: xprof --logdir {folder} (pip install xprof), or tensorboard "
        f"--logdir {folder} with tensorboard-plugin-profile, or a .trace.json.gz beside "
        "the .xplane.pb, where written, in https://ui.perfetto.dev; importable here: "
        + (", ".join(viewers) if viewers else "neither xprof nor tensorboard_plugin_profile")
    )
    # one archive beside the folder: the trace's own files lie four folders deep, and a
    # lent machine returns files at most two folders below its output folder
    archive = shutil.make_archive(str(out / "trace_localenergy"), "gztar", folder)
    lines.append(f"the whole trace folder also in {archive}")
    text = "\n".join(lines) + "\n"
    (folder / "summary.txt").write_text(text)
    print(text, end="", flush=True)


TOP_OPS = 3
"""Ops listed per local-energy mode in the trace's summary."""


def trace_ops(path: Path, annotations: list[str]) -> list[str]:
    """The largest ops of a ``jax.profiler`` trace within each annotation, as text lines.

    Read with ``jax.profiler.ProfileData`` (part of jaxlib: no further package). Ops are
    the events on the device planes' streams (GPU kernels and copies) or, without a
    device plane (CPU), the host events of XLA ops (those with an ``hlo_op`` stat), each
    counted by its own time without the ops nested in it; an op belongs to the
    annotation whose time span holds its start. Lines: per annotation, its total op time
    and the ``TOP_OPS`` largest ops by total time (calls, share of the op time, the HLO
    op where it differs from the name).
    """
    import jax

    profile = jax.profiler.ProfileData.from_file(str(path))
    planes = list(profile.planes)
    spans = {name: [] for name in annotations}
    ops = []  # [start_ns, name, own time ns, stats]

    def self_times(events) -> list[list]:
        events = sorted(events, key=lambda e: (e.start_ns, -e.duration_ns))
        result, stack = [], []
        for event in events:
            while stack and stack[-1][0] <= event.start_ns:
                stack.pop()
            entry = [event.start_ns, event.name, event.duration_ns, dict(event.stats)]
            if stack:
                stack[-1][1][2] -= event.duration_ns
            stack.append((event.end_ns, entry))
            result.append(entry)
        return result

    device = {p.name for p in planes if p.name.startswith("/device:") and "CPU" not in p.name}
    for plane in planes:
        lines = list(plane.lines)
        streams = any(line.name.startswith("Stream") for line in lines)
        for line in lines:
            events = list(line.events)
            for event in events:
                if event.name in spans:
                    spans[event.name].append((event.start_ns, event.end_ns))
            if plane.name in device:
                if streams and not line.name.startswith("Stream"):
                    continue  # a line derived from the streams' kernels (XLA Ops, Steps)
                ops += self_times(events)
            elif not device and plane.name.startswith("/host"):
                ops += self_times(e for e in events if any(k == "hlo_op" for k, _ in e.stats))
    where = "device kernels" if device else "host XLA ops"
    lines = [f"largest {where} in the trace ({path.name}), own time without nested ops:"]
    if not ops:
        return [*lines, "  no ops found"]
    groups = {name: ([o for o in ops if any(a <= o[0] <= b for a, b in windows)], len(windows))
              for name, windows in spans.items()}  # fmt: skip
    if not any(mine for mine, _ in groups.values()):  # clocks apart, say: all ops together
        lines.append(f"  no ops within the annotations {', '.join(spans)}")
        groups = {"all ops of the trace": (ops, sum(calls for _, calls in groups.values()))}
    for name, (mine, calls) in groups.items():
        if not mine:
            lines.append(f"  {name}: no ops within its annotation")
            continue
        total = sum(o[2] for o in mine)
        by_name: dict[str, list[float]] = {}
        hlo: dict[str, str] = {}
        for _, op, own, stats in mine:
            by_name.setdefault(op, []).append(own)
            hlo.setdefault(op, str(stats.get("hlo_op", op)))
        largest = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:TOP_OPS]
        lines.append(f"  {name}: {total / 1e6:.3g} ms of ops in {calls} calls")
        for op, owns in largest:
            note = "" if hlo[op] == op else f" (hlo_op {hlo[op]})"
            lines.append(f"    {sum(owns) / 1e6:9.3f} ms {100 * sum(owns) / total:5.1f}% "
                         f"{len(owns):6d}x  {op[:90]}{note}")  # fmt: skip
    return lines


def main() -> int:
    """Run the sections (each in its own process: a JAX process keeps its GPU memory)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--out", required=True, help="directory for the section files")
    parser.add_argument("--minutes", type=float, default=8.5, help="time budget of the check")
    parser.add_argument(
        "--sections",
        default="env,pilot6,pilot10,pilot1,localenergy,run30,phases",
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
    if args.section == "localenergy":
        from vitnqs import devices

        devices.configure(args.device)  # the toy: the CPU even where a GPU is visible
        t = time.perf_counter()
        trace_local_energies(out, toy)
        print(f"the trace took {time.perf_counter() - t:.0f} s", flush=True)
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
        elif name == "localenergy":
            t = section("local energies: compact and padded" + (" (toy size)" if toy else ""))
            guard = time.perf_counter() + 60 * LOCALENERGY_MINUTES * (0.5 if toy else 1)
            status = status or localenergy(out, toy, args.device, min(deadline, guard))
            print(f"section localenergy took {time.perf_counter() - t:.0f} s", flush=True)
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
            print(f"unknown section {name!r}; known: env, {', '.join(PILOT_SECTIONS)}, "
                  "localenergy, run30, phases", flush=True)  # fmt: skip
            return 2
    print(f"\ngpu_check done in {time.perf_counter() - start:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
