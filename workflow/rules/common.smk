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
from vitnqs.pilot import PilotRows
from vitnqs.plan import job_memory_mb, plan_run, plan_symmetrized, step_seconds
from vitnqs.plan import runtime_minutes as plan_runtime
from vitnqs.sweeps import (
    in_sweep,
    preset,
    run_options,
    run_space,
    runs_table,
    timing_plan,
)

import hashlib
from dataclasses import replace

validate(config, "../schemas/config.schema.yaml")

SCALE = config["preset"]
PRESET = preset(config)
RUNS = runs_table(config)  # raises ConfigError naming the field of a bad value
OPTIONS = run_options(config)  # device, GPUs per run, chunk size, GPU memory
PARAMSPACE = run_space(RUNS)
RUNS["run"] = list(PARAMSPACE.instance_patterns)
RUN_CONFIGS = [RunConfig.from_row(row) for _, row in RUNS.iterrows()]
RUN_DIR = "results/runs/{run}"


wildcard_constraints:
    run="[^/]+",  # a run directory's name; its fine-tuned stage lies below it


# Each preset's own tables, figures, logs and benchmarks: the paper's at the top
# (figures/, results/tables/), any other below its name (figures/quick/,
# results/quick/tables/), so that no preset overwrites another's. Run directories (and
# their logs and analyses) are named by their settings and shared by every preset.
PRESET_DIR = "" if SCALE == "paper" else f"{SCALE}/"
TABLES = f"results/{PRESET_DIR}tables"
FIGURES = f"figures/{PRESET_DIR}".rstrip("/")
LOGS = f"results/{PRESET_DIR}logs"
BENCHMARKS = f"results/{PRESET_DIR}benchmarks"
# Tables of what to compute, written by the sweeps_table rule: every run (sweeps, with
# the sweeps of each in alphabetical order: the order of the config's keys changes
# nothing), the runs of each sweep (sweeps_<name>, naming that sweep only: a figure waits
# only for the runs it draws, whatever other sweeps share them) and the runs to time
# (step_time_plan)
PLANS = {
    "sweeps": RUNS.assign(
        sweeps=[";".join(sorted(names.split(";"))) for names in RUNS["sweeps"]]
    ).to_csv(index=False),
    **{
        f"sweeps_{name}": in_sweep(RUNS, name).assign(sweeps=name).to_csv(index=False)
        for name in PRESET["sweeps"]
    },
    "step_time_plan": timing_plan(RUNS).to_csv(index=False),
}


def plan_version(plan):
    """The versioned copy of a plan: its name carries a digest of its content, so that
    an edited sweep makes a new file (an input change), while execution settings, which
    are no rerun trigger (profiles/default: rerun-triggers), change nothing."""
    digest = hashlib.sha256(PLANS[plan].encode()).hexdigest()[:12]
    return f"{TABLES}/plans/{plan}-{digest}.csv"


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


def sweep_of(wildcards):
    """The sweep of a per-sweep table (`part` wildcard `_<sweep>`), None for all runs."""
    return wildcards.part[1:] or None


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
    refuse_cluster_run_without_preset()
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
# The pilot's measurements (snakemake pilot), where they apply to this setup: they size
# the optimization jobs' time and memory (vitnqs.plan), else the formulas do.
PILOT_TABLE = f"{TABLES}/pilot.csv"
PILOT = PilotRows.load(PILOT_TABLE, OPTIONS.n_devices, GPU_TYPE)
if len(PILOT) or PILOT.skipped:
    print(
        f"{PILOT_TABLE}: {len(PILOT)} row(s) size the jobs' requests; {PILOT.skipped} of "
        "another setup (GPU model, gpus_per_run or results version) are not used",
        file=sys.stderr,
    )

# The site profile (slurm/config.yaml) loads slurm/site.yaml as a config file: the preset
# it runs (a command-line --config adds to it, where it would replace the profile's own
# `config:`) and the default-resources keys the site needs (`site_resources`). A
# command-line --default-resources replaces the profile's whole list: refused here rather
# than run without a partition or time cap. (Inside a cluster job: checked at submission.)
SITE_RESOURCES = config.get("site_resources", [])
MISSING_SITE_RESOURCES = [
    name for name in SITE_RESOURCES if site_resource(name) is None
]
if MISSING_SITE_RESOURCES and not workflow.remote_exec:
    raise WorkflowError(
        "default-resources: the site profile requires "
        f"{', '.join(MISSING_SITE_RESOURCES)} (site_resources in its config file), missing "
        "here: a command-line --default-resources replaces the profile's whole list, so "
        "repeat the profile's keys with yours (for example --default-resources "
        "slurm_account=myproj slurm_partition=cpu gpu_partition=gpu max_runtime=2880, "
        "with your site's values)"
    )


