"""The Snakemake pipeline: config validation, the smoke run end to end, incremental reruns."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vitnqs.config import ConfigError
from vitnqs.findings import ACCURACY, COST, IDENTITY_FIT, INDEPENDENCE, SYMMETRIZED, findings
from vitnqs.sweeps import runs_table

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
FIGURES = ["fig2", "fig3", "fig4", "fig5"]


def _config(**edits):
    config = copy.deepcopy(CONFIG)
    for path, value in edits.items():
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return config


def test_shipped_config_is_valid_and_shares_runs():
    validate(copy.deepcopy(CONFIG), SCHEMA)
    for preset in ("paper", "laptop", "quick", "smoke"):
        runs = runs_table({**CONFIG, "preset": preset})
        assert not runs.duplicated(subset=[c for c in runs.columns if c != "sweeps"]).any()
    paper = runs_table({**CONFIG, "preset": "paper"})
    # fig2: 12 runs, fig3: 9, table1 inside fig3, fig4 inside fig2; L=6,J2=.5,nl=4 shared
    assert len(paper) == 12 + 9 - 3
    shared = paper[(paper.L == 6) & (paper.J2 == 0.5) & (paper.layers == 4)]
    assert set(shared.sweeps) == {"fig2;fig3;table1"}
    assert set(paper.d) == {60} and set(paper.samples) == {6000} and set(paper.steps) == {5000}


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"presets.quick.sweeps.fig2.atention": ["t5"]}, "'atention' was unexpected"),
        ({"presets.quick.hyperparameters.stepz": 3}, "'stepz' was unexpected"),
        ({"presets.quick.sweeps.fig3.attention": ["t5", "linear"]}, "'linear' is not one of"),
        ({"presets.quick.hyperparameters.steps": -5}, "-5 is less than the minimum of 1"),
        ({"presets.quick.sweeps.fig4.L": [3]}, "3 is not a multiple of 2"),
        ({"presets.quick.sweeps.fig4.J2": [1e300]}, "1e+300 is greater than the maximum of 10"),
        ({"presets.quick.seeds": [2**70]}, "is greater than the maximum of 9223372036854775807"),
        ({"presets.quick.hyperparameters.samples": 1}, "1 is less than the minimum of 16"),
        ({"preset": "huge"}, "'huge' is not one of ['paper', 'laptop', 'quick', 'smoke']"),
        ({"presets.quick.sweeps.fig4.J2": [-0.5]}, "-0.5 is less than the minimum of 0"),
        ({"presets.quick.device": "tpu"}, "'tpu' is not one of ['gpu', 'cpu', 'auto']"),
        ({"gpus_per_run": 0}, "0 is less than the minimum of 1"),
        ({"gpus_for_cpu_presets": "yes"}, "'yes' is not of type 'boolean'"),
        ({"site_resources": ["gpu partition"]}, "'gpu partition' does not match"),
    ],
)
def test_schema_rejects_bad_configs(edits, message):
    with pytest.raises(WorkflowError) as error:
        validate(_config(**edits), SCHEMA)
    assert message in str(error.value)
    field = list(edits)[0].split(".")[-1]
    assert field in str(error.value)  # the message names the field


def test_cross_field_rules_name_the_field():
    with pytest.raises(ConfigError, match=r"presets.quick.sweeps.fig3: L/b: L=5 is not divisible"):
        runs_table(_config(**{"presets.quick.sweeps.fig3.L": [4, 5]}))
    with pytest.raises(ConfigError, match=r"presets.quick.sweeps.fig2: d/heads: d=16 is not"):
        runs_table(_config(**{"presets.quick.sweeps.fig2.hyperparameters": {"heads": 3}}))


def test_gpus_and_gpu_memory_are_checked_before_anything_runs():
    with pytest.raises(
        ConfigError,
        match=r"presets.quick.sweeps.fig2: samples/gpus_per_run: 128 samples do not split "
        r"evenly over 3 devices",
    ):
        runs_table(_config(gpus_per_run=3))
    with pytest.raises(
        ConfigError, match=r"presets.quick.sweeps.fig2: chunk_size: 48 does not divide the 64"
    ):
        runs_table(_config(**{"gpus_per_run": 2, "presets.quick.chunk_size": 48}))
    runs_table(_config(gpus_per_run=4))  # 32 samples per GPU, in one chunk: fine
    # the paper's L = 10, 4-layer runs: about 35 GB with the Jacobian in memory (sr_mode
    # auto takes it on 80 GB), 19.1 GB on the fly with the compact local energies' bound
    # on the activations (taken on 24 GB, too much for 16 GB)
    with pytest.raises(
        ConfigError,
        match=r"presets.paper.sweeps.fig3: gpu_memory_gb: the run needs about 19.1 GB per device "
        r"\(Jacobian 1.48, kernel 1.15, activations 15.44, runtime 1.0\) with SR mode onthefly",
    ):
        runs_table(_config(preset="paper", gpu_memory_gb=16))
    runs_table(_config(preset="paper", gpu_memory_gb=24))
    runs_table(_config(preset="paper", gpu_memory_gb=80))


def _snakemake(workdir, *args, timeout=900):
    snakefile = workdir / "Snakefile" if (workdir / "Snakefile").exists() else ROOT / "Snakefile"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(snakefile),
            "--directory",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_bad_config_fails_the_dry_run_with_the_field_name(tmp_path):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            _config(
                **{
                    "presets.smoke.sweeps.fig2.L": [4, 6],
                    "presets.smoke.sweeps.fig2.hyperparameters": {"b": 4},
                }
            )  # fmt: skip
        )
    )
    done = _snakemake(tmp_path, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert done.returncode != 0
    message = "presets.smoke.sweeps.fig2: L/b: L=6 is not divisible by the patch size b=4"
    assert message in done.stdout + done.stderr


def test_site_resources_shape_the_cluster_requests(tmp_path):
    """A dry run with a site's default-resources: GPU partition and model for the
    optimizations only, time requests capped, the warning inside the cap."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    site = ["slurm_partition=cpu", "gpu_partition=gpu", "gpu_type=a100", "max_runtime=600"]
    done = _snakemake(tmp_path, "-n", "all", "--config", "preset=paper", "--default-resources",
                      *site)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):.*?^    resources: (.*?)$", done.stdout, flags=re.M | re.S)
    optimize = [dict(kv.split("=", 1) for kv in r.split(", ")) for rule, r in jobs
                if rule == "optimize"]  # fmt: skip
    assert len(optimize) == 18
    for r in optimize:
        assert (r["slurm_partition"], r["gpu_model"], r["gpu"]) == ("gpu", "a100", "1"), r
        # the SR Jacobian alone: 2 copies of 2 x 6000 x P floats, P > 40,000 (1 layer)
        assert int(r["runtime"]) <= 600 and int(r["mem_mb"]) > 2 * 2 * 6000 * 40_000 * 8 / 1e6, r
    # L = 10, 4 layers: 28 h on an A100 in the paper, so the estimate hits the cap
    assert {r["runtime"] for r in optimize} >= {"600", "234"}
    assert {r["slurm_extra"] for r in optimize} == {"--signal=URG@300"}
    maps = [dict(kv.split("=", 1) for kv in r.split(", ")) for rule, r in jobs
            if rule == "attention_maps"]  # fmt: skip
    assert maps and all(r["slurm_partition"] == "cpu" for r in maps), maps
    assert not any("gpu" in r or "gpu_model" in r for r in maps), maps
    done = _snakemake(tmp_path, "-n", "all", "--default-resources", "max_runtime=1")
    assert done.returncode != 0
    assert "max_runtime must be a number of minutes >= 2" in done.stdout + done.stderr


