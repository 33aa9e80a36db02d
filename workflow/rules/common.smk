# Helpers shared by the rules: config validation, the run table, resource estimates.
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
from vitnqs.config import RUN_COLUMNS, RunConfig, named_settings
from vitnqs.pilot import PilotRows
from vitnqs.tables import in_sweep
from vitnqs import files, plan, rundir
from vitnqs.sweeps import (
    preset,
    run_options,
    run_names,
    runs_table,
    timing_plan,
)

import hashlib

validate(config, "../schemas/config.schema.yaml")

SCALE = config["preset"]
PRESET = preset(config)
RUNS = runs_table(config)  # raises ConfigError naming the field of a bad value
OPTIONS = run_options(config)  # device, GPUs per run, chunk size, GPU memory
RUNS["run"] = run_names(RUNS)
RUN_ROWS = {row["run"]: row for _, row in RUNS.iterrows()}
RUN_CONFIGS = [RunConfig.from_row(row) for _, row in RUNS.iterrows()]
RUN_DIR = "results/runs/{run}"
FINETUNED_DIR = f"{RUN_DIR}/{rundir.FINETUNED}"


def set_aside_damaged_run(wildcards):
    """Input function of `optimize` that adds no input. A finished run whose files
    fail its summary's check (a cut history, a changed parameter file, an unreadable
    summary) is redone: its job is forced, like `--forcerun` for this run alone (a
    missing output alone would not rerun it while the tables built on it exist).
    Snakemake deletes a job's outputs before it runs, so the failing file and the
    summary that vouched for it are first set aside (renamed, never deleted); the job
    restores the run's files from its last checkpoint, and no table is built from the
    damaged file (vitnqs.rundir). A dry run names the job and renames nothing; inside a
    cluster job the submitting Snakemake has decided."""
    directory = Path(RUN_DIR.format(run=wildcards.run))
    summary = directory / rundir.SUMMARY
    if workflow.remote_exec or not summary.exists():
        return []
    try:
        rundir.read_checked(directory)
    except rundir.DamagedRun as error:
        damaged, reason = error.path, str(error)
    except (ValueError, KeyError) as error:  # an unreadable summary
        damaged, reason = summary, f"{summary}: {error}"
    else:
        return []
    workflow.dag.forcefiles.add(str(summary))
    if workflow.dryrun:
        print(
            f"{reason}; a run without -n sets it aside and redoes the run",
            file=sys.stderr,
        )
        return []
    aside = [files.set_aside(path, "damaged") for path in {damaged, summary}]
    for path in {damaged, summary}:
        forget_listed_file(path)
    print(
        f"{reason}; set aside as {', '.join(sorted(p.name for p in aside))}: the run is "
        "redone",
        file=sys.stderr,
    )
    return []


def forget_listed_file(path):
    """Snakemake listed the run directory before this input function ran (its I/O
    cache, keyed by the path): it must not count on a file set aside since."""
    cache = workflow.iocache
    for listing in (cache.exists_local, cache.mtime, cache.size):
        listing.pop(str(path), None)


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
    return RUN_ROWS[wildcards.run]


def optimize_args(wildcards):
    """Command-line options of `vitnqs optimize` for one run."""
    settings = named_settings(run_config(wildcards))
    args = [f"--{key.replace('_', '-')} {value}" for key, value in settings.items()]
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
MAX_RUNTIME_ERROR = plan.max_runtime_error(MAX_RUNTIME)
if MAX_RUNTIME_ERROR is not None:
    raise WorkflowError(MAX_RUNTIME_ERROR)
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


# The jobs' requests: every number is vitnqs.plan's; these helpers only translate a
# job's wildcards into its RunConfig and pass the setup (OPTIONS, the site's cap
# MAX_RUNTIME, the pilot's rows PILOT) on.
def run_config(wildcards):
    """The RunConfig of the run named by the wildcard."""
    return RunConfig.from_row(run_settings(wildcards))


# Time of an optimization job: the run's projection (vitnqs.plan.runtime_minutes: the
# pilot's measurement where results/<preset>/tables/pilot.csv has this run on this setup,
# else the paper's A100 timings scaled), `attempt` times (in case this GPU is slower),
# never more than the site's cap: a longer run goes on over several jobs, each stopped
# by SLURM's warning with a checkpoint, each resumed by the next.
def runtime_minutes(wildcards, attempt):
    config = run_config(wildcards)
    return plan.runtime_minutes(
        config, OPTIONS.n_devices, attempt, MAX_RUNTIME, PILOT.get(config)
    )


# Retries belong to the Snakemake that submits jobs: inside a cluster job (remote
# execution) they would rerun the rule in an allocation that is about to end.
def optimize_retries():
    if workflow.remote_exec:
        return 0
    return optimize_retries_of_the_sweep()


def optimize_retries_of_the_sweep():
    """The optimize rule's retries as the submitting Snakemake sets them (vitnqs.plan:
    the jobs the longest run needs under the cap, plus some for failures)."""
    rows = [PILOT.get(c) for c in RUN_CONFIGS]
    return plan.run_retries(RUN_CONFIGS, OPTIONS.n_devices, MAX_RUNTIME, rows)


# SLURM's warning before the time limit (the run checkpoints and exits 75): its signal
# (SIGURG) and its timing are explained in vitnqs.plan (WARNING_SIGNAL, WARNING_SHARE).
def slurm_warning(wildcards, attempt):
    return plan.slurm_warning(runtime_minutes(wildcards, attempt))


