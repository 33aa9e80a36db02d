"""What a run is and how it executes: the settings layer, importing neither JAX nor NetKet.

One place for each decision about a run's settings:

* the allowed names (:data:`ATTENTIONS`, :data:`SR_MODES`, :data:`DEVICES`,
  :data:`NETWORK_DTYPES`);
* :class:`RunConfig` (what a run computes: its fields name its directory) and
  :class:`RunOptions` (how it executes), each validated once, at the edge, by
  ``validate()``; errors name the field (:class:`ConfigError`), the command line and
  the workflow add their own wording (:meth:`ConfigError.flagged`);
* the paper's model (:data:`PAPER_MODEL`, and the defaults of :class:`RunConfig`);
* one way from a table row to a run (:meth:`RunConfig.from_row`) and the columns of
  the run tables (:data:`RUN_COLUMNS`);
* the parameter count of the ViT in closed form (:func:`n_parameters`).

The tables, findings, figures and the workflow import this module, never NetKet or JAX.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import numbers
import re
import textwrap
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

ATTENTIONS = ("t5", "decoupled", "factored")
"""Attention mechanisms of the ViT (:class:`vitnqs.models.ViT`)."""
SR_MODES = ("explicit", "symmetric", "onthefly")
"""How the SR kernel is built:

* ``explicit``: NetKet's ``VMC_SR(on_the_fly=False)``, the dense ``2M x P`` Jacobian
  ``O`` is centred, scaled and ``O O^T`` formed by one matrix product;
* ``symmetric``: the uncentred Jacobian, the kernel from its upper block triangle and
  centred afterwards (:class:`vitnqs.sr.KernelSR`: the same update, fewer operations
  and one Jacobian in memory; one device only);
* ``onthefly``: NetKet's ``VMC_SR(on_the_fly=True)``, the kernel is contracted from
  per-chunk Jacobians without storing the whole one.
"""
SR_MODE_CHOICES = ("auto", *SR_MODES)
"""Allowed ``sr_mode`` settings: ``auto`` is resolved by :func:`vitnqs.plan.plan_run`."""
DEVICES = ("gpu", "cpu", "auto")
"""Allowed device settings: ``gpu`` requires a GPU backend, ``cpu`` runs on the CPU even
where GPUs are allocated, ``auto`` takes what JAX finds but refuses a GPU allocation that
JAX cannot use (:mod:`vitnqs.devices`)."""
LOCAL_ENERGY_MODES = ("compact", "padded")
"""How local energies evaluate the network (:func:`vitnqs.physics.j1j2_hamiltonian`):
``compact`` only on the configurations with a non-zero matrix element
(:mod:`vitnqs.local_energy`), ``padded`` on NetKet's padded connections (every bond)."""
NETWORK_DTYPES = ("float64", "float32")
"""Allowed arithmetic of the network (see :attr:`RunOptions.network_dtype`)."""
RESULTS_VERSION = 3
"""Version of what a run computes (the model, the Hamiltonian, the optimizer, the final
evaluation). Raise it with every change that changes a run's numbers beyond rounding:
runs record it in ``summary.json`` and the tables flag runs made by an older one. It is
not a run setting: it never renames a run directory. 1: runs before it was recorded;
3: the final evaluation's variance from the tail probe, with uncertainties
(:func:`vitnqs.evaluation.evaluate`)."""
PAPER_MODEL = {"d": 60, "heads": 10, "b": 2, "layers": 4}
"""The paper's ViT (Table 1): embedding dimension, heads, patch size, encoder blocks."""
J2_MAX = 10.0
"""Largest J2 accepted (J1 = 1 sets the scale): the exact diagonalization and the
literature's references cover the frustrated range around 0.5; far beyond it the
Lanczos solver of the reference overflows (J2 = 1e308)."""
MAX_SEED = 2**63 - 1
"""Largest seed: JAX's and NumPy's seeds are 64-bit integers (``2**63`` overflows)."""
MIN_SAMPLES = 16
"""Fewest samples (= Markov chains) per step: below it an error bar from the chains means
nothing (with 1 or 2 samples the variance is 0 and the error NaN)."""


FLAGS = {"reference_file": "--reference"}
"""Command-line flags not spelled like their fields."""


