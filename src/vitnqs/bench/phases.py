"""Where an optimization step's time goes: phases, operation counts, rates and memory.

One SR step of :func:`vitnqs.loop.build_driver`'s driver is split into the phases
of :data:`PHASES`, each run and timed on its own with NetKet's own functions (the
ones ``VMC_SR`` calls), so that their sum is the step and each can be compared with
the machine's ceiling: a large float64 matrix product through JAX, measured in the
same process (:func:`matmul_ceiling`). :func:`split_error` measures how closely the
phases reproduce the driver's own parameter update. Operation counts
(``docs/performance.md`` derives them) come from :func:`forward_flops` and
:func:`phase_flops`.

Run it with ``python -m vitnqs benchmark`` (``--help``); every :class:`Case` runs in
a child process, so that its peak memory is its own. The local energies of both modes
are also timed on the same samples (:func:`vitnqs.bench.local_energy.measure_modes`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitnqs import measure
from vitnqs.bench.local_energy import measure_modes
from vitnqs.config import RunConfig, RunOptions
from vitnqs.loop import build_driver
from vitnqs.plan import plan_run
from vitnqs.sr import kernel_blocks

PHASES = ("sampling", "local_energies", "jacobian", "kernel_solve", "update")
"""The phases of one SR step, in order.

* ``sampling``: one Metropolis sweep (``L*L`` proposals) of every chain;
* ``local_energies``: ``E_loc`` of every sample (the network on all connected
  configurations: padded to the operator's ``max_conn_size``, or in the ``compact``
  mode only those with a non-zero element, :mod:`vitnqs.local_energy`);
* ``jacobian``: the ``2M x P`` Jacobian of ``log psi`` (centred by NetKet in the
  ``explicit`` mode, uncentred in ``symmetric``; none in ``onthefly``);
* ``kernel_solve``: the ``2M x 2M`` kernel ``O O^T``, its shifted Cholesky solve and
  the update ``O^T y`` (in on-the-fly mode also the Jacobian blocks it contracts);
