# Helpers shared by the rules: config validation, the run table, resource estimates.
import os
import sys
from pathlib import Path

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
from vitnqs.sweeps import RUN_COLUMNS, in_sweep, preset, run_space, runs_table

validate(config, "../schemas/config.schema.yaml")

SCALE = config["preset"]
PRESET = preset(config)
RUNS = runs_table(config)  # raises ConfigError naming the field of a bad value
PARAMSPACE = run_space(RUNS)
RUNS["run"] = list(PARAMSPACE.instance_patterns)
RUN_DIR = "results/runs/{run}"

# Conda environments (used with --software-deployment-method conda): the CUDA one for
# the jobs that evaluate the network (it falls back to the CPU), the CPU one elsewhere.
CPU_ENV = "../../envs/vitnqs-cpu.yaml"
GPU_ENV = "../../envs/vitnqs-cuda.yaml"

# Plotting code is an input of the figure rules: editing it reruns plots, never runs.
PLOT_CODE = [
    vitnqs.plots.__file__,
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
    if PRESET["chunk_size"] is not None:
        args.append(f"--chunk-size {PRESET['chunk_size']}")
    return " ".join(args)


def reference_file(wildcards):
    s = run_settings(wildcards)
    return f"results/references/L{s['L']}_J2{float(s['J2'])}.json"


# Resource estimates for the cluster, from the paper's timings on one A100
# (Table 1: T5, L=10, 4 layers, M=6000: 28 h / 5000 steps = 20 s per step), assuming
# time per step ~ 8.3e-6 s x samples x sites x layers; 1.5x margin plus 10 minutes,
# and each retry gets `attempt` times more (a timed-out run resumes from its checkpoint).
def runtime_minutes(wildcards, attempt):
    s = run_settings(wildcards)
    seconds = 8.3e-6 * s["samples"] * s["L"] ** 2 * s["layers"] * s["steps"]
    return int(attempt * (1.5 * seconds / 60 + 10))


# Host memory: 4 GB for JAX and NetKet plus the samples' connected configurations.
def mem_mb(wildcards, attempt):
    s = run_settings(wildcards)
    return int(4000 + 2.5e-3 * s["samples"] * s["L"] ** 2 * s["layers"])


def benchmark_args(wildcards=None):
    """Command-line options of `vitnqs benchmark` from the preset's `benchmark` section."""
    bench = PRESET["benchmark"]
    args = [
        "--L " + " ".join(map(str, bench["L"])),
        f"--samples {bench['samples']} --steps {bench['steps']}",
        f"--max-minutes {bench['max_minutes']}",
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