def _profile_run(workdir, *args, timeout=300, env=None):
    """`snakemake --profile slurm ...` in a copy of the repository (the site profile in
    ./slurm, as on a cluster's login node)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def _planned(output: str) -> list[tuple[str, str, dict[str, str]]]:
    """(rule, output, resources) of each job of a dry run."""
    jobs = []
    for block in re.split(r"^rule (?=\w+:$)", output, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        resources = fields.get("resources", "")
        jobs.append(
            (rule, fields.get("output", ""), dict(kv.split("=", 1) for kv in resources.split(", ")))
        )
    return jobs


def test_site_profile_preset_survives_a_command_line_config(tmp_path, copy_workflow):
    """`--config` on the command line adds to the site profile's preset (slurm/site.yaml)
    instead of replacing it: the paper's runs, on GPUs."""
    work = copy_workflow(tmp_path)
    done = _profile_run(work, "-n", "all", "--config", "gpus_per_run=2")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    optimize = [(out, r) for rule, out, r in _planned(done.stdout) if rule == "optimize"]
    assert len(optimize) == 18, done.stdout[-3000:]
    assert all("_d~60_" in out and r["gpu"] == "2" for out, r in optimize)
    assert "_d~16_" not in done.stdout
    # naming another preset still works
    done = _profile_run(work, "-n", "all", "--config", "preset=quick", "gpus_per_run=2")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "_d~60_" not in done.stdout and "figures/quick/fig3.pdf" in done.stdout


