"""The settings layer: no JAX where figures and tables are made, one set of names, finite values."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vitnqs import config as settings
from vitnqs.config import ConfigError, RunConfig, RunOptions
from vitnqs.sweeps import runs_table

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_figures_tables_and_the_command_line_import_no_jax():
    code = (
        "import sys, vitnqs.plots, vitnqs.tables, vitnqs.findings, vitnqs.sweeps, vitnqs.plan, "
        "vitnqs.cli; from vitnqs.cli import build_parser; build_parser(); "
        "assert 'jax' not in sys.modules and 'netket' not in sys.modules, 'jax imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vitnqs", "optimize", "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "--diag-shift" in helped.stdout
    assert " jax" not in helped.stderr  # -X importtime lists every imported module


def test_the_schema_allows_the_names_the_package_allows():
    schema = yaml.safe_load(Path(SCHEMA).read_text())["$defs"]
    assert tuple(schema["sweep"]["properties"]["attention"]["items"]["enum"]) == (
        settings.ATTENTIONS
    )
    assert tuple(schema["preset"]["properties"]["device"]["enum"]) == settings.DEVICES
    modes = schema["benchmark"]["properties"]["sr_modes"]["items"]["enum"]
    assert tuple(modes) == settings.SR_MODES


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("field", ["lr", "diag_shift"])
def test_non_finite_settings_are_refused_naming_the_field(field, value):
    config = copy.deepcopy(CONFIG)
    config["presets"]["quick"]["hyperparameters"][field] = value
    expected = f"{field}: must be finite" if math.isnan(value) else "(maximum|minimum) of"
    with pytest.raises((WorkflowError, ConfigError), match=expected):
        validate(copy.deepcopy(config), SCHEMA)
        runs_table(config)  # NaN passes a schema's comparisons: the package refuses it
    with pytest.raises(ConfigError, match=f"{field}: must be finite and > 0"):
        RunConfig("factored", 4, 0.0, 1, **{field: value}).validate()


def test_gpu_memory_must_be_finite():
    with pytest.raises(ConfigError, match=r"gpu_memory_gb: must be finite and > 0 \(got inf\)"):
        RunOptions(gpu_memory_gb=math.inf).validate()


def test_a_table_row_becomes_a_run_one_way():
    row = {"attention": "t5", "L": 6.0, "J2": "0.5", "layers": 4, "d": 60, "heads": 10, "b": 2,
           "samples": 6000, "steps": 5000, "lr": 0.03, "diag_shift": 1e-4, "seed": 0}  # fmt: skip
    run = RunConfig.from_row(row)
    assert run == RunConfig("t5", 6, 0.5, 4) and isinstance(run.L, int)
    assert settings.NAMED_ALWAYS == tuple(row)  # a row of older code: the rest default
    assert settings.RUN_COLUMNS == (*row, "max_update", "jump_remedies", "collapse_remedies")
    assert run.n_parameters == 184_260  # issue 9's count of the paper's T5 model at L = 6


def test_errors_name_fields_and_the_command_line_adds_flags():
    with pytest.raises(ConfigError) as caught:
        RunConfig("t5", 5, 0.0, 1).validate()
    assert str(caught.value) == "L/b: L=5 is not divisible by the patch size b=2"
    assert caught.value.flagged() == "--L/--b: L=5 is not divisible by the patch size b=2"
    assert ConfigError("reference_file", "x").flagged() == "--reference: x"


def test_the_schema_defaults_are_the_packages():
    from vitnqs.plan import PILOT_STEPS

    schema = yaml.safe_load(Path(SCHEMA).read_text())["properties"]
    assert schema["pilot_steps"]["default"] == PILOT_STEPS


def test_the_schema_holds_the_limits_of_the_run_settings():
    """The config schema refuses what RunConfig refuses: one set of limits."""
    import yaml

    from vitnqs.config import J2_MAX, MAX_SEED, MIN_SAMPLES

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    defs = schema["$defs"]
    assert defs["seeds"]["items"]["maximum"] == MAX_SEED
    assert defs["hyperparameters"]["properties"]["samples"]["minimum"] == MIN_SAMPLES
    assert defs["sweep"]["properties"]["J2"]["items"]["maximum"] == J2_MAX
    assert defs["sweep"]["properties"]["L"]["items"]["multipleOf"] == 2
