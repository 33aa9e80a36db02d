"""Issue 24: how often optimizations fail, before and after the stability options.

    python studies/stability/failure_rate.py --root results/stability \
        --case collapse4 quick6 --seeds 0-7 --stop-at 16:05
    python studies/stability/failure_rate.py --root results/stability \
        --case collapse4 quick6 --table-only

Runs the missing runs of each case (paired seeds: for each seed and attention, the
``before`` arm, then the ``after`` arm), one process at a time under ``nice -n 10`` with
one thread, into ``ROOT/<case>/<arm>/<attention>_seed<seed>/``. Finished runs are skipped
and an interrupted one resumes from its checkpoint, so the command can be relaunched.
``--stop-at HH:MM`` (UTC) launches no run after that time. Then it prints, per case, a
markdown table per attention and arm (on the seeds finished in both arms):

* **jumps**: runs whose final history holds a jump (:func:`vitnqs.stability.find_jump`);
  a jump that the in-run remedy undid is no longer in the history, so the runs where the
  remedy acted are counted apart;
* **stuck**: a final relative error above 2x the median of the same attention and arm;
* **collapses**: the acceptance of the last window below 0.1
  (:func:`vitnqs.stability.collapsed`) or a collapse remedy recorded by the run; **at the
  end**: the first alone;
* **low acceptance**: runs where some window of the history had a mean acceptance below
  0.1 (:func:`vitnqs.stability.collapsed` on each prefix), whether or not it recovered;
* **rel. error > 0.1**: runs far from converged (:data:`FAR`), whatever the median;
* the median final relative error (the summary's evaluation with fresh samples) and the
  median wall seconds per run (the whole process: start, compilation, steps, evaluation).

Results: ``docs/stability.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vitnqs import stability
from vitnqs.rundir import HISTORY, REMEDIES, read_checked, read_records

MODEL = {"J2": 0.5, "layers": 1, "d": 16, "heads": 4, "b": 2, "samples": 128}
CASES = {
    "collapse4": {**MODEL, "L": 4, "steps": 150, "lr": 0.1, "diag_shift": 0.01},
    "quick6": {**MODEL, "L": 6, "steps": 300, "lr": 0.1, "diag_shift": 0.01},
}
"""The cases of issue 24 that fit on a CPU: the 4 x 4 collapse case (the laptop model at
150 steps) and the quick model at L = 6."""
ATTENTIONS = ("t5", "decoupled", "factored")
ARMS = {
    "before": (),
    "after": ("--max-update", "0.1", "--jump-remedies", "2", "--collapse-remedies", "1"),
}
"""The options of each arm: all off, then the bounded step and both remedies."""
ENV = {"OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
FAR = 0.1
"""A final relative error above this counts apart (``> 0.1``): where most runs of a setting
fail, the median is a failed run's error and ``stuck`` sees nothing; converged runs of
both cases end at 0.03-0.05."""
TIMES = "wall_times.jsonl"
"""Per case: one JSON line per launched run (arm, run, wall seconds, exit status)."""


def run_name(attention: str, seed: int) -> str:
    """The directory of one run inside ``ROOT/<case>/<arm>/``."""
    return f"{attention}_seed{seed}"


def parse_seeds(text: str) -> list[int]:
    """``0-7`` or ``0,3,5`` (or both, ``0-3,8``) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def finished(directory: Path) -> dict | None:
    """The summary of a finished run whose files check, else ``None``."""
    try:
        return read_checked(directory)
    except Exception:  # noqa: BLE001 (no summary, or damaged: the run is not finished)
        return None


def reference_file(root: Path, case: str) -> Path:
    """The reference-energy file of a case (``vitnqs reference``, written once)."""
    c = CASES[case]
    path = root / "refs" / f"L{c['L']}_J2{c['J2']}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "vitnqs", "reference", "--L", str(c["L"])]
        subprocess.run([*command, "--J2", str(c["J2"]), "--out", str(path)], check=True)
    return path