def test_cluster_run_without_a_chosen_preset_is_refused(tmp_path, copy_workflow):
    """A command-line --configfile replaces the profile's site.yaml: a cluster run (not a
    dry run) that names no preset is refused when its jobs are planned, before any
    submission (a stand-in sbatch records a call)."""
    work = copy_workflow(tmp_path)
    (work / "mine.yaml").write_text("gpus_per_run: 1\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path}/sbatch_called\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = _profile_run(work, "all", "--configfile", "mine.yaml", env=env)
    assert done.returncode != 0
    assert "no preset was chosen for this cluster run, so it would run config.yaml's default, " \
        "'quick'" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]  # fmt: skip
    assert not (tmp_path / "sbatch_called").exists()


def test_cpu_presets_ask_for_no_gpu_unless_opted_in(tmp_path, copy_workflow):
    """A preset on the CPU: its optimizations and timing jobs ask for no GPU and go to the
    default partition; `gpus_for_cpu_presets` opts in (the SLURM tests do)."""
    work = copy_workflow(tmp_path)
    targets = ["all", "results/smoke/benchmarks/step_phases.csv"]
    done = _profile_run(work, "-n", *targets, "--config", "preset=smoke", "gpus_per_run=2")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    jobs = _planned(done.stdout)
    assert {"optimize", "step_times", "benchmark_phases"} <= {rule for rule, _, _ in jobs}
    for rule, _, r in jobs:
        assert "gpu" not in r and "gpu_model" not in r and r["slurm_partition"] == "cpu", rule
    done = _profile_run(work, "-n", *targets, "--config", "preset=smoke", "gpus_per_run=2",
                        "gpus_for_cpu_presets=True")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    gpus = {rule: r["gpu"] for rule, _, r in _planned(done.stdout) if "gpu" in r}
    assert set(gpus) == {"optimize", "step_times", "benchmark_phases", "symmetrize"}, gpus
    assert gpus["optimize"] == "2" and gpus["step_times"] == gpus["benchmark_phases"] == "1"


def test_timing_jobs_run_where_the_runs_run(tmp_path, copy_workflow):
    """step_times and benchmark_phases of the paper: one GPU of the GPU partition, a time
    within the cap and a host-memory request (the H200 phase run peaked at 4.2 GB)."""
    work = copy_workflow(tmp_path)
    done = _profile_run(work, "-n", "all", "results/benchmarks/step_phases.csv")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    timing = {rule: r for rule, _, r in _planned(done.stdout)
              if rule in ("step_times", "benchmark_phases")}  # fmt: skip
    assert set(timing) == {"step_times", "benchmark_phases"}
    for rule, r in timing.items():
        assert (r["slurm_partition"], r["gpu"]) == ("gpu", "1"), (rule, r)
        assert 30 <= int(r["runtime"]) <= 2880 and int(r["mem_mb"]) >= 6000, (rule, r)


