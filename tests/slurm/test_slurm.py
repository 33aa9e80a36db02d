"""The pipeline on a real SLURM cluster through the shipped profiles.

Start a single-node test cluster with `tests/slurm/cluster.sh start` (root, Debian); without
a cluster that answers `sinfo` and `sacct` every test here is skipped. Each test runs
`python -m snakemake --profile slurm` in a scratch copy of the repository (with the site
profile in ./slurm, where Snakemake 9 looks for it, and the workflow profile in
./profiles/default, which it loads by itself), overriding only the scale (the smoke
preset, on the CPU, whose jobs ask for GPUs all the same: `gpus_for_cpu_presets`, so that
GPU requests, time caps and preemption of the GPU partition are tested) and the site
values (partitions, time cap: see `_site_args`). Its outputs are the smoke preset's:
figures/smoke/, results/smoke/tables/.

- `test_keep_going_sweep_then_complete_pipeline`: a sweep with one deterministic failure
  (a run directory holding another run's checkpoint) completes everything that does not
  depend on it and names the failed job's log; without that sweep the pipeline completes;
  `sacct` shows every optimization as its own job with one GPU.
- `test_device_guard_fails_every_attempt_fast`: a run that requires 2 GPUs, on a node whose
  JAX has none, is one job with 2 GPUs per attempt and fails each within a minute;
  Snakemake's report shows why. (Sharding over 2 devices: tests/test_devices.py.)
- `test_time_cap_spreads_a_run_over_jobs`: a run whose estimate exceeds a small cap (2-4
  minutes, from how fast a run starts here) goes on over at least 3 jobs, each stopped by
  SLURM's warning with a checkpoint, each resumed further by the next; the history
  equals an uninterrupted local run's.
- `test_preempted_run_finishes_unattended`: a higher-priority job takes the run's GPU; the
  run checkpoints on SLURM's SIGTERM and Snakemake completes it without a person.

Timings are printed (`pytest -s tests/slurm`).
"""

import csv
import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from vitnqs import checkpoint  # noqa: E402
from vitnqs.config import RunConfig  # noqa: E402
from vitnqs.devices import XLA_ONE_THREAD  # noqa: E402
from vitnqs.optimize import HISTORY_COLUMNS  # noqa: E402
from vitnqs.sweeps import run_names, runs_table  # noqa: E402

pytestmark = pytest.mark.slurm

PARTITION = os.environ.get("VITNQS_SLURM_PARTITION", "debug")
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
# the smoke preset on the test cluster, its CPU-sized jobs asking for GPUs all the same
SMOKE_CONFIG = ["--config", "preset=smoke", "gpus_for_cpu_presets=True"]
SMOKE_TABLES = "results/smoke/tables"
SMOKE_FIGURES = "figures/smoke"
PROFILE = yaml.safe_load((ROOT / "slurm/config.yaml").read_text())
SMOKE = CONFIG["presets"]["smoke"]
# Steps of the preempted run: 0.03 s each on this machine when idle, 0.16 s under load,
# so 90-480 s of stepping: it is still running when the preemption comes.
PREEMPTED_STEPS = 3000
SACCT_FIELDS = "JobID,JobName,State,ExitCode,Elapsed,Timelimit,AllocTRES,Comment"


