"""The package's layers: the figures, tables and findings load neither JAX, NetKet nor
Snakemake, and no two modules import each other (also through imports inside functions)."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from vitnqs.config import RUN_COLUMNS, RunConfig
from vitnqs.rundir import HISTORY, HISTORY_COLUMNS, SUMMARY
from vitnqs.tables import SUMMARY_FIELDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vitnqs"

HEAVY = ("jax", "jaxlib", "netket", "flax", "snakemake")
"""Packages the commands that only read tables and draw must not load."""

SMALL = {"d": 8, "heads": 2, "samples": 64, "steps": 4, "lr": 0.05, "diag_shift": 0.01}

RUN_COMMANDS = """
import json, sys
from vitnqs.cli import main

HEAVY = {heavy}
loaded, failed = {{}}, {{}}
for command in json.loads(sys.argv[1]):
    before = {{m for m in sys.modules if m.split(".")[0] in HEAVY}}
    rc = main(command)
    name = " ".join(command[:2]) if command[0] == "figure" else command[0]
    if rc:
        failed[name] = rc
    new = sorted({{m for m in sys.modules if m.split(".")[0] in HEAVY}} - before)
    if new:
        loaded[name] = new[:5] + (["..."] if len(new) > 5 else [])
print(json.dumps({{"failed": failed, "loaded": loaded}}))
sys.exit(bool(failed or loaded))
"""


def _runs_and_run_dirs(folder: Path) -> Path:
    """sweeps.csv and one finished run directory per run: summary.json and history.csv."""
    rows = []
    for number, attention in enumerate(("t5", "decoupled", "factored")):
        config = RunConfig(attention=attention, L=6, J2=0.5, layers=1, **SMALL)
        run = f"run{number}"
        rows.append({c: getattr(config, c) for c in RUN_COLUMNS}
                    | {"sweeps": "fig2;fig3;fig4;table1", "run": run})  # fmt: skip
        run_dir = folder / "runs" / run
        run_dir.mkdir(parents=True)
        energy = -0.50 + 0.001 * number
        summary = {field: None for field in SUMMARY_FIELDS} | {
            "config": {c: getattr(config, c) for c in RUN_COLUMNS},
            "n_parameters": config.n_parameters, "energy": energy, "energy_error": 1e-4,
            "energy_variance": 0.02, "reference_energy": -0.50381, "reference_uncertainty": 0.0,
            "reference_kind": "literature", "rel_error": abs((energy + 0.50381) / 0.50381),
            "median_step_time_s": 0.1, "total_time_s": 0.4, "device": "cpu",
            "results_version": 2,
        }  # fmt: skip
        (run_dir / SUMMARY).write_text(json.dumps(summary))
        steps = np.arange(config.steps)
        history = {"step": steps, "energy": energy + 0.1 / (1 + steps), "energy_error": 1e-3,
                   "energy_variance": 0.1, "rel_error": 0.2 / (1 + steps), "acceptance": 0.5,
                   "r_hat": 1.0, "lr": config.lr, "update_scale": 1.0, "time_s": 0.1}  # fmt: skip
        pd.DataFrame(history)[list(HISTORY_COLUMNS)].to_csv(run_dir / HISTORY, index=False)
    sweeps = folder / "sweeps.csv"
    pd.DataFrame(rows).to_csv(sweeps, index=False)
    return sweeps


def _attention_tables(folder: Path) -> tuple[Path, Path]:
    """attention_maps.csv and attention_dependence.csv, as vitnqs.analysis writes them."""
    run = {"L": 6, "J2": 0.5, "layers": 1, "seed": 0}
    i, j = np.divmod(np.arange(81), 9)
    maps, dependence = [], []
    for stage in ("initial", "optimized"):
        for attention, term in (("t5", "alpha_config0"), ("decoupled", "softmax_mean"),
                                ("decoupled", "positional")):  # fmt: skip
            maps.append(pd.DataFrame({"stage": stage, "term": term, "layer": 0, "i": i, "j": j,
                                      "value": 1 / 9, "attention": attention, **run}))  # fmt: skip
        for attention, term in (("t5", "alpha"), ("decoupled", "softmax")):
            value = 0.3 if stage == "initial" else 0.1
            dependence.append({"stage": stage, "term": term, "layer": 0, "attention": attention,
                               "input_dependence": value, **run})  # fmt: skip
    paths = folder / "attention_maps.csv", folder / "attention_dependence.csv"
    pd.concat(maps).to_csv(paths[0], index=False)
    pd.DataFrame(dependence).to_csv(paths[1], index=False)
    return paths


def test_figures_tables_and_findings_load_no_jax_netket_or_snakemake(tmp_path):
    sweeps = _runs_and_run_dirs(tmp_path)
    maps, dependence = _attention_tables(tmp_path)
    runs, history = tmp_path / "runs.csv", tmp_path / "history.csv"
    step_times = tmp_path / "step_times.csv"
    rows = pd.read_csv(sweeps)[list(RUN_COLUMNS)].assign(median_step_time_s=0.1, device="cpu")
    rows.to_csv(step_times, index=False)
    out = {name: tmp_path / name for name in ("table1", "findings.csv", "fig2.pdf", "fig3.pdf",
                                              "fig4.pdf", "fig5.pdf")}  # fmt: skip
    test = ["--scale", "test"]
    commands = [
        ["collect", "--sweeps", sweeps, "--runs-dir", tmp_path / "runs", "--out-runs", runs,
         "--out-history", history],
        ["table1", "--runs", runs, "--step-times", step_times, *test, "--out", out["table1"]],
        ["findings", "--runs", runs, "--dependence", dependence, "--maps", maps, "--step-times",
         step_times, *test, "--out", out["findings.csv"]],
        ["figure", "fig2", "--runs", runs, "--history", history, *test, "--out", out["fig2.pdf"]],
        ["figure", "fig3", "--runs", runs, "--step-times", step_times, "--table1",
         tmp_path / "table1.csv", *test, "--out", out["fig3.pdf"]],
        ["figure", "fig4", "--maps", maps, "--dependence", dependence, *test, "--out",
         out["fig4.pdf"]],
        ["figure", "fig5", *test, "--out", out["fig5.pdf"]],
    ]  # fmt: skip
    commands = [[str(arg) for arg in command] for command in commands]
    src = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-c", RUN_COMMANDS.format(heavy=set(HEAVY)), json.dumps(commands)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"failed": {}, "loaded": {}}, done.stderr[-2000:]
    assert done.returncode == 0
    assert len(pd.read_csv(runs)) == 3 and len(pd.read_csv(history)) == 3 * SMALL["steps"]
    for suffix in (".csv", ".md", ".tex"):
        assert out["table1"].with_suffix(suffix).stat().st_size > 0
    assert len(pd.read_csv(out["findings.csv"])) > 0
    for name in ("fig2", "fig3", "fig4", "fig5"):
        assert out[f"{name}.pdf"].stat().st_size > 0
        assert out[f"{name}.pdf"].with_suffix(".png").stat().st_size > 0


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """Each module of the package: the package's modules it imports, at any depth.

    Imports inside functions count: they close a circle at run time all the same. The
    values map each imported module to where (``file:line``) it is first imported.
    """
    files = {_module_name(path): path for path in sorted(package.rglob("*.py"))}
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        imported = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                # `from vitnqs import files`: the module vitnqs.files, else the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]  # fmt: skip
            for target in targets:
                while target and target not in files:  # `import vitnqs.x.name`: its module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    imported.setdefault(target, where)
        graph[module] = imported
    return graph


def find_circle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """A circle of imports as ``a -> b (where) -> ... -> a``, or ``None``."""
    state = {}  # module -> "open" while on the path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == "open":
                circle = path[path.index(target) :] + [target]
                return [circle[0]] + [
                    f"{b} ({graph[a][b]})" for a, b in zip(circle, circle[1:], strict=False)
                ]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_circle_between_the_package_modules():
    graph = package_imports()
    assert {"vitnqs", "vitnqs.cli", "vitnqs.physics", "vitnqs.local_energy"} <= set(graph)
    # imports inside functions are edges too (cli loads its handlers' modules there)
    assert "vitnqs.optimize" in graph["vitnqs.cli"]
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_find_circle_names_the_circle():
    graph = {"a": {"b": "a.py:3"}, "b": {"c": "b.py:5"}, "c": {"a": "c.py:9"}, "d": {"a": "d:1"}}
    assert find_circle(graph) == ["a", "b (a.py:3)", "c (b.py:5)", "a (c.py:9)"]
    assert find_circle({"a": {"b": "a.py:1"}, "b": {}}) is None


RUN_FILE_NAME = re.compile(
    r"[\"'](summary\.json|history\.csv|params\.msgpack|init_params\.msgpack|"
    r"checkpoint(\.prev)?\.msgpack|run\.lock|divergences\.json|remedies\.json|"
    r"symmetrized\.json|finetuned)[\"'/]"
)


def test_run_directory_file_names_are_spelled_in_one_module():
    """In src/ and workflow/ the run directory's file names are strings of vitnqs.rundir only."""
    spelled = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "workflow").rglob("*.smk"), ROOT / "Snakefile"]:
        if path.name == "rundir.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if RUN_FILE_NAME.search(line):
                spelled.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not spelled, "\n".join(spelled)


def test_one_function_turns_netkets_statistics_into_per_site_values():
    """NetKet's Stats are read (mean, error, variance) in vitnqs.estimates only."""
    reads = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "estimates.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.error_of_mean\b|stats\.variance|stats\.mean\b", line):
                reads.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not reads, "\n".join(reads)