def refuse_cluster_run_without_preset():
    """Refuse to submit jobs to a cluster with a preset nobody chose.

    config.yaml's default preset (quick) is for local runs; under a cluster executor the
    preset must come from a config file or --config (the site profile's slurm/site.yaml
    names one; a command-line --configfile replaces it). Checked when the jobs are
    planned: the executor is not known while the Snakefile is read.
    """
    plugin = workflow.executor_plugin
    if plugin is None or plugin.common_settings.local_exec or workflow.remote_exec:
        return
    if "preset" not in workflow.config_settings.overwrite_config:
        raise WorkflowError(
            f"preset: no preset was chosen for this cluster run, so it would run "
            f"config.yaml's default, {SCALE!r}; name one (--config preset=paper, or "
            f"--configfile slurm/site.yaml beside your own --configfile)"
        )


# Time of an optimization job: the run's projection (vitnqs.plan.runtime_minutes: the
# pilot's measurement where results/<preset>/tables/pilot.csv has this run on this setup,
# else the paper's A100 timings scaled), `attempt` times (in case this GPU is slower),
# never more than the site's cap: a longer run goes on over several jobs, each stopped
# by SLURM's warning with a checkpoint, each resumed by the next.
def run_config(wildcards):
    """The RunConfig of the run named by the wildcard."""
    return RunConfig.from_row(run_settings(wildcards))


def runtime_minutes(wildcards, attempt):
    config = run_config(wildcards)
    return plan_runtime(
        config, OPTIONS.n_devices, attempt, MAX_RUNTIME, PILOT.get(config)
    )


# Jobs the longest run needs under the cap, plus 2 for failures and preemptions. Retries
# belong to the Snakemake that submits jobs: inside a cluster job (remote execution)
# they would rerun the rule in an allocation that is about to end.
def optimize_retries():
    if workflow.remote_exec:
        return 0
    return optimize_retries_of_the_sweep()


def optimize_retries_of_the_sweep():
    """The optimize rule's retries as the submitting Snakemake sets them."""
    longest = max(
        plan_runtime(c, OPTIONS.n_devices, 1, None, PILOT.get(c)) for c in RUN_CONFIGS
    )
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
def symmetrized_plan(wildcards):
    """The symmetrized evaluation's samples, chunk and memory (vitnqs.plan)."""
    return plan_symmetrized(run_config(wildcards), OPTIONS)


def pilot_minutes(wildcards, attempt):
    """Time of a pilot job: start-up and compilation, its steps at the run's rate."""
    config = run_config(wildcards)
    seconds = step_seconds(config, OPTIONS.n_devices, PILOT.get(config)) * (
        PILOT_STEPS + 1
    )
    return capped_minutes(attempt * (1.5 * seconds / 60 + 10))