def command(case: str, arm: str, attention: str, seed: int, out: Path, reference: Path):
    """The ``vitnqs optimize`` command line of one run."""
    c = CASES[case]
    args = ["--attention", attention, "--seed", str(seed)]
    for name in ("L", "J2", "layers", "d", "heads", "b", "samples", "steps", "lr"):
        args += [f"--{name}", str(c[name])]
    args += ["--diag-shift", str(c["diag_shift"]), *ARMS[arm]]
    args += ["--device", "cpu", "--quiet", "--reference", str(reference), "--out", str(out)]
    return ["nice", "-n", "10", sys.executable, "-m", "vitnqs", "optimize", *args]


def past(stop_at: str | None) -> bool:
    """Whether the UTC time of day is at or past ``HH:MM``."""
    if stop_at is None:
        return False
    now = datetime.datetime.now(datetime.UTC)
    hour, minute = map(int, stop_at.split(":"))
    return (now.hour, now.minute) >= (hour, minute)


def run_missing(root: Path, case: str, seeds: list[int], stop_at: str | None) -> bool:
    """Run the unfinished runs of a case; ``False`` when stopped by ``stop_at``."""
    reference = reference_file(root, case)
    env = {**os.environ, **ENV}
    for seed in seeds:
        for attention in ATTENTIONS:
            for arm in ARMS:
                out = root / case / arm / run_name(attention, seed)
                if finished(out) is not None:
                    continue
                if past(stop_at):
                    print(f"[failure_rate] {stop_at} UTC passed: no more runs", flush=True)
                    return False
                logs = root / case / arm / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                print(f"[failure_rate] {case} {arm} {out.name}", end=" ", flush=True)
                start = time.monotonic()
                with open(logs / f"{out.name}.log", "a") as log:
                    rc = subprocess.run(
                        command(case, arm, attention, seed, out, reference),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ).returncode
                wall = time.monotonic() - start
                print(f"rc {rc}, {wall:.0f} s", flush=True)
                record = {"arm": arm, "run": out.name, "wall_s": round(wall, 1), "rc": rc}
                with open(root / case / TIMES, "a") as times:
                    times.write(json.dumps(record) + "\n")
    return True