* ``update``: the optax step applied to the parameters.
"""


def forward_flops(attention: str, L: int, layers: int, d: int, heads: int, b: int) -> float:
    """Floating-point operations of one forward pass on one configuration.

    Matrix products only (a multiply-add counts 2); layer norms, softmax, GELU and
    log cosh add ``O(n d)`` per layer, a few percent. With ``n = (L/b)^2`` patches:
    embedding ``2 n b^2 d``; per block the value and output projections ``4 n d^2``,
    the MLP ``16 n d^2``, the mixing ``alpha V`` ``2 n^2 d``, and for T5/Decoupled the
    query and key projections ``4 n d^2`` and the logits ``2 n^2 d``; the head
    ``4 d^2``. (``heads`` does not enter: the heads split ``d``.)
    """
    del heads
    n = (L // b) ** 2
    per_block = 20 * n * d**2 + 2 * n**2 * d
    if attention != "factored":
        per_block += 4 * n * d**2 + 2 * n**2 * d
    return float(2 * n * b * b * d + layers * per_block + 4 * d**2)


def phase_flops(
    forward: float, samples: int, n_sites: int, max_conn: int, n_parameters: int, mode: str
) -> dict[str, float]:
    """Operation count of each phase (see ``docs/performance.md``).

    Args:
        forward: :func:`forward_flops`.
        samples: ``M``, Monte Carlo samples (= chains).
        n_sites: ``N = L^2``, Metropolis proposals per sweep.
        max_conn: network evaluations per sample of the local energies, as evaluated
            (padded: the operator's ``max_conn_size``; compact: samples plus slots).
        n_parameters: ``P``.
        mode: one of :data:`vitnqs.resources.SR_MODES`.

    """
    M, P = samples, n_parameters
    # reverse mode costs about twice the forward pass; the complex log psi needs two
    # cotangents (real and imaginary part) after one forward pass
    jacobian = 5 * forward * M
    product = 2 * (2 * M) ** 2 * P
    if mode == "symmetric":
        blocks = kernel_blocks(M)
        product *= (blocks + 1) / (2 * blocks)
    kernel = product + (2 * M) ** 3 / 3 + 2 * (2 * M) * P  # + Cholesky + O^T y
    return {
        "sampling": forward * M * n_sites,
        "local_energies": forward * M * max_conn,
        "jacobian": 0.0 if mode == "onthefly" else jacobian,
        "kernel_solve": kernel + jacobian if mode == "onthefly" else kernel,
        "update": 2.0 * P,
    }


def matmul_ceiling(size: int | None = None, repeats: int = 5) -> dict[str, float]:
    """Measured float64 matrix-product rate of the default JAX device, in GFLOP/s.

    Args:
        size: side of the square matrices (default 2048 on a CPU, 8192 elsewhere).
        repeats: timed products after one warm-up; the median is returned.

    """
    platform = jax.devices()[0].platform
    n = size or (2048 if platform == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float64)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float64)
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    times = [measure.timed(lambda: product(a, b)).wall_s for _ in range(repeats)]
    return {"matmul_size": n, "matmul_gflops": 2 * n**3 / statistics.median(times) / 1e9}


def _timed(function: Callable[[], Any], cpu: dict[str, float] | None = None, key: str = ""):
    """``(result, wall seconds)`` of a call (:func:`vitnqs.measure.timed`).

    Its process CPU seconds, the steadier measure where other jobs share the cores, go
    to ``cpu[key]``.
    """
    timing = measure.timed(function)
    if cpu is not None:
        cpu[key] = timing.cpu_s
    return timing.result, timing.wall_s


class PhaseRunner:
    """The phases of one SR step of ``driver``, each a separately compiled function.

    The Jacobian and kernel phases are timed for each of ``modes`` on the same samples
    and local energies; the parameters are updated with the first mode's result.
    """

    def __init__(self, driver, modes: Sequence[str]):
        from netket import jax as nkjax
        from netket._src.ngd.sr_srt_common import _prepare_input
        from netket._src.ngd.srt import _compute_srt_update
        from netket._src.ngd.srt_onthefly import srt_onthefly

        from vitnqs import sr

        self.driver, self.modes = driver, tuple(modes)
        self.failed: dict[str, str] = {}
        state = driver.state
        structure = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.parameters
        )
        apply_fun, mode, solver = state._apply_fun, driver.mode, driver._linear_solver
        chunk = driver.chunk_size_bwd
        unravel = jax.flatten_util.ravel_pytree(state.parameters)[1]

        # explicit: the calls VMC_SR.compute_loss_and_update makes, with its arguments
        @jax.jit
        def explicit_jacobian(params, model_state, samples):
            return nkjax.jacobian(
                apply_fun, params, samples, model_state,
                mode=mode, dense=True, center=True, chunk_size=chunk,
            )  # fmt: skip

        @jax.jit
        def explicit_kernel(jacobian, local_energies, diag_shift):
            O_L, dv = _prepare_input(
                jacobian, local_energies, mode=mode, scaling_factor=1 / local_energies.size
            )
            updates, _, _ = _compute_srt_update(
                O_L, dv, diag_shift=diag_shift, solver_fn=solver, mode=mode,
                params_structure=structure,
            )  # fmt: skip
            return unravel(updates)

        # symmetric: vitnqs.sr.KernelSR's
        @jax.jit
        def symmetric_kernel(jacobian, local_energies, diag_shift):
            updates, _ = sr.kernel_solve(
                jacobian, local_energies, diag_shift=diag_shift, solver_fn=solver,
                blocks=kernel_blocks(local_energies.size),
            )  # fmt: skip
            return unravel(updates)

        self._jacobians = {
            "explicit": explicit_jacobian,
            "symmetric": jax.jit(partial(sr.jacobian, apply_fun, chunk_size=chunk)),
        }
        self._kernels = {"explicit": explicit_kernel, "symmetric": symmetric_kernel}
        self._onthefly = partial(srt_onthefly, apply_fun, solver_fn=solver, mode=mode,
                                 chunk_size=chunk)  # fmt: skip

    def _diag_shift(self) -> float:
        shift = self.driver.diag_shift
        return shift(self.driver.step_count) if callable(shift) else shift

    def step(self, sample: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
        """One SR step phase by phase: wall time of each, and each mode's update.

        ``sample=False`` keeps the state's current samples (sampling time 0).

        Keys of the times: ``sampling``, ``local_energies``, ``update``, and
        ``jacobian:<mode>`` and ``kernel_solve:<mode>`` for each mode.
        """
        driver, state = self.driver, self.driver.state
        times, updates = {}, {}
        self.cpu = cpu = {"sampling": 0.0}
        if sample:
            _, times["sampling"] = _timed(state.sample, cpu, "sampling")
        else:
            times["sampling"] = 0.0
        e_loc, times["local_energies"] = _timed(
            lambda: state.local_estimators(driver._ham), cpu, "local_energies"
        )
        samples = jax.lax.collapse(state.samples, 0, state.samples.ndim - 1)
        for mode in self.modes:
            try:
                updates[mode] = self._sr_phases(mode, e_loc, samples, times)
            except Exception as error:  # out of memory, say: report it, time the other modes
                self.failed[mode] = f"{type(error).__name__}: {str(error)[:300]}"
                print(f"[vitnqs benchmark] {mode} failed: {self.failed[mode]}", file=sys.stderr)
        self.modes = tuple(mode for mode in self.modes if mode not in self.failed)
        if self.modes:
            _, times["update"] = _timed(
                lambda: self._apply(updates[self.modes[0]]), self.cpu, "update"
            )
        return times, updates

    def _sr_phases(self, mode: str, e_loc, samples, times: dict[str, float]):
        """The Jacobian and kernel phases of one mode; returns its update."""
        params, model_state = self.driver.state.parameters, self.driver.state.model_state
        if mode == "onthefly":
            times["jacobian:onthefly"] = self.cpu["jacobian:onthefly"] = 0.0
            result, times["kernel_solve:onthefly"] = _timed(
                lambda: self._onthefly(
                    e_loc, params, model_state, samples, diag_shift=self._diag_shift()
                ),
                self.cpu,
                "kernel_solve:onthefly",
            )
            return result[0]
        jacobian, times[f"jacobian:{mode}"] = _timed(
            lambda: self._jacobians[mode](params, model_state, samples),
            self.cpu,
            f"jacobian:{mode}",
        )
        update, times[f"kernel_solve:{mode}"] = _timed(
            lambda: self._kernels[mode](jacobian, e_loc, self._diag_shift()),
            self.cpu,
            f"kernel_solve:{mode}",
        )
        return update

    def _apply(self, dp):
        self.driver.update_parameters(dp)
        self.driver._step_count += 1  # the learning-rate schedule follows the step
        return self.driver.state.parameters


def split_error(driver, modes: Sequence[str]) -> dict[str, float]:
    """Relative difference between each mode's phase-by-phase update and the driver's own.

    All start from the same samples; values at rounding level show that the phases
    compute what the driver computes.
    """
    state = driver.state
    state.sample()
    _, reference = driver.compute_loss_and_update()
    _, updates = PhaseRunner(driver, modes).step(sample=False)
    flat = jax.flatten_util.ravel_pytree
    b = flat(reference)[0]
    return {
        mode: float(jnp.linalg.norm(flat(update)[0] - b) / jnp.linalg.norm(b))
        for mode, update in updates.items()
    }


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark process: a run's driver, and the SR modes whose phases are timed."""

    config: RunConfig
    """the run whose steps are timed (its ``steps`` only set the learning-rate schedule)"""
    options: RunOptions
    """how it executes: chunk size, network dtype, the driver's local energies (both
    modes' phase is also timed on the same samples); ``sr_mode`` is the driver's, the
    first of :attr:`sr_modes`"""
    sr_modes: tuple[str, ...]
    """the SR modes whose Jacobian and kernel phases are timed on the same samples"""
    steps: int = 3
    """timed steps after one warm-up step"""
    time_driver: bool = True
    """also time the driver's own fused step in the first mode (one more compilation)"""

    def __post_init__(self):
        if not self.sr_modes or self.sr_modes[0] != self.options.sr_mode:
            raise ValueError(
                f"the first SR mode {self.sr_modes[:1]} must be the driver's, "
                f"options.sr_mode={self.options.sr_mode!r}"
            )

    def record(self) -> dict[str, Any]:
        """The case in a result (``case``); all but ``sr_modes`` lead the benchmark's rows."""
        config, options = self.config, self.options
        return {
            "attention": config.attention, "L": config.L, "sr_modes": list(self.sr_modes),
            "samples": config.samples, "chunk_size": options.chunk_size,
            "layers": config.layers, "d": config.d, "heads": config.heads, "b": config.b,
            "J2": config.J2, "network_dtype": options.network_dtype,
            "local_energy": options.local_energy, "steps": self.steps,
            "time_driver": self.time_driver,
        }  # fmt: skip

    def to_json(self) -> str:
        """The case as JSON, for its child process (:func:`child_main`)."""
        return json.dumps(dataclasses.asdict(self), default=str)  # a reference file's path

    @classmethod
    def from_json(cls, text: str) -> Case:
        """The case of :meth:`to_json`."""
        fields = json.loads(text)
        options = fields["options"]
        if options["reference_file"] is not None:
            options["reference_file"] = Path(options["reference_file"])
        fields |= {"config": RunConfig(**fields["config"]), "options": RunOptions(**options)}
        return cls(**{**fields, "sr_modes": tuple(fields["sr_modes"])})


def _mib(size: int | None) -> float | None:
    return None if size is None else size / 2**20


def case_driver(case: Case):
    """The SR driver of a case, built as a run builds it (its first SR mode, may be ``auto``)."""
    return build_driver(case.config, case.options, plan_run(case.config, case.options))


def measure_case(case: Case) -> dict[str, Any]:
    """Time ``case.steps`` SR steps phase by phase after one warm-up step (in-process)."""
    clock = measure.Stopwatch()
    driver = case_driver(case)
    runner = PhaseRunner(driver, case.sr_modes)
    warmup = runner.step()[0]
    compile_s = clock.stop()
    if not runner.modes:
        raise RuntimeError(f"every SR mode failed: {runner.failed}")
    timed, cpu = [], []
    for _ in range(case.steps):
        timed.append(runner.step()[0])
        cpu.append(runner.cpu)
    median = {key: statistics.median(t[key] for t in timed) for key in timed[0]}
    median_cpu = {key: statistics.median(t[key] for t in cpu) for key in cpu[0]}
    # the local-energy phase in both modes on the run's own samples, and the waste
    config = case.config
    local_modes = measure_modes(driver.state, config.L, config.J2, repeats=max(case.steps, 3))
    driver_step_s = math.nan
    if (
        case.time_driver and case.sr_modes[0] not in runner.failed
    ):  # the step as the driver runs it, to compare with the phases' sum
        # two steps compile the driver's own functions (the second step's running
        # statistics have another structure than the first's)
        driver.run(2, show_progress=False)
        _, seconds = _timed(lambda: driver.run(case.steps, show_progress=False) or driver.state)
        driver_step_s = seconds / case.steps
    return {
        "case": case.record(),
        "failed": runner.failed,
        "n_parameters": int(driver.state.n_parameters),
        # network evaluations per sample of the driver's local energies
        "max_conn": local_modes[f"configs_{case.options.local_energy}"] / config.samples,
        "seconds": median,
        "cpu_seconds": median_cpu,
        "driver_step_s": driver_step_s,
        "local_energy_modes": local_modes,
        "compile_s": compile_s - sum(warmup.values()) + sum(median.values()),
        "peak_host_mb": measure.peak_host_bytes() / 2**20,
        "peak_device_mb": _mib(measure.peak_device_bytes()),
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        **matmul_ceiling(),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-format rows of a :func:`measure_case` result.

    Per SR mode, one row per phase plus ``step`` (their sum) and, for the first mode,
    ``driver_step`` (the driver's own step).
    """
    case = result["case"]
    forward = forward_flops(case["attention"], case["L"], case["layers"], case["d"],
                            case["heads"], case["b"])  # fmt: skip
    common = {
        **{k: v for k, v in case.items() if k != "sr_modes"},
        "n_parameters": result["n_parameters"],
        "forward_flops": forward,
        "device": result["device"],
        "platform": result["platform"],
        "compile_s": result["compile_s"],
        "peak_host_mb": result["peak_host_mb"],
        "peak_device_mb": result["peak_device_mb"],
        "matmul_gflops": result["matmul_gflops"],
        "waste": result["local_energy_modes"]["waste"],
        "local_energies_padded_s": result["local_energy_modes"]["padded_s"],
        "local_energies_compact_s": result["local_energy_modes"]["compact_s"],
    }
    out = []
    for mode in (m for m in case["sr_modes"] if m not in result["failed"]):
        flops = phase_flops(forward, case["samples"], case["L"] ** 2, result["max_conn"],
                            result["n_parameters"], mode)  # fmt: skip
        seconds, cpu = ({p: measured.get(p, 0.0) for p in PHASES}
                        for measured in (result["seconds"], result["cpu_seconds"]))  # fmt: skip
        for phase in ("jacobian", "kernel_solve"):
            seconds[phase] = result["seconds"][f"{phase}:{mode}"]
            cpu[phase] = result["cpu_seconds"][f"{phase}:{mode}"]
        flops["step"], seconds["step"] = sum(flops.values()), sum(seconds.values())
        cpu["step"] = sum(cpu.values())
        if mode == case["sr_modes"][0] and not math.isnan(result["driver_step_s"]):
            flops["driver_step"], seconds["driver_step"] = flops["step"], result["driver_step_s"]
            cpu["driver_step"] = math.nan
        for phase, time_s in seconds.items():
            rate = flops[phase] / time_s / 1e9 if time_s > 0 else math.nan
            out.append({
                **common, "sr_mode": mode, "phase": phase, "median_s": time_s,
                "median_cpu_s": cpu[phase], "gflop": flops[phase] / 1e9, "gflops": rate,
                "fraction_of_ceiling": rate / result["matmul_gflops"],
            })  # fmt: skip
    return out


def run_cases(
    cases: Sequence[Case], max_seconds: float | None, log=sys.stderr
) -> Iterator[dict[str, Any]]:
    """Measure each case in its own child process, yielding each result as it comes.

    No case starts after ``max_seconds``: it is skipped and said so; one that fails
    (out of memory, say) is reported and skipped.
    """
    started = time.perf_counter()
    for number, case in enumerate(cases, 1):
        elapsed = time.perf_counter() - started
        config, options = case.config, case.options
        label = (f"[{number}/{len(cases)}] {config.attention} L={config.L} J2={config.J2:g} "
                 f"{options.local_energy} "
                 f"{'/'.join(case.sr_modes)} {options.network_dtype}")  # fmt: skip
        if max_seconds is not None and elapsed > max_seconds:
            print(f"{label}: skipped, {elapsed:.0f} s > budget {max_seconds:.0f} s", file=log)
            continue
        command = [sys.executable, "-m", "vitnqs", "benchmark", "--child", case.to_json()]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{label}: FAILED (exit {child.returncode})\n{child.stderr[-3000:]}", file=log)
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        phases = " ".join(f"{p}={t:.3g}" for p, t in result["seconds"].items())
        print(f"{label}: {phases}; driver step {result['driver_step_s']:.3g} s, compile "
              f"{result['compile_s']:.0f} s, peak host {result['peak_host_mb']:.0f} MB, "
              f"device {result['peak_device_mb']} MB", file=log, flush=True)  # fmt: skip
        yield result


def child_main(case_json: str) -> None:
    """Entry point of a child process: measure one case, print its result as JSON."""
    result = measure_case(Case.from_json(case_json))
    print(json.dumps(result), flush=True)


def summary_table(table) -> str:
    """Markdown table: one row per case and SR mode, seconds per phase, rates."""
    lines = [
        "| L | J2 | attention | dtype | local E | SR mode | P | "
        + " | ".join(PHASES)
        + " | step s |"
        " driver step s | local E % ceil. | kernel % ceil. | compile s | host MB | device MB |"
        " waste | local E padded s | local E compact s | padded / compact |",
        "|---|---|---|---|---|---|---|"
        + "---|" * len(PHASES)
        + "---|---|---|---|---|---|---|"
        + "---|---|---|---|",
    ]
    keys = ["L", "J2", "attention", "network_dtype", "local_energy", "sr_mode"]
    for (L, J2, attention, dtype, local, mode), group in table.groupby(keys, sort=False):
        by = group.set_index("phase")
        first = group.iloc[0]
        driver = by["median_s"].get("driver_step", math.nan)
        device_mb = first["peak_device_mb"]
        lines.append(
            f"| {L} | {J2:g} | {attention} | {dtype} | {local} | {mode} | "
            f"{first['n_parameters']} | "
            + " | ".join(f"{by.loc[p, 'median_s']:.3g}" for p in PHASES)
            + f" | {by.loc['step', 'median_s']:.3g} | "
            + ("" if math.isnan(driver) else f"{driver:.3g}")
            + f" | {100 * by.loc['local_energies', 'fraction_of_ceiling']:.0f}"
            + f" | {100 * by.loc['kernel_solve', 'fraction_of_ceiling']:.0f}"
            + f" | {first['compile_s']:.0f} | {first['peak_host_mb']:.0f} | "
            + ("" if device_mb is None or np.isnan(device_mb) else f"{device_mb:.0f}")
            + f" | {first['waste']:.2f} | {first['local_energies_padded_s']:.3g} | "
            f"{first['local_energies_compact_s']:.3g} | "
            f"{first['local_energies_padded_s'] / first['local_energies_compact_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"