def test_lost_site_resources_are_refused(tmp_path, copy_workflow):
    """A command-line --default-resources replaces the site profile's list: refused,
    naming the keys it lost; with them repeated it plans."""
    work = copy_workflow(tmp_path)
    done = _profile_run(work, "-n", "all", "--default-resources", "slurm_account=myproj")
    assert done.returncode != 0
    assert "the site profile requires slurm_partition, gpu_partition, max_runtime" in (
        done.stdout + done.stderr
    ), done.stderr[-3000:]
    done = _profile_run(work, "-n", "all", "--default-resources", "slurm_account=myproj",
                        "slurm_partition=cpu", "gpu_partition=gpu", "max_runtime=600")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    optimize = [r for rule, _, r in _planned(done.stdout) if rule == "optimize"]
    assert optimize and all(r["slurm_account"] == "myproj" for r in optimize)
    assert all(int(r["runtime"]) <= 600 for r in optimize)


def test_each_preset_writes_its_own_outputs(tmp_path):
    """The paper's tables and figures at the top, any other preset's below its name."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    done = _snakemake(tmp_path, "-n", "--cores", "1", "figures/fig3.pdf", "--config",
                      "preset=paper")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "results/tables/table1.csv" in done.stdout and "results/paper" not in done.stdout
    done = _snakemake(tmp_path, "-n", "--cores", "1", "all", "--config", "preset=quick")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    outputs = [out for rule, out, _ in _planned(done.stdout) if rule not in ("optimize", "all")]
    for out in (o for line in outputs for o in line.split(", ")):
        # a run's symmetrized evaluation lies in its (shared) directory, like the run
        assert out.startswith(("figures/quick/", "results/quick/", "results/references/",
                               "results/analysis/")) or (
            out.startswith("results/runs/") and out.endswith("/symmetrized.json")
        ), out  # fmt: skip
    assert "figures/quick/fig3.pdf" in done.stdout
    done = _snakemake(tmp_path, "-n", "--cores", "1", "figures/quick/fig3.pdf", "--config",
                      "preset=quick")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # another preset's target says whose it is
    done = _snakemake(tmp_path, "-n", "--cores", "1", "figures/fig3.pdf", "--config",
                      "preset=quick")  # fmt: skip
    assert done.returncode != 0
    assert "figures/fig3.pdf is an output of the paper preset, and this run's preset is quick: " \
        "add --config preset=paper (the quick preset writes figures/quick/fig3.pdf)" in (
        done.stdout + done.stderr)  # fmt: skip


def test_figures_wait_only_for_the_runs_they_draw(tmp_path):
    """Runs of an extra sweep are not inputs of Figures 2-4, Table 1 or the findings: a
    failed exploratory run blocks none of them (runs.csv, of every run, waits for it)."""
    config = _config(preset="smoke")
    config["presets"]["smoke"]["sweeps"]["extra"] = {
        "attention": ["factored"], "L": [12], "J2": [0.3], "layers": [2],
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    tables = "results/smoke/tables"
    targets = [*(f"figures/smoke/{f}.pdf" for f in FIGURES), f"{tables}/table1.csv",
               f"{tables}/findings.csv"]  # fmt: skip
    done = _snakemake(tmp_path, "-n", "--cores", "1", *targets)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "L~12" not in done.stdout and "L12_J20.3" not in done.stdout
    done = _snakemake(tmp_path, "-n", "--cores", "1", f"{tables}/runs.csv")
    assert done.returncode == 0 and "L~12_J2~0.3" in done.stdout


def test_every_preset_has_a_phase_benchmark(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    for preset in ("paper", "laptop", "quick", "smoke"):
        target = "results/benchmarks" if preset == "paper" else f"results/{preset}/benchmarks"
        done = _snakemake(tmp_path, "-n", "--cores", "1", f"{target}/step_phases.csv",
                          "--config", f"preset={preset}")  # fmt: skip
        assert done.returncode == 0, (preset, done.stderr[-3000:])
    # a preset without one says so
    config = _config(preset="laptop")
    del config["presets"]["laptop"]["benchmark"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = _snakemake(tmp_path, "-n", "--cores", "1", "results/laptop/benchmarks/step_phases.csv")
    assert done.returncode != 0
    assert "the laptop preset has no benchmark section" in done.stdout + done.stderr


def test_license_and_citation():
    """The licence and the citation file exist and cite the paper."""
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    paper = citation["preferred-citation"]
    assert "2405.18874" in str(paper) and paper["volume"] == 6 and paper["start"] == "010501"
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"


def _job_counts(output: str) -> dict[str, int]:
    """Rule -> count from the 'Job stats' table of a dry run."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, copy_workflow):
    """The whole pipeline at smoke scale in a scratch copy (a test edits the plotting code)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke"))
    done = _snakemake(workdir, "--cores", "2", "all", "--config", "preset=smoke")
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def test_smoke_pipeline_outputs(smoke):
    for name in FIGURES:
        assert (smoke / f"figures/smoke/{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (smoke / f"figures/smoke/{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the smoke preset writes below its name only: nothing of the paper's paths
    assert not (smoke / "figures/fig2.pdf").exists() and not (smoke / "results/tables").exists()
    tables = smoke / "results/smoke/tables"
    expected = runs_table({**CONFIG, "preset": "smoke"})
    runs = pd.read_csv(tables / "runs.csv")
    assert len(runs) == len(expected) and set(runs.attention) == {"t5", "decoupled", "factored"}
    assert (
        runs[["energy", "energy_error", "rel_error", "n_parameters", "median_step_time_s"]]
        .notna()
        .all()
        .all()
    )
    assert (runs.reference_kind == "exact diagonalization").all()
    history = pd.read_csv(tables / "history.csv")
    steps = CONFIG["presets"]["smoke"]["hyperparameters"]["steps"]
    assert (
        len(history) == len(runs) * steps and history[["energy", "rel_error"]].notna().all().all()
    )
    table1 = pd.read_csv(tables / "table1.csv")
    paper = table1.dropna(subset=["paper_energy"])
    assert len(paper) == 6 and set(paper.L) == {6, 10}
    assert paper.set_index(["L", "attention"]).loc[(10, "factored"), "paper_energy"] == -0.497184
    assert table1.dropna(subset=["energy"]).shape[0] == len(runs)
    assert "-0.503216(8)" in (tables / "table1.md").read_text()
    assert "\\begin{tabular}" in (tables / "table1.tex").read_text()
    dependence = pd.read_csv(tables / "attention_dependence.csv")
    assert (
        set(dependence.stage) == {"initial", "optimized"}
        and dependence.input_dependence.notna().all()
    )
    step_times = pd.read_csv(tables / "step_times.csv")
    assert len(step_times) == 3 and (step_times.median_step_time_s > 0).all()
    assert table1.dropna(subset=["step_time_s"]).shape[0] == len(runs)
    found = pd.read_csv(tables / "findings.csv")
    symmetrized = pd.read_csv(tables / "symmetrized.csv")
    assert len(symmetrized) == 3 and (symmetrized.n_ops == 64).all()
    assert symmetrized.energy.notna().all() and symmetrized.v_score.gt(0).all()
    # the evaluation's own samples (4 M, as the plain final evaluation) beside the run's M,
    # which Table 1 joins on
    assert (symmetrized.eval_samples == 4 * symmetrized.samples).all()
    assert table1.dropna(subset=["energy"]).sym_energy.notna().all()
    recomputed = findings(
        pd.read_csv(tables / "runs_fig2.csv"),
        dependence,
        pd.read_csv(tables / "attention_maps.csv"),
        step_times,
        symmetrized,
    )
    pd.testing.assert_frame_equal(found, recomputed)
    assert found.groupby("claim").size().to_dict() == {
        ACCURACY: 1, INDEPENDENCE: 2, IDENTITY_FIT: 1, COST: 1, SYMMETRIZED: 1
    }  # fmt: skip
    assert set(found.result) <= {"pass", "fail", "info"}
    assert found.iloc[0]["case"] in (smoke / "results/smoke/logs/findings.log").read_text()
    checks = pd.read_csv(tables / "shastry_sutherland.csv")
    assert checks.passed.all()
    for log in (smoke / "results/logs/optimize").iterdir():
        assert "done: E/N" in log.read_text()


def test_new_sweep_point_schedules_only_new_jobs_and_dependents(smoke, tmp_path):
    config = _config(preset="smoke")
    config["presets"]["smoke"]["sweeps"]["extra"] = {
        "attention": ["factored"], "L": [12], "J2": [0.3], "layers": [2], "seeds": [0, 1],
    }  # fmt: skip
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    done = _snakemake(smoke, "-n", "--cores", "1", "all", "--configfile", str(config_file))
    assert done.returncode == 0, done.stderr[-3000:]
    # the new runs, the table of every run (runs.csv) and its plan; no figure, no Table 1,
    # no findings: they draw the fig2, fig3 and table1 sweeps only
    assert _job_counts(done.stdout) == {
        "reference": 1, "optimize": 2, "plan_version": 1, "sweeps_table": 1, "collect": 1,
        "all": 1,
    }  # fmt: skip
    assert "L~12_J2~0.3_layers~2" in done.stdout


def test_execution_settings_never_rerun_finished_runs(smoke, tmp_path):
    """GPUs per run, chunk size, GPU memory and the optimize rule's shell command are not
    rerun triggers (profiles/default: rerun-triggers): a finished run stays finished."""
    config = _config(preset="smoke", gpus_per_run=2, gpu_memory_gb=80)
    config["presets"]["smoke"]["chunk_size"] = 16
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    rules = smoke / "workflow/rules/runs.smk"
    original = rules.read_text()
    # a whitespace change in the shell command, and the XLA thread flag
    edited = original.replace('" {params.args} --reference', '"  {params.args}  --reference')
    edited = edited.replace("xla=XLA_THREAD_FLAGS", 'xla=XLA_THREAD_FLAGS + " "')
    assert edited.count("  {params.args}  ") == 1 and 'XLA_THREAD_FLAGS + " "' in edited
    rules.write_text(edited)
    try:
        done = _snakemake(smoke, "-n", "--cores", "1", "all", "--configfile", str(config_file))
    finally:
        rules.write_text(original)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rule optimize" not in done.stdout, done.stdout[-3000:]
    assert "Nothing to be done" in done.stdout + done.stderr, done.stdout[-3000:]


def test_nothing_to_do_after_the_run_and_plot_code_changes_rerun_only_plots(smoke):
    done = _snakemake(smoke, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    with open(smoke / "src/vitnqs/plots.py", "a") as plots:
        plots.write("\n# an edit of the plotting code\n")
    done = _snakemake(smoke, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert _job_counts(done.stdout) == {"fig2": 1, "fig3": 1, "fig4": 1, "fig5": 1, "all": 1}
    done = _snakemake(smoke, "--cores", "1", "figures/smoke/fig3.pdf", "--config", "preset=smoke")
    assert done.returncode == 0 and "rule optimize" not in done.stdout + done.stderr


def test_a_cut_history_is_redone_not_read(smoke):
    """A finished run's history cut by a line: the next `snakemake all` reruns the run's job
    (it restores the files from the checkpoint) and builds no table from the cut file."""
    run = next(p for p in sorted((smoke / "results/runs").iterdir()) if "t5" in p.name)
    history = run / "history.csv"
    full = history.read_text()
    history.write_text("".join(full.splitlines(keepends=True)[:-1]))
    done = _snakemake(smoke, "--cores", "2", "all", "--config", "preset=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{run.name}/history.csv does not match" in done.stderr
    assert "set aside as history.csv.damaged-" in done.stderr
    assert len(list(run.glob("history.csv.damaged-*"))) == 1
    assert len(list(run.glob("summary.json.damaged-*"))) == 1  # it vouched for the cut file
    assert _job_counts(done.stdout + done.stderr).get("optimize") == 1
    assert history.read_text() == full
    steps = CONFIG["presets"]["smoke"]["hyperparameters"]["steps"]
    collected = pd.read_csv(smoke / "results/smoke/tables/history.csv")
    mine = collected[collected["attention"] == "t5"]
    assert len(mine) == steps and mine["energy_error"].notna().all()


def test_report(smoke):
    done = _snakemake(smoke, "--report", "report.html", "--config", "preset=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (smoke / "report.html").stat().st_size > 10_000


def _lock(name: str) -> dict[str, str]:
    return dict(line.split("==") for line in (ROOT / name).read_text().splitlines() if "==" in line)


CUDA_PACKAGES = re.compile(r"^(jax-cuda\d+-|nvidia-)")


@pytest.mark.parametrize(
    ("env", "lock"),
    [("vitnqs-cpu", "requirements.lock"), ("vitnqs-cuda", "requirements-cuda.lock")],
)
def test_conda_envs_match_the_lock_files(env, lock):
    pins = _lock(lock)
    spec = yaml.safe_load((ROOT / f"envs/{env}.yaml").read_text())
    env_pins = dict(
        pin.split("==")
        for pin in next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    )
    for name, version in env_pins.items():
        assert pins[re.sub(r"\[.*\]", "", name)] == version, (name, version)
    # the CUDA environment has every CUDA package of its lock, the CPU one none
    cuda = {n for n in pins if CUDA_PACKAGES.match(n)}
    assert cuda <= set(env_pins) and (env == "vitnqs-cuda") == bool(cuda)


def test_cuda_extra_pins_the_locked_jax():
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'^cuda = \["jax\[cuda12\]==([\d.]+)"\]', pyproject, flags=re.M)
    cpu, cuda = _lock("requirements.lock"), _lock("requirements-cuda.lock")
    assert pin == cpu["jax"] == cuda["jax"] == cuda["jaxlib"] == cuda["jax-cuda12-plugin"]
    # the same versions of everything else: one workflow, two builds of jax
    assert {n: v for n, v in cuda.items() if not CUDA_PACKAGES.match(n)} == cpu


def test_cuda_lock_resolves_against_the_package_index():
    """The CUDA lock resolved by uv against PyPI: every pin exists, none conflicts, none is
    missing (a wrong pin fails here, not on a cluster)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "uv"), "pip", "compile", "requirements-cuda.lock",
         "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
         "--no-header", "--no-annotate", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = dict(line.split("==") for line in done.stdout.splitlines() if "==" in line)
    assert resolved == _lock("requirements-cuda.lock")


