"""The pipeline on a real SLURM cluster through the shipped profile (`slurm/config.yaml`).

Start a single-node test cluster with `tests/slurm/cluster.sh start` (root, Debian); without
a cluster that answers `sinfo` and `sacct` every test here is skipped. Each test runs
`python -m snakemake --profile slurm` in a scratch copy of the repository (with the
profile in ./slurm, where Snakemake 9 looks for it), overriding only the scale (the smoke
preset) and the site values (partition `debug`, see `_site_args`).

- `test_keep_going_sweep_then_complete_pipeline`: a sweep with one deterministic failure
  (a run directory holding another run's checkpoint) completes everything that does not
  depend on it and names the failed job's log; without that sweep the pipeline completes;
  `sacct` shows every optimization as its own job with one GPU.
- `test_time_limit_warning_sigterm_and_resume`: a run given 1 minute is warned by SLURM
  (the profile's `--signal`), checkpoints and stops; the retry (more time) resumes it and
  gets SIGTERM mid-run (as in a preemption), checkpoints and stops; the next retry
  finishes it. The history is complete and equals an uninterrupted local run's.

Timings are printed (`pytest -s tests/slurm`).
"""

import csv
import dataclasses
import datetime
import json
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
from vitnqs.optimize import HISTORY_COLUMNS, RunConfig  # noqa: E402
from vitnqs.sweeps import run_space, runs_table  # noqa: E402

pytestmark = pytest.mark.slurm

PARTITION = os.environ.get("VITNQS_SLURM_PARTITION", "debug")
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
PROFILE = yaml.safe_load((ROOT / "slurm/config.yaml").read_text())
SMOKE = CONFIG["presets"]["smoke"]
# Steps of the interrupted run: 0.03 s each on this machine when idle, 0.16 s under load,
# so 50-250 s of stepping: it cannot finish before the warning, 29-59 s into a 1-minute job.
RESUME_STEPS = 3000
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
    space = run_space(runs_table(config))
    plain = {}
    for name in space.instance_patterns:
        settings = space.instance({"run": name})
        plain[name] = {k: v.item() if hasattr(v, "item") else v for k, v in settings.items()}
    return plain


def _site_args() -> list[str]:
    """The site values of the profile, overridden for the test cluster.

    `--default-resources` on the command line replaces the profile's whole list, so the
    profile's other defaults (runtime, mem_mb) are passed on unchanged. The first status
    check after a submission comes after 2 s instead of 40 s (only saves waiting).
    """
    resources = {**PROFILE["default-resources"], "slurm_partition": PARTITION}
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


def _profile_command(targets: list[str], *args: str, timeout: int) -> list[str]:
    """`snakemake --profile slurm`, under `timeout -s INT` (SIGINT cancels the jobs).

    Targets come first: options such as --config and --set-resources take several values.
    """
    return [
        "timeout", "-s", "INT", "-k", "60", str(timeout),
        sys.executable, "-m", "snakemake", *targets, "--profile", "slurm", *args, *_site_args(),
    ]  # fmt: skip


