# Helpers shared by the rules: config validation, the run table, resource estimates.
import math
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.iocontainers import Wildcards
from snakemake.utils import validate

# The package in this repository is the code of the workflow, installed or not: the
# Snakefile imports it from src/ and every job finds it there too (also in conda envs).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# (quadruple braces: the prefix is formatted again with each command)
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

import vitnqs.plots
from vitnqs.devices import XLA_ONE_THREAD
from vitnqs.config import RUN_COLUMNS, RunConfig
from vitnqs.plan import plan_run
from vitnqs.sweeps import (
    in_sweep,
    preset,
    run_options,
    run_space,
    runs_table,
    timing_plan,
)

validate(config, "../schemas/config.schema.yaml")

SCALE = config["preset"]
PRESET = preset(config)
RUNS = runs_table(config)  # raises ConfigError naming the field of a bad value
OPTIONS = run_options(config)  # device, GPUs per run, chunk size, GPU memory
PARAMSPACE = run_space(RUNS)
RUNS["run"] = list(PARAMSPACE.instance_patterns)
RUN_DIR = "results/runs/{run}"
# Tables of what to compute, written by the sweeps_table rule (rewritten only on change)
PLANS = {
    "sweeps": RUNS.to_csv(index=False),
    "step_time_plan": timing_plan(RUNS).to_csv(index=False),
}
# A preset with one thread per run gets one: XLA's CPU thread pool takes every core by
# default, so runs side by side would oversubscribe them.
XLA_THREAD_FLAGS = XLA_ONE_THREAD if PRESET["threads"] == 1 else ""
TIMED_STEPS = 10  # per run of the fig3 sweep, after its compilation step


def every_core():
    """Threads of a job that must run alone: all local cores (``--cores``).

    Under a cluster executor every job has an allocation of its own, sized from the
    preset's threads when it is submitted (no ``--cores`` there); inside the job
    (``SLURM_JOB_ID``) the same number, or its step would ask for more than it holds.
    """
    if "SLURM_JOB_ID" in os.environ:
        return PRESET["threads"]
    try:
        return workflow.cores
    except WorkflowError:
        return PRESET["threads"]


# the runs' chunk size and device, for the jobs that time their steps
DEVICE_ARG = f"--device {OPTIONS.device}"
CHUNK_ARG = "" if OPTIONS.chunk_size is None else f"--chunk-size {OPTIONS.chunk_size}"

# Conda environments (used with --software-deployment-method conda): the CUDA one for
# the jobs that evaluate the network (it falls back to the CPU), the CPU one elsewhere.
CPU_ENV = "../../envs/vitnqs-cpu.yaml"
GPU_ENV = "../../envs/vitnqs-cuda.yaml"

# Plotting code is an input of the figure rules: editing it reruns plots, never runs.
# (findings.py: the bounds drawn in Figure 2)
FINDINGS_CODE = str(Path(vitnqs.plots.__file__).parent / "findings.py")
PLOT_CODE = [
    vitnqs.plots.__file__,
    FINDINGS_CODE,
    str(Path(vitnqs.plots.__file__).parent / "style/paper.mplstyle"),
]


def run_ids(sweep=None):
    """Run directory names of one sweep (all runs if None)."""
    return list((RUNS if sweep is None else in_sweep(RUNS, sweep))["run"])


def run_files(name, sweep=None):
    """One file of every run of a sweep."""
    return expand(f"{RUN_DIR}/{name}", run=run_ids(sweep))


def run_settings(wildcards):
    """Settings of the run named by the wildcard (a row of RUNS)."""
    return PARAMSPACE.instance(wildcards)


def optimize_args(wildcards):
    """Command-line options of `vitnqs optimize` for one run."""
    settings = run_settings(wildcards)
    args = [f"--{key.replace('_', '-')} {settings[key]}" for key in RUN_COLUMNS]
    args += [DEVICE_ARG, f"--n-devices {OPTIONS.n_devices}", CHUNK_ARG]
    if OPTIONS.gpu_memory_gb is not None:
        args.append(f"--gpu-memory-gb {OPTIONS.gpu_memory_gb}")
    return " ".join(args)


def reference_file(wildcards):
    s = run_settings(wildcards)
    return f"results/references/L{s['L']}_J2{float(s['J2'])}.json"


def site_resource(name, default=None):
    """A value the site profile sets in `default-resources` for the workflow to read.

    `max_runtime` (minutes), `gpu_partition` and `gpu_type` describe the site's GPU
    partition; they shape the optimize jobs' requests only (names that the SLURM plugin
    ignores: a `gpu_model` there would give every job a GPU), and `max_runtime` sizes
    the retries, so they are needed before any job exists (Snakemake has no public API
    for this; the settings object is the one its command line fills).
    """
    resources = workflow.resource_settings.default_resources
    resource = None if resources is None else resources.get(name)
    if resource is None:
        return default
    # evaluated like Snakemake evaluates it for a job, outside any job
    context = dict(input=[], attempt=1, threads=1, rulename="", async_run=None)
    return resource.evaluate(Wildcards(), **context).value