def read_history(directory: Path) -> dict[str, list[float]]:
    """The columns energy, energy_error, acceptance and update_scale of a run's history."""
    with open(directory / HISTORY, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ("energy", "energy_error", "acceptance", "update_scale")
    return {k: [float(r[k]) for r in rows] for k in columns}


def wall_times(root: Path, case: str) -> dict[tuple[str, str], float]:
    """The wall seconds of the last successful launch of each run (arm, run)."""
    path = root / case / TIMES
    times: dict[tuple[str, str], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["rc"] == 0:
                times[r["arm"], r["run"]] = r["wall_s"]
    return times


def examine(directory: Path, summary: dict) -> dict:
    """What a finished run shows: its final error, jump, collapse and remedies."""
    history = read_history(directory)
    remedies = read_records(directory / REMEDIES, ("event", "step"))
    jump = stability.find_jump(history["energy"], history["energy_error"])
    return {
        "rel_error": summary["rel_error"],
        "jump": jump,
        "collapse": stability.collapsed(history["acceptance"])
        or any(r["event"] == "collapse" for r in remedies),
        "collapsed_at_end": stability.collapsed(history["acceptance"]),
        "low_acceptance": any(
            stability.collapsed(history["acceptance"][:k])
            for k in range(stability.WINDOW, len(history["acceptance"]) + 1)
        ),
        "remedies": remedies,
        "scaled_steps": sum(x < 1 for x in history["update_scale"]) / len(history["energy"]),
        "min_scale": min(history["update_scale"]),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(root: Path, case: str) -> str:
    """The markdown table of a case, its paired comparison and the remedies that acted."""
    times = wall_times(root, case)
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for attention in ATTENTIONS:
        for arm in ARMS:
            found = runs.setdefault((attention, arm), {})
            for directory in sorted((root / case / arm).glob(f"{attention}_seed*")):
                summary = finished(directory)
                if summary is not None:
                    seed = int(directory.name.rsplit("seed", 1)[1])
                    found[seed] = {**examine(directory, summary), "dir": directory}
                    found[seed]["wall_s"] = times.get((arm, directory.name))
    c = CASES[case]
    lines = [
        f"### {case}: {c['L']} x {c['L']}, J2 = {c['J2']}, {c['layers']} layer, d {c['d']}, "
        f"heads {c['heads']}, b {c['b']}, M {c['samples']}, {c['steps']} steps, "
        f"lr {c['lr']}, shift {c['diag_shift']}",
        "",
        "| attention | arm | runs (seeds) | jumps | jump remedied | stuck | collapses "
        "| at the end | collapse remedied | low acceptance | rel. error > 0.1 "
        "| median rel. error | median s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    paired_lines, remedy_lines = [], []
    for attention in ATTENTIONS:
        seeds = sorted(set.intersection(*(set(runs[attention, arm]) for arm in ARMS)))
        for arm in ARMS:
            rs = [runs[attention, arm][s] for s in seeds]
            errors = [r["rel_error"] for r in rs]
            median = _median(errors)
            n_jump_remedy = sum(any(x["event"] == "jump" for x in r["remedies"]) for r in rs)
            n_coll_remedy = sum(any(x["event"] == "collapse" for x in r["remedies"]) for r in rs)
            walls = [r["wall_s"] for r in rs if r["wall_s"] is not None]
            seed_range = f"{seeds[0]}-{seeds[-1]}" if seeds else "-"
            lines.append(
                f"| {attention} | {arm} | {len(rs)} ({seed_range}) "
                f"| {sum(r['jump'] is not None for r in rs)} | {n_jump_remedy} "
                f"| {sum(e > 2 * median for e in errors)} | {sum(r['collapse'] for r in rs)} "
                f"| {sum(r['collapsed_at_end'] for r in rs)} "
                f"| {n_coll_remedy} | {sum(r['low_acceptance'] for r in rs)} "
                f"| {sum(e > FAR for e in errors)} | {_fmt(median, '.3g')} "
                f"| {_fmt(_median(walls), '.0f')} |"
            )
            for s, r in zip(seeds, rs, strict=True):
                for record in r["remedies"]:
                    remedy_lines.append(
                        f"- {attention} seed {s} ({arm}): {stability.describe(record)}; "
                        f"final rel. error {r['rel_error']:.3g}"
                    )
        scaled = [runs[attention, "after"][s] for s in seeds]
        if scaled:
            paired_lines.append(
                f"- {attention}, after: the update was scaled down on "
                f"{_median([r['scaled_steps'] for r in scaled]):.0%} of the steps (median "
                f"over runs), down to x{min(r['min_scale'] for r in scaled):.2g}"
            )
        unpaired = {arm: sorted(set(runs[attention, arm]) - set(seeds)) for arm in ARMS}
        if seeds:
            before = [runs[attention, "before"][s]["rel_error"] for s in seeds]
            after = [runs[attention, "after"][s]["rel_error"] for s in seeds]
            better = sum(a < b for a, b in zip(after, before, strict=True))
            ratio = _median([a / b for a, b in zip(after, before, strict=True)])
            paired_lines.append(
                f"- {attention}: after lower on {better} of {len(seeds)} seeds, median ratio "
                f"after/before {ratio:.3g}; per seed (before -> after): "
                + ", ".join(
                    f"{s}: {b:.3g} -> {a:.3g}" for s, b, a in zip(seeds, before, after, strict=True)
                )
            )
        for arm, extra in unpaired.items():
            if extra:
                paired_lines.append(f"- {attention}: unpaired {arm} seeds left out: {extra}")
    lines += ["", "Paired seeds:", "", *paired_lines, "", "Remedies that acted:", ""]
    lines += remedy_lines or ["- none"]
    jumps = [
        f"- {attention} seed {s} ({arm}): step {r['jump'].step} "
        f"(+{r['jump'].sigmas:.1f} sigma over step {r['jump'].best_step}), "
        f"final rel. error {r['rel_error']:.3g}"
        for (attention, arm), found in runs.items()
        for s, r in sorted(found.items())
        if r["jump"] is not None
    ]
    lines += ["", "Jumps in the final histories:", "", *(jumps or ["- none"])]
    return "\n".join(lines)


def main() -> None:
    """Run what is missing (unless ``--table-only``), then print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("results/stability"))
    p.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-7"))
    p.add_argument("--stop-at", help="launch no run at or after this UTC time (HH:MM)")
    p.add_argument("--table-only", action="store_true", help="run nothing")
    args = p.parse_args()
    if not args.table_only:
        for case in args.case:
            if not run_missing(args.root, case, args.seeds, args.stop_at):
                break
    for case in args.case:
        print(table(args.root, case), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