def _run_profile(workdir: Path, targets: list[str], *args: str, timeout: int):
    started = time.monotonic()
    done = subprocess.run(
        _profile_command(targets, *args, timeout=timeout),
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
        work, ["all"], "--configfile", "broken.yaml", "--config", "preset=smoke", timeout=900,
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
    for made_from_all_runs in ("results/tables/runs.csv", "figures/fig2.pdf", "figures/fig3.pdf"):
        assert not (work / made_from_all_runs).exists()
    for run in runs:  # attention maps: of the fig4 runs only
        if run != broken and "attention~factored" not in run:
            assert (work / f"results/analysis/{run}/attention_maps.csv").exists(), run
    jobs_1 = _submissions(output)

    # 2. without the broken sweep the pipeline completes, reusing the finished runs
    done, took_2 = _run_profile(work, ["all"], "--config", "preset=smoke", timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, _tail(output)
    assert "rule optimize:" not in output
    for name in ("fig2", "fig3", "fig4", "fig5"):
        assert (work / f"figures/{name}.pdf").read_bytes().startswith(b"%PDF")
    for name in ("table1.csv", "table1.md", "table1.tex", "history.csv", "shastry_sutherland.csv"):
        assert (work / "results/tables" / name).stat().st_size > 0
    with open(work / "results/tables/runs.csv") as f:
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
    assert all(  # step_times: the device the runs use
        "gres/gpu" not in rows[j]["AllocTRES"]
        for j, (rule, _) in jobs.items()
        if rule not in ("optimize", "step_times")
    )


# -- time limit, warning signal, resume ----------------------------------------------------


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


def _running_job(comment: str) -> str | None:
    done = subprocess.run(
        ["squeue", "-h", "-t", "R", "-o", "%i|%k"], capture_output=True, text=True, timeout=30
    )
    jobs = [line.split("|", 1)[0] for line in done.stdout.splitlines() if line.endswith(comment)]
    return jobs[0] if jobs else None


def test_time_limit_warning_sigterm_and_resume(cluster, copy_workflow, tmp_path):
    """Attempt 1 hits its 1-minute limit (warned: checkpoint, exit 75), attempt 2 gets
    SIGTERM mid-run (as in a preemption: checkpoint, exit 75), attempt 3 resumes and
    finishes; the history equals an uninterrupted local run's."""
    work = copy_workflow(tmp_path / "resume")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    smoke = config["presets"]["smoke"]
    smoke["sweeps"] = {
        **smoke["sweeps"],
        "resume": {
            "attention": ["t5"], "L": [4], "J2": [0.5], "layers": [1],
            "hyperparameters": {"steps": RESUME_STEPS},
        },
    }  # fmt: skip
    (work / "resume.yaml").write_text(yaml.safe_dump(config))
    ((run, settings),) = [
        (name, s) for name, s in _runs({**config, "preset": "smoke"}).items()
        if s["steps"] == RESUME_STEPS
    ]  # fmt: skip
    reference = work / "results/references/L4_J20.5.json"
    reference.parent.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "vitnqs", "reference", "--L", "4", "--J2", "0.5",
         "--out", reference],
        check=True, capture_output=True, env=_env(), timeout=300,
    )  # fmt: skip

    # The same run uninterrupted, locally, meanwhile (the machine has spare cores while
    # the SLURM jobs start and wait), with the BLAS thread counts Snakemake gives its jobs
    # (OMP_NUM_THREADS etc. = the rule's threads): they change results beyond the 15th digit.
    options = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    threads = str(smoke["threads"])
    blas = ("OMP", "GOTO", "OPENBLAS", "MKL", "NUMEXPR")
    local_env = {**_env(), **{f"{name}_NUM_THREADS": threads for name in blas}}
    local_env["VECLIB_MAXIMUM_THREADS"] = threads
    local = subprocess.Popen(
        [sys.executable, "-m", "vitnqs", "optimize", *options, "--reference", reference,
         "--quiet", "--out", tmp_path / "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=local_env,
    )  # fmt: skip

    # Attempt 1 gets 1 minute, the retries 10 (the profile's formula stays untouched: the
    # command line replaces it for this run). The warning signal is the profile's, sent
    # 1 s before the limit instead of 300 s: slurmctld acts on time limits every 30 s, so
    # the signal comes 1-31 s before the limit (29-59 s into the job, once the run has
    # started) and the kill 0-30 s after the limit, 30 s after the signal.
    extra = PROFILE["set-resources"]["optimize"]["slurm_extra"]
    signal_name = re.search(r"--signal=(?:B:)?(\w+)@", extra).group(1)
    test_extra = re.sub(r"@\d+", "@1", extra)
    log_path = work / f"results/logs/optimize/{run}.log"
    watcher = _LogWatcher(log_path)
    watcher.start()
    command = _profile_command(
        [f"results/runs/{run}/summary.json"], "--configfile", "resume.yaml",
        "--config", "preset=smoke", "--set-resources",
        "optimize:runtime=1 if attempt == 1 else 10", f"optimize:slurm_extra={test_extra}",
        timeout=900,
    )  # fmt: skip
    started = time.monotonic()
    with open(tmp_path / "snakemake.out", "w+") as out:
        snakemake = subprocess.Popen(
            command, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True, env=_env()
        )
        # Attempt 2, once it has resumed and made a step: SIGTERM to every process of its
        # job step, as a preemption sends first (then it ends the job GraceTime later).
        # Not `scancel` (the job ends "CANCELLED by <uid>", which the SLURM plugin 2.8.0
        # takes for a running job: Snakemake waits forever), nor `scancel --full` (srun,
        # signalled in the batch step, then kills the job step at once).
        cancelled = first_job = None
        while snakemake.poll() is None and not cancelled:
            time.sleep(0.5)
            job = _running_job(f"rule_optimize_wildcards_{run}")
            first_job = first_job or job
            if job is None or job == first_job or not log_path.exists():
                continue  # attempt 2 is the second job that runs
            text = log_path.read_text(errors="replace")
            if "resuming" in text and re.search(
                r"^\[vitnqs\] step ", text.split("resuming", 1)[1], re.M
            ):
                subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
                cancelled = job
        snakemake.wait()
        out.seek(0)
        output = out.read()
    took = time.monotonic() - started
    watcher.stop.set()
    watcher.join()
    local_err = local.communicate(timeout=900)[1]
    assert local.returncode == 0, local_err[-3000:]
    print(f"\n[slurm] run cut by its time limit, by SIGTERM, resumed twice: {took:.0f} s")
    for i, text in enumerate(watcher.attempts, 1):
        lines = [x for x in text.splitlines() if x.startswith("[vitnqs]") or "Error" in x]
        shown = lines if len(lines) <= 6 else [*lines[:3], "...", *lines[-2:]]
        print(f"[slurm] attempt {i} log:\n  " + "\n  ".join(shown))

    jobs = {j: w for j, (rule, w) in _submissions(output).items() if rule == "optimize"}
    rows = sorted(_sacct_final(list(jobs)), key=lambda r: int(r["JobID"]))
    _print_sacct("[slurm] sacct rows of the interrupted run:", list(jobs))
    assert snakemake.returncode == 0, _tail(output)
    assert cancelled, "attempt 2 was never seen running after resuming"
    assert len(rows) == 3 and len(watcher.attempts) == 3, (rows, _tail(output))
    assert [r["Timelimit"] for r in rows] == ["00:01:00", "00:10:00", "00:10:00"], rows
    assert all("gres/gpu=1" in r["AllocTRES"] for r in rows), rows
    assert not _in_job_restarts(work, jobs)
    first, second, third = rows
    log_1, log_2, log_3 = watcher.attempts

    # attempt 1: warned before its time limit, checkpointed and stopped itself (exit 75:
    # FAILED). On a loaded machine the warning can come before the run has installed its
    # handler (SIGURG is then ignored): SLURM's SIGTERM at the limit does the same job
    # within KillWait, and the job shows TIMEOUT.
    warned = f"SIG{signal_name} received" in log_1
    assert warned or "SIGTERM received" in log_1, log_1[-3000:]
    assert "checkpoint written" in log_1, log_1[-3000:]
    assert first["State"] == ("FAILED" if warned else "TIMEOUT"), (first, log_1[-3000:])
    # attempt 2: resumed, stopped by SIGTERM (to every process of the step), checkpointed
    resumed = [re.search(r"resuming \S+ at step (\d+)/", text) for text in (log_2, log_3)]
    assert all(resumed), (log_2[-2000:], log_3[-2000:])
    k2, k3 = (int(m.group(1)) for m in resumed)
    assert 0 < k2 < k3 < RESUME_STEPS, (k2, k3)
    assert "SIGTERM received" in log_2 and "checkpoint written" in log_2, log_2[-3000:]
    assert second["State"] == "FAILED" and second["JobID"] == cancelled, second
    assert third["State"] == "COMPLETED", third

    # the history: every step exactly once, equal (but wall times) to the uninterrupted run
    history = _history_rows(work / f"results/runs/{run}/history.csv")
    uninterrupted = _history_rows(tmp_path / "local/history.csv")
    assert [int(r["step"]) for r in history] == list(range(RESUME_STEPS))
    for row in (*history, *uninterrupted):
        del row["time_s"]
    assert history == uninterrupted  # repr() of each float: bit-equal values
    for name in ("params.msgpack", "init_params.msgpack"):
        assert (work / f"results/runs/{run}/{name}").read_bytes() == (
            tmp_path / f"local/{name}"
        ).read_bytes(), name
    summary = json.loads((work / f"results/runs/{run}/summary.json").read_text())
    expected = json.loads((tmp_path / "local/summary.json").read_text())
    assert summary["energy"] == expected["energy"]
    assert summary["slurm_job_id"] == third["JobID"]
    print(
        f"[slurm] attempt 1 {first['State']} after {first['Elapsed']}; attempt 2 resumed at "
        f"step {k2}, {second['State']} after {second['Elapsed']}; attempt 3 resumed at step "
        f"{k3}/{RESUME_STEPS}, {third['State']} after {third['Elapsed']}; "
        f"device {summary['device_platform']}"
    )