MAX_RUNTIME = site_resource("max_runtime")  # None: no cap (local runs)
if MAX_RUNTIME is not None and not (isinstance(MAX_RUNTIME, int) and MAX_RUNTIME >= 2):
    raise WorkflowError(
        f"default-resources: max_runtime must be a number of minutes >= 2 "
        f"(the GPU partition's MaxTime), got {MAX_RUNTIME!r}"
    )
GPU_PARTITION = site_resource("gpu_partition")
GPU_TYPE = site_resource("gpu_type")


# Time estimates for the cluster, from the paper's timings on one A100
# (Table 1: T5, L=10, 4 layers, M=6000: 28 h / 5000 steps = 20 s per step), assuming
# time per step ~ 8.3e-6 s x samples x sites x layers / GPUs; 1.5x margin plus 10 minutes.
def runtime_estimate(s):
    """Minutes one uninterrupted run needs."""
    seconds = 8.3e-6 * s["samples"] * s["L"] ** 2 * s["layers"] * s["steps"]
    return 1.5 * seconds / OPTIONS.n_devices / 60 + 10


# Each attempt gets `attempt` times the estimate (in case this GPU is slower), but never
# more than the site's cap: a longer run goes on over several jobs, each stopped by
# SLURM's warning with a checkpoint, each resumed by the next.
def runtime_minutes(wildcards, attempt):
    minutes = attempt * runtime_estimate(run_settings(wildcards))
    return int(minutes if MAX_RUNTIME is None else min(minutes, MAX_RUNTIME))


# Jobs the longest run needs under the cap, plus 2 for failures and preemptions. Retries
# belong to the Snakemake that submits jobs: inside a cluster job (remote execution)
# they would rerun the rule in an allocation that is about to end.
def optimize_retries():
    if workflow.remote_exec:
        return 0
    longest = max(runtime_estimate(row) for _, row in RUNS.iterrows())
    jobs = 1 if MAX_RUNTIME is None else math.ceil(longest / MAX_RUNTIME)
    return jobs - 1 + 2


# SLURM's warning before the time limit (the run checkpoints and exits 75): a quarter
# of the job's time, at most 5 minutes, so that it fits a short cap too. slurmctld acts
# on time limits every 30 s: the warning comes N to N + 30 s before the limit and the
# job ends at the first check after it, so the run has N to N + 30 s to finish; N is at
# least those 30 s.
# SIGURG, not SIGUSR1, and no "B:": SLURM signals every process of the job step, the
# Snakemake process that runs the rule and its shell too; they ignore SIGURG (by
# default) but die from SIGUSR1, which kills the run before it checkpoints. With "B:"
# only the batch shell gets it, dies, and the job ends at once.
def slurm_warning(wildcards, attempt):
    seconds = min(300, max(30, 60 * runtime_minutes(wildcards, attempt) // 4))
    return f"--signal=URG@{seconds}"


# Memory: the run plan's estimate (vitnqs.plan: the SR mode the run will choose for the
# declared gpu_memory_gb, or the hungrier one where none is declared) plus 20 %. On the
# host too: a conservative request for GPU runs.
def mem_mb(wildcards, attempt):
    plan = plan_run(RunConfig.from_row(run_settings(wildcards)), OPTIONS)
    return int(1.2 * plan.n_devices * plan.memory.total / 1e6)


# The site's GPU partition and model, where its profile names them (else the default
# partition, and any GPU).
GPU_SITE_RESOURCES = {
    key: value
    for key, value in (("slurm_partition", GPU_PARTITION), ("gpu_model", GPU_TYPE))
    if value is not None
}


def benchmark_args(wildcards=None):
    """Command-line options of `vitnqs benchmark` from the preset's `benchmark` section."""
    bench = PRESET["benchmark"]
    args = [
        "--L " + " ".join(map(str, bench["L"])),
        f"--samples {bench['samples']} --steps {bench['steps']}",
        f"--max-minutes {bench['max_minutes']} {DEVICE_ARG}",
    ]
    if bench["chunk_size"] is not None:
        args.append(f"--chunk-size {bench['chunk_size']}")
    if "sr_modes" in bench:
        args.append("--sr-modes " + " ".join(bench["sr_modes"]))
    args += [f"--{key} {value}" for key, value in bench.get("model", {}).items()]
    return " ".join(args)


# Code of the section 4.3 construction and of Figure 5, so editing it redraws Figure 5.
SHASTRY_SUTHERLAND_CODE = [
    str(Path(vitnqs.plots.__file__).parent / name)
    for name in ("fig5.py", "shastry_sutherland.py")
]


def figure_output(name):
    """The PDF (in the report, with its caption) and PNG of a figure."""
    return {
        "pdf": report(
            f"figures/{name}.pdf", caption=f"../report/{name}.rst", category="Figures"
        ),
        "png": f"figures/{name}.png",
    }