FINDINGS_BLOCKS = ROOT / "README.md"
"""Where the generated findings tables are reported, between ``<!-- findings:<preset> -->``
and ``<!-- /findings -->``."""


def _reported_verdicts(preset):
    """(claim, case) -> result (pass, fail, info) of the findings table reported for a
    preset: verdicts only, never the numbers, which differ between machines."""
    text = FINDINGS_BLOCKS.read_text()
    (_, block) = text.split(f"<!-- findings:{preset} -->")
    section = block.split("<!-- /findings -->")[0]
    rows = [line.split("|")[1:-1] for line in section.strip().splitlines()[2:]]
    return {(r[0].strip(), r[1].strip()): r[-1].strip() for r in rows}


@pytest.mark.slow
def test_laptop_preset_findings_are_complete_and_match_the_readme(tmp_path, copy_workflow):
    """The whole laptop preset (under 2 hours on 2 cores): `pytest -m slow -k laptop`."""
    workdir = copy_workflow(tmp_path)
    done = _snakemake(workdir, "--cores", "2", "all", "--config", "preset=laptop", timeout=4 * 3600)
    assert done.returncode == 0, done.stderr[-4000:]
    found = pd.read_csv(workdir / "results/laptop/tables/findings.csv")
    # fig2: J2 in {0, 0.5} x layers {1, 2}; fig4: T5 and Decoupled, one layer; fig3 and
    # Table 1: 2 L (their symmetrized evaluations: a row per L)
    assert found.groupby("claim").size().to_dict() == {
        ACCURACY: 4, INDEPENDENCE: 2, IDENTITY_FIT: 1, COST: 2, SYMMETRIZED: 2
    }  # fmt: skip
    assert found["numbers"].notna().all() and not found["numbers"].str.contains("missing").any()
    reported = _reported_verdicts("laptop")
    assert found.set_index(["claim", "case"])["result"].to_dict() == reported