def slurm_warning(wildcards, attempt):
    seconds = min(300, max(30, 60 * runtime_minutes(wildcards, attempt) // 4))
    return f"--signal=URG@{seconds}"


# Memory: the run plan's estimate (vitnqs.plan: the SR mode the run will choose for the
# declared gpu_memory_gb, or the hungrier one where none is declared) plus 20 %. On the
# host too: a conservative request for GPU runs.
def mem_mb(wildcards, attempt):
    config = run_config(wildcards)
    plan = plan_run(config, OPTIONS, measured_bytes=PILOT.device_memory(config))
    return job_memory_mb(plan.memory.total, plan.n_devices, PILOT.get(config))


# The site's GPU partition and model, where its profile names them (else the default
# partition, and any GPU).
GPU_SITE_RESOURCES = {
    key: value
    for key, value in (("slurm_partition", GPU_PARTITION), ("gpu_model", GPU_TYPE))
    if value is not None
}
# GPUs of an optimization job: a preset on the CPU asks for none (its jobs go to the
# default partition) unless the config opts in (gpus_for_cpu_presets, e.g. to test a
# cluster's GPU scheduling with CPU-sized runs).
RUN_GPUS = (
    OPTIONS.n_devices
    if OPTIONS.device != "cpu" or config.get("gpus_for_cpu_presets", False)
    else 0
)


def run_placement(gpus):
    """Resources that put a job where the runs run: the GPU partition with `gpus` GPUs
    where the runs get GPUs; nothing (the default partition, no GPU) where they do not.
    """
    return {**GPU_SITE_RESOURCES, "gpu": gpus} if RUN_GPUS else {}


def capped_minutes(minutes):
    """A time request within the site's cap (max_runtime)."""
    return int(minutes if MAX_RUNTIME is None else min(minutes, MAX_RUNTIME))


# The jobs that time steps (step_times, benchmark_phases) run alone on one device, where
# the runs run. Host memory: on a GPU the host holds little (the paper-size phase
# benchmark on an H200 peaked at 4.2 GB); on the CPU the largest case's estimate.
TIMING_GPU_HOST_MB = 8000


def timing_mem_mb(configs, chunk, sr_modes=("auto",)):
    """Host memory (MB) of a timing job over the run configurations it times."""
    if OPTIONS.device != "cpu":
        return TIMING_GPU_HOST_MB
    largest = max(
        plan_run(
            c, replace(OPTIONS, chunk_size=chunk, sr_mode=mode, n_devices=1)
        ).memory.total
        for c in configs
        for mode in sr_modes
    )
    return max(2000, int(1.2 * largest / 1e6))


def timing_configs():
    """The RunConfig of each run that step_times times."""
    return [RunConfig.from_row(row) for _, row in timing_plan(RUNS).iterrows()]


def step_times_runtime(wildcards, attempt):
    """Minutes of step_times: each timed run's steps (TIMED_STEPS and 2 to compile and
    warm up) at the runs' estimated rate on one device, 2 minutes of start-up each."""
    configs = timing_configs()
    seconds = sum(step_seconds(c, 1, PILOT.get(c)) * (TIMED_STEPS + 2) for c in configs)
    return capped_minutes(attempt * (1.5 * seconds / 60 + 2 * len(configs) + 10))


def benchmark_section():
    """The preset's `benchmark:` section (results/benchmarks/step_phases.csv)."""
    if "benchmark" not in PRESET:
        raise WorkflowError(
            f"presets.{SCALE}.benchmark: the {SCALE} preset has no benchmark section, so "
            f"{BENCHMARKS}/step_phases.csv cannot be made; add one (see the quick preset)"
        )
    return PRESET["benchmark"]


def benchmark_configs():
    """The largest case of the phase benchmark at each L (T5: the most parameters)."""
    bench = benchmark_section()
    return [
        RunConfig(
            attention="t5",
            L=L,
            J2=0.5,
            samples=bench["samples"],
            **{"layers": 4, **bench.get("model", {})},
        )
        for L in bench["L"]
    ]


def benchmark_args(wildcards=None):
    """Command-line options of `vitnqs benchmark` from the preset's `benchmark` section."""
    bench = benchmark_section()
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
            f"{FIGURES}/{name}.pdf", caption=f"../report/{name}.rst", category="Figures"
        ),
        "png": f"{FIGURES}/{name}.png",
    }


# Outputs of the presets other than this run's (see PRESET_DIR): a target among them is
# refused with the preset it belongs to, instead of "no rule to produce" (rule
# other_preset).
OTHER_PRESETS = [name for name in config["presets"] if name not in (SCALE, "paper")]
OTHER_PRESET_OUTPUTS = "|".join(
    [
        *(
            [r"figures/[^/]+\.(pdf|png)", r"results/(tables|benchmarks)/[^/]+"]
            if SCALE != "paper"
            else []
        ),
        *(
            rf"figures/{name}/[^/]+|results/{name}/(tables|benchmarks)/[^/]+"
            for name in OTHER_PRESETS
        ),
    ]
)


def other_preset_output(wildcards):
    """Input function of the other_preset rule, which refuses its target naming its preset."""
    path = wildcards.path
    parts = path.split("/")
    owner = parts[1] if parts[1] in OTHER_PRESETS else "paper"
    if owner != "paper":  # the paper's path of the same file
        del parts[1]
    relative = "/".join(parts)
    ours = relative.replace("figures/", f"{FIGURES}/", 1).replace(
        "results/", f"results/{PRESET_DIR}", 1
    )
    raise WorkflowError(
        f"{path} is an output of the {owner} preset, and this run's preset is {SCALE}: "
        f"add --config preset={owner} (the {SCALE} preset writes {ours})"
    )
