"""What the README and docs/*.md name exists: files, links, Snakemake rules, commands.

No prose is checked: only repository paths in backticks, relative links (and their
anchors), the rules given to `snakemake` as targets, the `vitnqs` subcommands, and that
the README's test command is the one CI runs.
"""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from vitnqs.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in DOCS]

# Folders of the repository whose files the docs name; generated outputs (results/,
# figures/, plans/) are left out: they exist only after a run.
REPO_DIRS = (".ci", "benchmarks", "docs", "envs", "gpu_check", "profiles", "slurm", "src",
             "studies", "tests", "workflow")  # fmt: skip
REPO_PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(map(re.escape, REPO_DIRS))})/[\w./*<>-]*)")
FENCED = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
GENERATED = ("results/", "figures/", "plans/")

# snakemake options followed by one value, and by values up to the next option
ONE_VALUE = {"--cores", "-c", "--jobs", "-j", "--profile", "--workflow-profile", "--report",
             "--software-deployment-method", "--sdm", "--executor", "-e", "--directory",
             "-d", "--snakefile", "-s"}  # fmt: skip
MANY_VALUES = {"--config", "-C", "--configfile", "--configfiles", "--forcerun", "-R",
               "--default-resources", "--set-resources", "--set-threads", "--until", "-U",
               "--omit-from", "-O", "--allowed-rules"}  # fmt: skip


def _split(path: Path) -> tuple[list[str], list[str], str]:
    """Fenced code blocks, inline code spans, and the prose outside both."""
    text = path.read_text()
    fenced = FENCED.findall(text)
    rest = FENCED.sub("", text)
    inline = [" ".join(span.split()) for span in INLINE.findall(rest)]
    return fenced, inline, INLINE.sub("", rest)


def _code(path: Path) -> list[str]:
    fenced, inline, _ = _split(path)
    return fenced + inline


def _commands(path: Path, program: str) -> list[list[str]]:
    """Every command line of `program` in the code of a page, as tokens."""
    found = []
    for code in _code(path):
        for line in code.splitlines():
            line = re.sub(r"(^|\s)#.*", "", line)
            for part in re.split(r"&&|\|\||;|\|", line):
                try:
                    tokens = shlex.split(part)
                except ValueError:
                    tokens = part.split()
                if tokens and tokens[0] == program:
                    found.append(tokens[1:])
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCED.sub("", path.read_text())
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _rules() -> set[str]:
    sources = [ROOT / "Snakefile", *(ROOT / "workflow/rules").glob("*.smk")]
    return {m for p in sources for m in re.findall(r"^rule (\w+):", p.read_text(), flags=re.M)}


@pytest.mark.parametrize("page", DOCS, ids=IDS)
def test_repository_paths_exist(page):
    missing = []
    for code in _code(page):
        for path in REPO_PATH.findall(code):
            path = path.rstrip(".")
            if "<" in path:  # a placeholder: results/runs/<run>/
                continue
            if "*" in path:
                exists = any(ROOT.glob(path.rstrip("/")))
            else:
                exists = (ROOT / path).exists()
            if not exists:
                missing.append(path)
    assert not missing, f"{page.name} names paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", DOCS, ids=IDS)
def test_relative_links_resolve(page):
    _, _, prose = _split(page)
    broken = []
    for link in LINK.findall(prose):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not file.exists():
            broken.append(link)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(link)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", DOCS, ids=IDS)
def test_snakemake_targets_exist(page):
    rules, missing = _rules(), []
    for tokens in _commands(page, "snakemake"):
        targets, values = [], None
        for token in tokens:
            if token.startswith("-"):
                values = 1 if token in ONE_VALUE else "many" if token in MANY_VALUES else None
            elif values == 1:
                values = None
            elif values is None:
                targets.append(token)
        for target in targets:
            if target.startswith(GENERATED) or target == "...":
                continue
            if "/" in target or "." in target:
                if not (ROOT / target).exists():
                    missing.append(target)
            elif target not in rules:
                missing.append(target)
    assert not missing, f"{page.name}: snakemake targets that are no rule or file: {missing}"


def _subcommands() -> set[str]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


@pytest.mark.parametrize("page", DOCS, ids=IDS)
def test_vitnqs_subcommands_exist(page):
    named = set()
    for code in _code(page):
        named |= set(re.findall(r"(?<![\w./-])vitnqs ([a-z][\w-]*)", code))
    unknown = named - _subcommands()
    assert not unknown, f"{page.name} names vitnqs commands that do not exist: {unknown}"


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    (command,) = [line for line in ci if line.endswith("&& pytest")]
    fenced, _, _ = _split(ROOT / "README.md")
    lines = [line.strip() for block in fenced for line in block.splitlines()]
    assert command in lines
