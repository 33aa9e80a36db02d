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
from vitnqs.findings import ACCURACY, COST, IDENTITY_FIT, INDEPENDENCE, findings
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
        ({"preset": "huge"}, "'huge' is not one of ['paper', 'laptop', 'quick', 'smoke']"),
        ({"presets.quick.sweeps.fig4.J2": [-0.5]}, "-0.5 is less than the minimum of 0"),
        ({"presets.quick.device": "tpu"}, "'tpu' is not one of ['gpu', 'cpu', 'auto']"),
        ({"gpus_per_run": 0}, "0 is less than the minimum of 1"),
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
        match=r"presets.quick.sweeps.fig2: samples/gpus_per_run: 256 samples do not split "
        r"evenly over 3 devices",
    ):
        runs_table(_config(gpus_per_run=3))
    with pytest.raises(
        ConfigError, match=r"presets.quick.sweeps.fig2: chunk_size: 96 does not divide the 128"
    ):
        runs_table(_config(**{"gpus_per_run": 2, "presets.quick.chunk_size": 96}))
    runs_table(_config(gpus_per_run=4))  # 64 samples per GPU, in one chunk: fine
    # the paper's L = 10, 4-layer runs: 39.6 GB with the Jacobian in memory (sr_mode auto
    # takes it on 80 GB), 23.3 GB on the fly (taken on 24 GB, too much for 16 GB)
    with pytest.raises(
        ConfigError,
        match=r"presets.paper.sweeps.fig3: gpu_memory_gb: the run needs about 23.3 GB per device "
        r"\(Jacobian 1.48, kernel 1.15, activations 19.65, runtime 1.0\) with SR mode onthefly",
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
        yaml.safe_dump(_config(**{"presets.smoke.sweeps.fig2.L": [6, 7]}))
    )
    done = _snakemake(tmp_path, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert done.returncode != 0
    message = "presets.smoke.sweeps.fig2: L/b: L=7 is not divisible by the patch size b=2"
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
        assert (smoke / f"figures/{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (smoke / f"figures/{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    expected = runs_table({**CONFIG, "preset": "smoke"})
    runs = pd.read_csv(smoke / "results/tables/runs.csv")
    assert len(runs) == len(expected) and set(runs.attention) == {"t5", "decoupled", "factored"}
    assert (
        runs[["energy", "energy_error", "rel_error", "n_parameters", "median_step_time_s"]]
        .notna()
        .all()
        .all()
    )
    assert (runs.reference_kind == "exact diagonalization").all()
    history = pd.read_csv(smoke / "results/tables/history.csv")
    steps = CONFIG["presets"]["smoke"]["hyperparameters"]["steps"]
    assert (
        len(history) == len(runs) * steps and history[["energy", "rel_error"]].notna().all().all()
    )
    table1 = pd.read_csv(smoke / "results/tables/table1.csv")
    paper = table1.dropna(subset=["paper_energy"])
    assert len(paper) == 6 and set(paper.L) == {6, 10}
    assert paper.set_index(["L", "attention"]).loc[(10, "factored"), "paper_energy"] == -0.497184
    assert table1.dropna(subset=["energy"]).shape[0] == len(runs)
    assert "-0.503216(8)" in (smoke / "results/tables/table1.md").read_text()
    assert "\\begin{tabular}" in (smoke / "results/tables/table1.tex").read_text()
    dependence = pd.read_csv(smoke / "results/tables/attention_dependence.csv")
    assert (
        set(dependence.stage) == {"initial", "optimized"}
        and dependence.input_dependence.notna().all()
    )
    step_times = pd.read_csv(smoke / "results/tables/step_times.csv")
    assert len(step_times) == 3 and (step_times.median_step_time_s > 0).all()
    assert table1.dropna(subset=["step_time_s"]).shape[0] == len(runs)
    tables = smoke / "results/tables"
    found = pd.read_csv(tables / "findings.csv")
    recomputed = findings(
        runs,
        dependence,
        pd.read_csv(tables / "attention_maps.csv"),
        step_times,
    )
    pd.testing.assert_frame_equal(found, recomputed)
    assert found.groupby("claim").size().to_dict() == {
        ACCURACY: 1, INDEPENDENCE: 2, IDENTITY_FIT: 1, COST: 1
    }  # fmt: skip
    assert set(found.result) <= {"pass", "fail", "info"}
    assert found.iloc[0]["case"] in (smoke / "results/logs/findings.log").read_text()
    checks = pd.read_csv(smoke / "results/tables/shastry_sutherland.csv")
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
    assert _job_counts(done.stdout) == {
        "reference": 1, "optimize": 2, "sweeps_table": 1, "collect": 1, "table1": 1,
        "findings": 1, "fig2": 1, "fig3": 1, "all": 1,
    }  # fmt: skip
    assert "L~12_J2~0.3_layers~2" in done.stdout


def test_nothing_to_do_after_the_run_and_plot_code_changes_rerun_only_plots(smoke):
    done = _snakemake(smoke, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    with open(smoke / "src/vitnqs/plots.py", "a") as plots:
        plots.write("\n# an edit of the plotting code\n")
    done = _snakemake(smoke, "-n", "--cores", "1", "all", "--config", "preset=smoke")
    assert _job_counts(done.stdout) == {"fig2": 1, "fig3": 1, "fig4": 1, "fig5": 1, "all": 1}
    done = _snakemake(smoke, "--cores", "1", "figures/fig3.pdf", "--config", "preset=smoke")
    assert done.returncode == 0 and "rule optimize" not in done.stdout + done.stderr


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


def _readme_findings(preset):
    """(claim, case) -> result of the findings table the README reports for a preset."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"<!-- findings:{preset} -->")[1].split("<!-- /findings -->")[0]
    rows = [line.split("|")[1:-1] for line in section.strip().splitlines()[2:]]
    return {(r[0].strip(), r[1].strip()): r[-1].strip() for r in rows}


@pytest.mark.slow
def test_laptop_preset_findings_are_complete_and_match_the_readme(tmp_path, copy_workflow):
    """The whole laptop preset (about 2 hours on 2 cores): `pytest -m slow -k laptop`."""
    workdir = copy_workflow(tmp_path)
    done = _snakemake(workdir, "--cores", "2", "all", "--config", "preset=laptop", timeout=4 * 3600)
    assert done.returncode == 0, done.stderr[-4000:]
    found = pd.read_csv(workdir / "results/tables/findings.csv")
    # fig2: J2 in {0, 0.5} x layers {1, 2}; fig4: T5 and Decoupled, one layer; fig3: 2 L
    assert found.groupby("claim").size().to_dict() == {
        ACCURACY: 4, INDEPENDENCE: 2, IDENTITY_FIT: 1, COST: 2
    }  # fmt: skip
    assert found["numbers"].notna().all() and not found["numbers"].str.contains("missing").any()
    reported = _readme_findings("laptop")
    assert found.set_index(["claim", "case"])["result"].to_dict() == reported
