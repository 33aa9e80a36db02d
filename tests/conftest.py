"""Fixtures shared by the test modules."""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def copy_workflow():
    """Copy the workflow (Snakefile, config, rules, package, envs, profiles) to a folder.

    A copy, so that a test can edit the code or config: the workflow imports the package
    from the src/ beside its Snakefile. Returns the folder.
    """

    def copy(path: Path) -> Path:
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        for name in ("workflow", "src", "envs", "slurm", "profiles"):
            shutil.copytree(ROOT / name, path / name, ignore=ignore)
        for name in ("Snakefile", "config.yaml"):
            shutil.copy(ROOT / name, path / name)
        return path

    return copy