class FieldError(Exception):
    """An error about one setting; ``field`` names it (``L/b`` for a pair)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message

    def flagged(self) -> str:
        """The message with command-line flags: ``--diag-shift: ...``, ``--L/--b: ...``."""
        flags = "/".join(
            FLAGS.get(name, f"--{name.replace('_', '-')}") for name in self.field.split("/")
        )
        return f"{flags}: {self.message}"


class ConfigError(FieldError, ValueError):
    """A setting is out of range."""


def validate_architecture(attention: str, L: int, layers: int, d: int, heads: int, b: int) -> None:
    """Raise :class:`ConfigError` naming the offending field if the ViT cannot be built.

    Args:
        attention: one of :data:`ATTENTIONS`.
        L: linear lattice size.
        layers: number of encoder blocks.
        d: embedding dimension.
        heads: number of attention heads.
        b: linear patch size.

    """
    if attention not in ATTENTIONS:
        raise ConfigError(
            "attention", f"unknown attention {attention!r}; allowed: {', '.join(ATTENTIONS)}"
        )
    for name, value in (("L", L), ("layers", layers), ("d", d), ("heads", heads), ("b", b)):
        if not _is_int(value) or value < 1:
            raise ConfigError(name, f"must be a positive integer (got {value!r})")
    if L % b:
        raise ConfigError("L/b", f"L={L} is not divisible by the patch size b={b}")
    if L % 2:
        raise ConfigError("L", f"{L} x {L} = {L * L} sites cannot hold total Sz = 0; use an even L")
    if d % heads:
        raise ConfigError("d/heads", f"d={d} is not divisible by heads={heads}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines one optimization run (defaults: the paper's).

    The fields, in order, are the columns of the run tables and name the run's directory
    (:func:`run_name`); the stability options after ``seed`` (off by default,
    :mod:`vitnqs.stability`) name it only when they are set.
    """

    attention: str
    """attention mechanism"""
    L: int
    """linear lattice size"""
    J2: float
    """next-nearest-neighbour coupling, J1 = 1 (>= 0)"""
    layers: int
    """number of encoder blocks"""
    d: int = PAPER_MODEL["d"]
    """embedding dimension"""
    heads: int = PAPER_MODEL["heads"]
    """attention heads"""
    b: int = PAPER_MODEL["b"]
    """linear patch size"""
    samples: int = 6000
    """Monte Carlo samples per step (= Markov chains, one sample each)"""
    steps: int = 5000
    """optimization steps"""
    lr: float = 0.03
    """initial learning rate tau0, cosine decay to 0 over the steps"""
    diag_shift: float = 1e-4
    """diagonal shift of the SR kernel"""
    seed: int = 0
    """seed of the parameter initialization and of the sampler"""
    max_update: float = 0.0
    """bounded SR step: largest predicted change of log psi per step, ||O lr dθ||^2 / M
    (0: no bound)"""
    jump_remedies: int = 0
    """times a run that jumps returns to its best state with half the step (0: none)"""
    collapse_remedies: int = 0
    """times a collapsing run (acceptance < 0.1) takes 4x more samples per step (0: none)"""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        validate_architecture(self.attention, self.L, self.layers, self.d, self.heads, self.b)
        checks = [
            (
                "samples",
                self.samples,
                _is_int(self.samples) and self.samples >= MIN_SAMPLES,
                f">= {MIN_SAMPLES} (one sample per Markov chain; fewer give no error bar)",
            ),
            ("steps", self.steps, _is_int(self.steps) and self.steps > 0, "> 0"),
            ("lr", self.lr, _is_finite(self.lr) and self.lr > 0, "finite and > 0"),
            (
                "diag_shift",
                self.diag_shift,
                _is_finite(self.diag_shift) and self.diag_shift > 0,
                "finite and > 0",
            ),
            (
                "J2",
                self.J2,
                _is_finite(self.J2) and 0 <= self.J2 <= J2_MAX,
                f"between 0 and {J2_MAX:g} (J1 = 1)",
            ),
            (
                "seed",
                self.seed,
                _is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
                f"an integer from 0 to 2**63 - 1 = {MAX_SEED}",
            ),
        ]
        checks += [
            (
                "max_update",
                self.max_update,
                _is_finite(self.max_update) and self.max_update >= 0,
                "finite and >= 0 (0: no bound)",
            ),
            *(
                (name, getattr(self, name), _is_int(getattr(self, name)) and
                 0 <= getattr(self, name) <= MAX_REMEDIES, f"an integer from 0 to {MAX_REMEDIES}")
                for name in ("jump_remedies", "collapse_remedies")
            ),
        ]  # fmt: skip
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(name, f"must be {allowed} (got {value!r})")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunConfig:
        """The run of a table row, every field cast to its type.

        Args:
            row: a dict or a pandas row (numpy scalars, or the strings of a directory
                name); a setting it lacks takes its default, except the named ones.

        """
        types = {"str": str, "int": int, "float": float}
        return cls(
            **{
                f.name: types[f.type](row[f.name])
                for f in dataclasses.fields(cls)
                if f.name in NAMED_ALWAYS or _present(row, f.name)
            }
        )

    @classmethod
    def from_name(cls, name: str) -> RunConfig:
        """The run of a directory name of :func:`run_name`.

        Raises:
            ConfigError: naming ``run`` when the name is not one of a run.

        """
        fields = "|".join(f.name for f in dataclasses.fields(cls))
        pairs = dict(re.findall(rf"(?:^|_)({fields})~([^_]+)", name))
        try:
            config = cls.from_row(pairs)
        except (KeyError, ValueError) as error:
            raise ConfigError("run", f"{name!r} is not a run directory's name ({error})") from None
        if run_name(config) != name:
            raise ConfigError("run", f"{name!r} is not a run directory's name")
        return config

    @property
    def n_sites(self) -> int:
        """Number of lattice sites."""
        return self.L * self.L

    @property
    def n_parameters(self) -> int:
        """Real parameters of the run's ViT (:func:`n_parameters`)."""
        return n_parameters(self.attention, self.L, self.layers, self.d, self.heads, self.b)


RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(RunConfig))
"""The settings that identify a run (and name its directory), in order."""
NAMED_ALWAYS = RUN_COLUMNS[: RUN_COLUMNS.index("seed") + 1]
"""The settings every run directory's name spells; the others only when not at their
default, so that adding a setting renames no existing run."""
MAX_REMEDIES = 3
"""Most in-run remedies of one kind a run may be allowed (:mod:`vitnqs.stability`)."""


def _present(row: Mapping[str, Any], name: str) -> bool:
    """Whether a table row holds a value for ``name`` (older tables lack newer settings)."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return False
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def named_settings(config: RunConfig) -> dict[str, Any]:
    """The settings a run's name spells, and its job's command line passes.

    :data:`NAMED_ALWAYS`, then the others that differ from their default.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    return {
        name: getattr(config, name)
        for name in RUN_COLUMNS
        if name in NAMED_ALWAYS or getattr(config, name) != defaults[name]
    }


def run_name(config: RunConfig) -> str:
    """The name of a run's directory: ``attention~t5_L~6_J2~0.5_..._seed~0``.

    Its :func:`named_settings` as ``name~value``, values as Python prints them (the names
    Snakemake's ``Paramspace`` gave the runs of earlier versions).
    """
    return "_".join(f"{name}~{value}" for name, value in named_settings(config).items())


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to execute a run; none of these change the result beyond rounding."""

    chunk_size: int | None = None
    """samples per forward/backward chunk, a memory bound (default: no chunking)"""
    checkpoint_every: int | None = None
    """steps between checkpoints (default: about every 5 minutes)"""
    progress: bool = True
    """print progress on stderr"""
    sr_mode: str = "auto"
    """how the SR kernel is built (auto: the fastest that fits the device's memory)"""
    network_dtype: str = "float64"
    """arithmetic of the network; parameters, kernel and solve stay float64"""
    local_energy: str = "compact"
    """compact: evaluate the network only where the Hamiltonian's element is non-zero;
    padded: on NetKet's padded connections (the same energies to rounding)"""
    reference_file: Path | None = None
    """reference-energy JSON of `vitnqs reference` (default: computed here)"""
    device: str = "auto"
    """gpu: require a GPU; cpu: run on the CPU even where GPUs are allocated; auto: what
    JAX finds, but refuse a SLURM GPU allocation that JAX cannot use"""
    n_devices: int = 1
    """devices to shard the samples over: the GPUs of the job, or with device cpu virtual
    CPU devices"""
    gpu_memory_gb: float | None = None
    """memory of one GPU: refuse a run whose estimate exceeds it, and size the SR mode
    for it (default: what the device reports)"""

    def validate(self, config: RunConfig | None = None) -> None:
        """Raise :class:`ConfigError` naming the first invalid field.

        Args:
            config: if given, also check that its samples split evenly over the devices
                and into chunks (NetKet shards the chains over the devices, then chunks
                each device's samples).

        """
        for name in ("chunk_size", "checkpoint_every", "n_devices"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(name, f"must be a positive integer (got {value!r})")
        for name, allowed in (
            ("network_dtype", NETWORK_DTYPES),
            ("sr_mode", SR_MODE_CHOICES),
            ("local_energy", LOCAL_ENERGY_MODES),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    name, f"must be one of {', '.join(allowed)} (got {getattr(self, name)!r})"
                )
        memory = self.gpu_memory_gb
        if memory is not None and not (_is_finite(memory) and memory > 0):
            raise ConfigError("gpu_memory_gb", f"must be finite and > 0 (got {memory!r})")
        if config is None:
            return
        if self.reference_file is not None:
            read_reference_file(self.reference_file, config)
        if config.samples % self.n_devices:
            raise ConfigError(
                "samples/n_devices",
                f"{config.samples} samples do not split evenly over {self.n_devices} devices "
                f"(gpus_per_run); use a multiple of {self.n_devices}",
            )
        per_device = config.samples // self.n_devices
        if self.chunk_size is not None and self.chunk_size < per_device:
            if per_device % self.chunk_size:
                raise ConfigError(
                    "chunk_size",
                    f"{self.chunk_size} does not divide the {per_device} samples per device "
                    f"({config.samples} samples over {self.n_devices} device(s)); use a "
                    "divisor of it",
                )


REFERENCE_KEYS = ("L", "J2", "energy")
"""Keys every reference file holds (``vitnqs reference``); with an energy also
``uncertainty``, ``kind`` and ``source``."""


def read_reference_file(path: Path, config: RunConfig) -> dict[str, Any]:
    """The record of a reference-energy file (``vitnqs reference``), checked against a run.

    Raises:
        ConfigError: naming ``reference_file`` when the file cannot be read, is not such a
            record, or is for another lattice or J2.

    """
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ConfigError("reference_file", f"cannot read {path}: {error}") from None
    keys = REFERENCE_KEYS
    if isinstance(record, dict) and record.get("energy") is not None:
        keys = (*keys, "uncertainty", "kind", "source")
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise ConfigError(
            "reference_file",
            f"{path} is not a reference file of `vitnqs reference` (missing {', '.join(missing)})",
        )
    if (
        record["L"] != config.L
        or not _is_finite(record["J2"])
        or abs(record["J2"] - config.J2) > 1e-12
    ):
        raise ConfigError(
            "reference_file",
            f"{path} is for L={record['L']}, J2={record['J2']}, not L={config.L}, J2={config.J2}",
        )
    energy = record["energy"]
    if energy is not None and not (_is_finite(energy) and _is_finite(record["uncertainty"])):
        raise ConfigError(
            "reference_file", f"{path}: the energy and its uncertainty must be numbers"
        )
    return record


@cache
def field_help(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass, by field: the command line's help texts."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    helps = {}
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            helps[node.target.id] = " ".join(after.value.value.split())
    return helps


FIELD_CHOICES = {
    "attention": ATTENTIONS,
    "sr_mode": SR_MODE_CHOICES,
    "network_dtype": NETWORK_DTYPES,
    "local_energy": LOCAL_ENERGY_MODES,
    "device": DEVICES,
}
"""The fields whose values are names, and the names they allow."""


def n_parameters(attention: str, L: int, layers: int, d: int, heads: int, b: int) -> int:
    """Real parameters of :class:`vitnqs.models.ViT`, in closed form.

    Embedding ``b^2 d + d``; per encoder block two layer norms ``4d``, the value and
    output projections ``2 (d^2 + d)``, for T5 and Decoupled also the query and key
    projections ``2 (d^2 + d)``, the positional vector ``heads n`` (``n = (L/b)^2``
    patches), the MLP ``8 d^2 + 5 d``; the output head three layer norms ``6d`` and
    two dense layers ``2 (d^2 + d)``. ``tests/test_models.py`` checks it against the
    shapes flax builds, for every attention.
    """
    n = (L // b) ** 2
    projections = 2 if attention == "factored" else 4
    block = 4 * d + projections * (d * d + d) + heads * n + 8 * d * d + 5 * d
    return b * b * d + d + layers * block + 6 * d + 2 * (d * d + d)