# Memory: the run plan's estimate (vitnqs.plan: the SR mode the run will choose for the
# declared gpu_memory_gb, or the hungrier one where none is declared) with its margin.
# On the host too: a conservative request for GPU runs.
def mem_mb(wildcards, attempt):
    config = run_config(wildcards)
    run_plan = plan.plan_run(
        config, OPTIONS, measured_bytes=PILOT.device_memory(config)
    )
    return plan.job_memory_mb(
        run_plan.memory.total, run_plan.n_devices, PILOT.get(config)
    )


def pilot_minutes(wildcards, attempt):
    """Time of a pilot job: start-up and compilation, its steps at the run's rate."""
    config = run_config(wildcards)
    return plan.pilot_minutes(
        config,
        OPTIONS.n_devices,
        PILOT_STEPS,
        attempt,
        MAX_RUNTIME,
        PILOT.get(config),
    )


def symmetrized_plan(wildcards):
    """The symmetrized evaluation's samples, chunk and memory (vitnqs.plan)."""
    return plan.plan_symmetrized(run_config(wildcards), OPTIONS)


def symmetrized_mem_mb(wildcards):
    """Host memory of a symmetrized evaluation: its plan's estimate with the margin."""
    return plan.job_memory_mb(symmetrized_plan(wildcards).memory.total, 1)


def finetune_plan(wildcards):
    """The symmetrized fine-tuning's samples, chunk and memory (vitnqs.plan: M samples
    per step and an SR step on them; the evaluation's chunk)."""
    return plan.plan_finetune(run_config(wildcards), OPTIONS)


def finetune_mem_mb(wildcards):
    """Host memory of the symmetrized fine-tuning: its own plan's estimate with the
    margin."""
    return plan.job_memory_mb(finetune_plan(wildcards).memory.total, 1)


def symmetrize_minutes(wildcards, attempt):
    """Time of a symmetrized evaluation: a fixed time per attempt, capped."""
    return plan.attempt_minutes(plan.SYMMETRIZE_MINUTES, attempt, MAX_RUNTIME)


def finetune_minutes(wildcards, attempt):
    """Time of the symmetrized fine-tuning: a fixed time per attempt, capped."""
    return plan.attempt_minutes(plan.FINETUNE_MINUTES, attempt, MAX_RUNTIME)


# The site's GPU partition and model, where its profile names them (else the default
# partition, and any GPU).
GPU_SITE_RESOURCES = {
    key: value
    for key, value in (("slurm_partition", GPU_PARTITION), ("gpu_model", GPU_TYPE))
    if value is not None
}
# GPUs of an optimization job (vitnqs.plan.run_gpus): a preset on the CPU asks for none
# (its jobs go to the default partition) unless the config opts in.
RUN_GPUS = plan.run_gpus(OPTIONS, config.get("gpus_for_cpu_presets", False))


def run_placement(gpus):
    """Resources that put a job where the runs run: the GPU partition with `gpus` GPUs
    where the runs get GPUs; nothing (the default partition, no GPU) where they do not.
    """
    return {**GPU_SITE_RESOURCES, "gpu": gpus} if RUN_GPUS else {}


# The jobs that time steps (step_times, benchmark_phases) run alone on one device, where
# the runs run; their host memory: vitnqs.plan.timing_memory_mb.
def timing_configs():
    """The RunConfig of each run that step_times times."""
    return [RunConfig.from_row(row) for _, row in timing_plan(RUNS).iterrows()]


def step_times_minutes(wildcards, attempt):
    """Time of step_times: its runs' steps at their estimated rate on one device."""
    configs = timing_configs()
    rows = [PILOT.get(c) for c in configs]
    return plan.step_times_minutes(configs, rows, attempt, MAX_RUNTIME)


def step_times_mem_mb(wildcards):
    """Host memory of step_times (its runs one at a time, with the runs' chunk)."""
    return plan.timing_memory_mb(timing_configs(), OPTIONS, OPTIONS.chunk_size)


def benchmark_section():
    """The preset's `benchmark:` section (results/benchmarks/step_phases.csv)."""
    if "benchmark" not in PRESET:
        raise WorkflowError(
            f"presets.{SCALE}.benchmark: the {SCALE} preset has no benchmark section, so "
            f"{BENCHMARKS}/step_phases.csv cannot be made; add one (see the quick preset)"
        )
    return PRESET["benchmark"]


def benchmark_minutes(wildcards):
    """Time of benchmark_phases: the preset's budget and a margin, capped."""
    return plan.benchmark_minutes(benchmark_section(), MAX_RUNTIME)


def benchmark_mem_mb(wildcards):
    """Host memory of benchmark_phases (its largest cases)."""
    return plan.benchmark_memory_mb(benchmark_section(), OPTIONS)


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
    """The PDF and PNG of a figure, both in the report with its caption: a browser shows
    the PNG as an image, the PDF as an attachment beside it."""
    caption = f"../report/{name}.rst"
    return {
        "pdf": report(
            f"{FIGURES}/{name}.pdf",
            caption=caption,
            category="Figures",
            subcategory="PDF",
        ),
        "png": report(
            f"{FIGURES}/{name}.png",
            caption=caption,
            category="Figures",
            subcategory="PNG",
        ),
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