def _cluster_problem() -> str | None:
    """Why no SLURM cluster can run these tests, or None if one answers."""
    for tool in ("sinfo", "sacct", "sbatch"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (start a test cluster: tests/slurm/cluster.sh start)"
    for command in (["sinfo", "-h", "-p", PARTITION, "-o", "%a %D"], ["sacct", "-n", "-X"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"`{' '.join(command)}` failed: {error}"
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()[:300]}"
        if command[0] == "sinfo" and not done.stdout.strip().startswith("up"):
            return f"no partition {PARTITION!r} that is up (set VITNQS_SLURM_PARTITION)"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        pytest.skip(f"no SLURM cluster: {problem}")


# -- helpers -------------------------------------------------------------------------------


def _runs(config: dict) -> dict[str, dict]:
    """Run directory name -> settings, for the selected preset, as common.smk makes them."""
    table = runs_table(config)
    plain = {}
    settings_only = table.drop(columns="sweeps")  # which sweeps use a run: not a setting
    for name, (_, settings) in zip(run_names(table), settings_only.iterrows(), strict=True):
        plain[name] = {k: v.item() if hasattr(v, "item") else v for k, v in settings.items()}
    return plain


def _site_args(**site) -> list[str]:
    """The site values of the profile, overridden for the test cluster.

    `--default-resources` on the command line replaces the profile's whole list, so its
    other keys (max_runtime) are passed on unchanged. Both partitions are `debug` (never
    preempted) unless `site` names others. The first status check after a submission
    comes after 2 s instead of 40 s (only saves waiting).
    """
    resources = {
        **PROFILE["default-resources"],
        "slurm_partition": PARTITION,
        "gpu_partition": PARTITION,
        **site,
    }
    resources.pop("slurm_account", None)
    values = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in resources.items()]
    return [
        "--default-resources",
        *values,
        "--slurm-init-seconds-before-status-checks",
        "2",
    ]


def _env() -> dict[str, str]:
    # Jobs inherit this environment (sbatch --export=ALL): `python` must be this one
    # (the rules put the copy's src/ first on PYTHONPATH; local runs use this one's).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}


def _profile_command(
    targets: list[str], *args: str, timeout: int, site: dict | None = None
) -> list[str]:
    """`snakemake --profile slurm`, under `timeout -s INT` (SIGINT cancels the jobs).

    Targets come first: options such as --config and --set-resources take several values.
    """
    return [
        "timeout", "-s", "INT", "-k", "60", str(timeout),
        sys.executable, "-m", "snakemake", *targets, "--profile", "slurm", *args,
        *_site_args(**(site or {})),
    ]  # fmt: skip


def _run_profile(
    workdir: Path, targets: list[str], *args: str, timeout: int, site: dict | None = None
):
    started = time.monotonic()
    done = subprocess.run(
        _profile_command(targets, *args, timeout=timeout, site=site),
        cwd=workdir,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout + 120,
    )
    return done, time.monotonic() - started


def _sacct_start() -> str:
    return (datetime.datetime.now() - datetime.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")


def _submissions(output: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (rule, wildcards), from Snakemake's submission messages."""
    found = re.findall(
        r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/(?:(\S*)/)?\1\.log\)", output
    )
    return {jobid: (rule, wildcards) for jobid, rule, wildcards in found}


def _sacct_text(jobids, *, steps: bool) -> str:
    """`sacct -P` of the jobs: the jobs only, or also their steps (.batch, .0, ...)."""
    command = ["sacct", "-P", "-o", SACCT_FIELDS, "-j", ",".join(jobids)]
    done = subprocess.run(
        command if steps else [*command, "-X"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sacct(jobids) -> list[dict[str, str]]:
    lines = _sacct_text(jobids, steps=False).strip().splitlines()
    return [dict(zip(lines[0].split("|"), line.split("|"), strict=True)) for line in lines[1:]]


FINAL_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY"}


def _sacct_final(jobids, timeout=60) -> list[dict[str, str]]:
    """sacct rows of finished jobs; job records reach the database asynchronously."""
    end = time.monotonic() + timeout
    while True:
        rows = _sacct(jobids)
        finished = [r for r in rows if r["State"].split()[0] in FINAL_STATES]
        if len(finished) == len(set(jobids)) or time.monotonic() > end:
            return rows
        time.sleep(1)


def _print_sacct(title: str, jobids) -> None:
    print(f"\n{title}\n{_sacct_text(jobids, steps=True)}", end="")


def _in_job_restarts(work: Path, jobs: dict[str, tuple[str, str] | str]) -> list[str]:
    """Jobs that restarted their rule inside the SLURM job (retries belong to the main
    Snakemake process, which resubmits with more time; sacct shows steps .1, .2...)."""
    logs = [p for j in jobs for p in (work / ".snakemake/slurm_logs").glob(f"rule_*/**/{j}.log")]
    return [str(p) for p in logs if "Trying to restart job" in p.read_text(errors="replace")]


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def _foreign_checkpoint(run_dir: Path, settings: dict) -> None:
    """A checkpoint of another configuration: `vitnqs optimize` refuses it (exit code 2)."""
    run_dir.mkdir(parents=True)
    other = RunConfig(**{**settings, "seed": settings["seed"] + 1000})
    checkpoint.save_checkpoint(
        run_dir,
        {
            "config": dataclasses.asdict(other),
            "step": 0,
            "driver": b"",
            "history": {c: [] for c in HISTORY_COLUMNS},
            "elapsed": 0.0,
        },
    )


# -- keep-going, the smoke sweep, sacct ----------------------------------------------------


def test_keep_going_sweep_then_complete_pipeline(cluster, copy_workflow, tmp_path):
    work = copy_workflow(tmp_path / "sweep")
    good = list(_runs({**CONFIG, "preset": "smoke"}))
    # one more sweep whose only run directory holds another run's checkpoint
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["gpus_for_cpu_presets"] = True
    config["presets"]["smoke"]["sweeps"]["broken"] = {
        "attention": ["t5"], "L": [4], "J2": [0.5], "layers": [1], "seeds": [1],
    }  # fmt: skip
    (work / "broken.yaml").write_text(yaml.safe_dump(config))
    runs = _runs({**config, "preset": "smoke"})
    (broken,) = set(runs) - set(good)
    _foreign_checkpoint(work / "results/runs" / broken, runs[broken])

    # 1. keep-going: everything that does not need the broken run is made; the broken
    # run is resubmitted by the optimize rule's retries (2) and fails each time
    done, took_1 = _run_profile(
        work, ["all"], "--configfile", "broken.yaml", *SMOKE_CONFIG, timeout=900,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, _tail(output)
    for run in good:
        assert (work / "results/runs" / run / "summary.json").exists(), _tail(output)
    assert not (work / "results/runs" / broken / "summary.json").exists()
    log = f"results/logs/optimize/{broken}.log"
    assert "belongs to a run with other settings" in (work / log).read_text()
    error_block = output[output.index("Error in rule optimize") :]
    assert log in error_block and broken in error_block, _tail(output)
    # runs.csv waits for every run; the figures and tables only for the sweeps they draw
    assert not (work / SMOKE_TABLES / "runs.csv").exists()
    for name in ("fig2", "fig3", "fig4", "fig5"):
        assert (work / f"{SMOKE_FIGURES}/{name}.pdf").read_bytes().startswith(b"%PDF"), name
    for run in runs:  # attention maps: of the fig4 runs only
        if run != broken and "attention~factored" not in run:
            assert (work / f"results/analysis/{run}/attention_maps.csv").exists(), run
    jobs_1 = _submissions(output)

    # 2. without the broken sweep the pipeline completes, reusing the finished runs
    done, took_2 = _run_profile(work, ["all"], *SMOKE_CONFIG, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, _tail(output)
    assert "rule optimize:" not in output
    for name in ("fig2", "fig3", "fig4", "fig5"):
        assert (work / f"{SMOKE_FIGURES}/{name}.pdf").read_bytes().startswith(b"%PDF")
    for name in ("table1.csv", "table1.md", "table1.tex", "history.csv", "shastry_sutherland.csv"):
        assert (work / SMOKE_TABLES / name).stat().st_size > 0
    with open(work / SMOKE_TABLES / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == len(good)
    jobs = {**jobs_1, **_submissions(output)}
    print(f"\n[slurm] keep-going sweep (smoke + 1 failing run): {took_1:.0f} s")
    print(f"[slurm] rerun without the failing sweep (tables, figures): {took_2:.0f} s")

    # 3. sacct: each optimization was its own job, with one GPU, under its rule's comment
    rows = {r["JobID"]: r for r in _sacct_final(list(jobs))}
    _print_sacct("[slurm] sacct rows of the sweep:", list(jobs))
    optimize = {j: w for j, (rule, w) in jobs.items() if rule == "optimize"}
    for jobid, run in optimize.items():
        row = rows[jobid]
        assert "gres/gpu=1" in row["AllocTRES"], row
        assert row["Comment"] in ("", f"rule_optimize_wildcards_{run}"), row
    states = {run: [rows[j]["State"] for j, w in optimize.items() if w == run] for run in good}
    assert all(s == ["COMPLETED"] for s in states.values()), states
    broken_states = [rows[j]["State"] for j, w in optimize.items() if w == broken]
    assert broken_states and set(broken_states) == {"FAILED"}, broken_states
    assert len(broken_states) == 3, broken_states  # 1 + 2 retries, none inside the job
    assert not _in_job_restarts(work, optimize)
    assert all(  # step_times, symmetrize: where the runs run (with a GPU: opted in)
        "gres/gpu" not in rows[j]["AllocTRES"]
        for j, (rule, _) in jobs.items()
        if rule not in ("optimize", "step_times", "symmetrize")
    )
    timing = [rows[j] for j, (rule, _) in jobs.items() if rule == "step_times"]
    assert all("gres/gpu=1" in r["AllocTRES"] for r in timing), timing


def test_pilot_on_the_cluster(cluster, copy_workflow, tmp_path):
    """snakemake pilot: one job per run where the run runs; pilot.csv sizes the sweep."""
    from vitnqs.pilot import KEY_COLUMNS

    work = copy_workflow(tmp_path / "pilot")
    done, took = _run_profile(work, ["pilot"], *SMOKE_CONFIG, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, _tail(output)
    with open(work / SMOKE_TABLES / "pilot.csv") as f:
        rows = list(csv.DictReader(f))
    runs = _runs({**CONFIG, "preset": "smoke"})
    assert len(rows) == len(runs)
    columns = {"sr_mode", "compile_s", "median_step_s", "peak_device_bytes", "peak_host_bytes",
               "memory_estimate_bytes", "device_memory_bytes", "finite", "energy_drop_sigma",
               "acceptance", "projected_hours", "request_minutes", "request_mem_mb", "verdict",
               *KEY_COLUMNS}  # fmt: skip
    assert columns <= set(rows[0]), set(rows[0]) ^ columns
    assert all(row["finite"] == "True" and row["verdict"] for row in rows), rows
    assert not (work / "results/runs").exists()  # the pilot never touches a run directory
    jobs = _submissions(output)
    pilots = [j for j, (rule, _) in jobs.items() if rule == "pilot_run"]
    assert len(pilots) == len(runs), jobs
    sacct = {r["JobID"]: r for r in _sacct_final(pilots)}
    assert all(r["State"] == "COMPLETED" and "gres/gpu=1" in r["AllocTRES"] for r in sacct.values())
    _print_sacct("[slurm] sacct rows of the pilot:", pilots)
    print(f"\n[slurm] smoke pilot: {took:.0f} s")
    # the sweep's plan now reads the measurements
    planned = subprocess.run(
        _profile_command(["all"], "-n", *SMOKE_CONFIG, timeout=300),
        cwd=work, capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert f"{len(runs)} row(s) size the jobs' requests" in planned.stderr, _tail(planned.stderr)


# -- time limit, warning signal, resume ----------------------------------------------------


# -- helpers of the single-run tests --------------------------------------------------------


class _LogWatcher(threading.Thread):
    """Keeps every version of a log that each attempt of a job rewrites from scratch."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.attempts, self.stop = path, [], threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            try:
                text = self.path.read_text(errors="replace")
            except OSError:
                continue
            if not self.attempts or len(text) < len(self.attempts[-1]):
                self.attempts.append(text)  # a new attempt truncated the log
            else:
                self.attempts[-1] = text


def _history_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _one_run_config(work: Path, name: str, top: dict | None = None, **smoke) -> tuple[str, dict]:
    """A config file `<name>.yaml` whose smoke preset has one more sweep: one t5 run, with
    `smoke` overriding its hyperparameters (steps, ...) or preset keys (device); `top`
    sets top-level keys (gpus_per_run). Returns the run's directory name and settings."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    preset = config["presets"]["smoke"]
    preset.update({k: v for k, v in smoke.items() if k in preset})
    hyper = {k: v for k, v in smoke.items() if k not in preset}
    preset["sweeps"][name] = {
        "attention": ["t5"], "L": [4], "J2": [0.5], "layers": [1], "seeds": [7],
        "hyperparameters": hyper,
    }  # fmt: skip
    config.update({"gpus_for_cpu_presets": True, **(top or {})})
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    ((run, settings),) = [
        (r, s) for r, s in _runs({**config, "preset": "smoke"}).items() if s["seed"] == 7
    ]
    return run, settings


def _write_reference(work: Path) -> Path:
    reference = work / "results/references/L4_J20.5.json"
    reference.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "vitnqs", "reference", "--L", "4", "--J2", "0.5",
         "--out", reference],
        check=True, capture_output=True, env=_env(), timeout=300,
    )  # fmt: skip
    return reference


def _local_run(settings: dict, reference: Path, out: Path, threads: int) -> subprocess.Popen:
    """The same run uninterrupted, locally, with the BLAS thread counts Snakemake gives its
    jobs (OMP_NUM_THREADS etc. = the rule's threads): they change results beyond the 15th
    digit."""
    options = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    blas = ("OMP", "GOTO", "OPENBLAS", "MKL", "NUMEXPR")
    env = {**_env(), **{f"{name}_NUM_THREADS": str(threads) for name in blas}}
    env["VECLIB_MAXIMUM_THREADS"] = str(threads)
    if threads == 1:  # and XLA's own thread pool, as the optimize rule does
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}"
    return subprocess.Popen(
        [sys.executable, "-m", "vitnqs", "optimize", *options, "--device", "cpu",
         "--reference", reference, "--quiet", "--out", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _optimize_jobs(output: str) -> dict[str, str]:
    return {j: w for j, (rule, w) in _submissions(output).items() if rule == "optimize"}


def _print_attempts(attempts: list[str]) -> None:
    for i, text in enumerate(attempts, 1):
        lines = [x for x in text.splitlines() if x.startswith("[vitnqs]") or "rror" in x]
        shown = lines if len(lines) <= 6 else [*lines[:3], "...", *lines[-2:]]
        print(f"[slurm] attempt {i} log:\n  " + "\n  ".join(shown))


def _elapsed_s(value: str) -> int:
    h, m, s = (int(x) for x in value.split("-")[-1].split(":"))
    return 3600 * h + 60 * m + s


# -- the device guard ----------------------------------------------------------------------


def test_device_guard_fails_every_attempt_fast(cluster, copy_workflow, tmp_path):
    work = copy_workflow(tmp_path / "guard")
    run, _ = _one_run_config(work, "guard", top={"gpus_per_run": 2}, device="gpu", steps=5)
    started = time.monotonic()
    done, took = _run_profile(
        work, [f"results/runs/{run}/summary.json"], "--configfile", "guard.yaml",
        *SMOKE_CONFIG, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, _tail(output)
    # Snakemake's own report shows the reason (show-failed-logs), not only the job's log
    assert "--device gpu: JAX has no GPU backend: no CUDA-enabled jaxlib installed" in output
    assert "requirements-cuda.lock" in output
    jobs = _optimize_jobs(output)
    rows = _sacct_final(list(jobs))
    _print_sacct("[slurm] sacct rows of the guarded run:", list(jobs))
    assert len(rows) == 3, rows  # 1 + 2 retries (no time cap needs more)
    # gpus_per_run: 2 is one job holding both GPUs
    assert all(r["State"] == "FAILED" and "gres/gpu=2" in r["AllocTRES"] for r in rows), rows
    assert all(_elapsed_s(r["Elapsed"]) < 60 for r in rows), rows
    assert not (work / f"results/runs/{run}").exists()  # stopped before writing anything
    print(
        f"\n[slurm] guarded run: {len(rows)} attempts of "
        f"{', '.join(r['Elapsed'] for r in rows)}, Snakemake done after {took:.0f} s"
        f" ({time.monotonic() - started:.0f} s)"
    )


# -- a time cap: one run over several jobs ---------------------------------------------------


def _probe(work: Path, reference: Path, settings: dict) -> tuple[float, float]:
    """Seconds per step, and seconds of start-up (imports, compilation), of this run on
    this machine now: a short local run."""
    out = work / "probe"
    started = time.monotonic()
    probe = _local_run({**settings, "steps": 60}, reference, out, threads=1)
    _, err = probe.communicate(timeout=600)
    assert probe.returncode == 0, err[-3000:]
    step = json.loads((out / "summary.json").read_text())["median_step_time_s"]
    return step, time.monotonic() - started - 60 * step


def test_time_cap_spreads_a_run_over_jobs(cluster, copy_workflow, tmp_path):
    """A run longer than the site's cap (max_runtime) completes over >= 3 jobs, each ended
    by SLURM's warning with its own checkpoint, each resumed further by the next; the
    history equals an uninterrupted local run's."""
    work = copy_workflow(tmp_path / "cap")
    reference = _write_reference(work)
    # thousands of smoke steps: the smoke preset's lr 0.1 and shift 1e-2 let a 64-sample
    # T5 run explode (E/N 1.35 > 0.75 at step 72 of one schedule), which the divergence
    # guard stops; lr 0.05 and shift 0.1 ran 3000 and 7000 steps cleanly (seed 7)
    stable = {"lr": 0.05, "diag_shift": 0.1}
    _, probe = _one_run_config(work, "capped", **stable)
    # The cap: 2 minutes where a job starts fast enough. SLURM warns a quarter of it
    # before the limit, 0-30 s early: at 0.75 cap - 30 s at the earliest, which must come
    # after the job's start-up (two Snakemake processes, then the run's own: 2.5 x this).
    step, startup = _probe(tmp_path, reference, probe)
    cap = max(2, math.ceil((2.5 * startup + 30) / 0.75 / 60))
    # Steps for 2.2 x the longest stepping one job allows (warned at most 0.75 cap in,
    # after the run's own start-up), so that no 2 jobs can finish it.
    steps = math.ceil(2.2 * (0.75 * 60 * cap - startup) / step)
    run, settings = _one_run_config(work, "capped", steps=steps, **stable)
    local = _local_run(settings, reference, tmp_path / "local", threads=SMOKE["threads"])

    log_path = work / f"results/logs/optimize/{run}.log"
    watcher = _LogWatcher(log_path)
    watcher.start()
    done, took = _run_profile(
        work, [f"results/runs/{run}/summary.json"], "--configfile", "capped.yaml",
        *SMOKE_CONFIG, timeout=2400, site={"max_runtime": cap},
    )  # fmt: skip
    output = done.stdout + done.stderr
    watcher.stop.set()
    watcher.join()
    local_err = local.communicate(timeout=2400)[1]
    assert local.returncode == 0, local_err[-3000:]
    jobs = _optimize_jobs(output)
    rows = sorted(_sacct_final(list(jobs)), key=lambda r: int(r["JobID"]))
    print(
        f"\n[slurm] {steps} steps of {step:.3f} s (start-up {startup:.0f} s) under a "
        f"{cap}-minute cap: {took:.0f} s"
    )
    _print_sacct("[slurm] sacct rows of the capped run:", list(jobs))
    _print_attempts(watcher.attempts)
    assert done.returncode == 0, _tail(output)
    assert len(rows) >= 3 and len(watcher.attempts) == len(rows), (rows, _tail(output))
    assert all(r["Timelimit"] == f"00:{cap:02d}:00" for r in rows), rows
    assert all("gres/gpu=1" in r["AllocTRES"] for r in rows), rows
    assert not _in_job_restarts(work, jobs)

    # every job but the last: warned, checkpointed, exited by itself (FAILED: not TIMEOUT,
    # not CANCELLED or killed); every job but the first resumed later than the one before
    *stopped, last = rows
    assert [r["State"] for r in stopped] == ["FAILED"] * len(stopped), rows
    assert last["State"] == "COMPLETED", rows
    for text in watcher.attempts[:-1]:
        warned = r"SIGURG received.*received SIGURG at step \d+: checkpoint written"
        assert re.search(warned, text, re.S), text[-3000:]
    resumed = [re.search(r"resuming \S+ at step (\d+)/", text) for text in watcher.attempts[1:]]
    assert all(resumed), [text[-2000:] for text in watcher.attempts[1:]]
    starts = [int(m.group(1)) for m in resumed]
    assert 0 < starts[0] and starts == sorted(set(starts)) and starts[-1] < steps, starts

    # the history: every step exactly once, equal (but wall times) to the uninterrupted run
    history = _history_rows(work / f"results/runs/{run}/history.csv")
    uninterrupted = _history_rows(tmp_path / "local/history.csv")
    assert [int(r["step"]) for r in history] == list(range(steps))
    for row in (*history, *uninterrupted):
        del row["time_s"]
    assert history == uninterrupted  # repr() of each float: bit-equal values
    for name in ("params.msgpack", "init_params.msgpack"):
        assert (work / f"results/runs/{run}/{name}").read_bytes() == (
            tmp_path / f"local/{name}"
        ).read_bytes(), name
    summary = json.loads((work / f"results/runs/{run}/summary.json").read_text())
    assert summary["energy"] == json.loads((tmp_path / "local/summary.json").read_text())["energy"]
    assert summary["slurm_job_id"] == last["JobID"]
    print(
        f"[slurm] {len(rows)} jobs of {', '.join(r['Elapsed'] for r in rows)}; resumed at "
        f"steps {starts} of {steps}"
    )


# -- preemption ----------------------------------------------------------------------------


def test_preempted_run_finishes_unattended(cluster, copy_workflow, tmp_path):
    """A job of the `urgent` partition that needs both GPUs preempts the run (partition
    `preemptible`, PreemptMode=REQUEUE): the run checkpoints on SIGTERM, and Snakemake,
    left alone, ends with the run complete."""
    work = copy_workflow(tmp_path / "preempt")
    run, _ = _one_run_config(work, "preempted", steps=PREEMPTED_STEPS)
    log_path = work / f"results/logs/optimize/{run}.log"
    history = work / f"results/runs/{run}/history.csv"
    watcher = _LogWatcher(log_path)
    watcher.start()
    command = _profile_command(
        [f"results/runs/{run}/summary.json"], "--configfile", "preempted.yaml",
        *SMOKE_CONFIG, timeout=1200, site={"gpu_partition": "preemptible"},
    )  # fmt: skip
    started = time.monotonic()
    urgent = preempted_at = None
    with open(tmp_path / "snakemake.out", "w+") as out:
        snakemake = subprocess.Popen(
            command, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True, env=_env()
        )
        # once the run has made a step: a job that needs both of the node's GPUs
        while snakemake.poll() is None and urgent is None:
            time.sleep(0.5)
            if history.exists() and len(history.read_text().splitlines()) >= 3:
                urgent = subprocess.run(
                    ["sbatch", "--parsable", "-p", "urgent", "--gpus=2", "-J", "urgent",
                     "-o", "/dev/null", "--wrap", "sleep 1"],
                    check=True, capture_output=True, text=True, timeout=30,
                ).stdout.strip()  # fmt: skip
                submitted = time.monotonic()
        while snakemake.poll() is None and preempted_at is None:
            time.sleep(0.5)
            if "SIGTERM received" in (watcher.attempts or [""])[0]:
                preempted_at = time.monotonic() - submitted
        snakemake.wait()
        out.seek(0)
        output = out.read()
    took = time.monotonic() - started
    watcher.stop.set()
    watcher.join()
    jobs = _optimize_jobs(output)
    print(f"\n[slurm] preempted run: {took:.0f} s; SIGTERM {preempted_at} s after the urgent job")
    _print_sacct("[slurm] sacct rows of the preempted run:", [*jobs, *filter(None, [urgent])])
    subprocess.run(["sacct", "--duplicates", "-P", "-X", "-o", SACCT_FIELDS, "-j",
                    ",".join(jobs)], timeout=60)  # fmt: skip
    _print_attempts(watcher.attempts)
    assert snakemake.returncode == 0, _tail(output)
    assert urgent and preempted_at is not None, _tail(output)
    first = watcher.attempts[0]
    stopped = r"SIGTERM received.*received SIGTERM at step \d+: checkpoint written"
    assert re.search(stopped, first, re.S), first[-3000:]
    resumed = re.search(r"resuming \S+ at step (\d+)/", watcher.attempts[-1])
    assert resumed and int(resumed.group(1)) > 0, watcher.attempts[-1][-3000:]
    rows = {r["JobID"]: r for r in _sacct_final([*jobs, urgent])}
    assert rows[urgent]["State"] == "COMPLETED", rows
    assert rows[max(jobs, key=int)]["State"] == "COMPLETED", rows
    assert [int(r["step"]) for r in _history_rows(history)] == list(range(PREEMPTED_STEPS))
    print(f"[slurm] resumed at step {resumed.group(1)}/{PREEMPTED_STEPS}")
