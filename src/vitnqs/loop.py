"""The one run loop: an SR driver built from a run plan, stepped under a monitor.

The optimization (:mod:`vitnqs.optimize`), the symmetrized fine-tuning
(:mod:`vitnqs.finetune`), the pilot (:mod:`vitnqs.pilot`) and the timing jobs build their
NetKet driver with :func:`sr_driver` from a :class:`~vitnqs.plan.RunPlan` (which decided
the SR mode), and step it under a :class:`StepMonitor`: a clock per step, checkpoints
every few minutes (or every few steps) and at the end, and a stop with a checkpoint at
the next step boundary when a signal arrives (:class:`~vitnqs.stops.StopSignals`).
The stability controls of :mod:`vitnqs.stability` are callbacks of the same loop: the
bounded step (:class:`StepControl`) and the watch for jumps (:class:`JumpGuard`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import optax
from netket.callbacks import AbstractCallback
from netket.utils import struct

from vitnqs import measure
from vitnqs.config import RunConfig, RunOptions
from vitnqs.models import ViT
from vitnqs.physics import exchange_sampler, j1j2_hamiltonian
from vitnqs.plan import RunPlan, plan_run
from vitnqs.sr import KernelSR
from vitnqs.stability import WINDOW, Jump, find_jump, window_means
from vitnqs.stops import Interrupted, StopSignals, signal_name

CHECKPOINT_SECONDS = 300
"""A run without a step interval writes a checkpoint when this long has passed since
the last one: at most five minutes of work are lost to a crash."""


def sr_driver(
    hamiltonian: nk.operator.AbstractOperator,
    vstate: nk.vqs.MCState,
    optimizer: optax.GradientTransformation,
    diag_shift: float,
    plan: RunPlan,
) -> nk.driver.VMC_SR:
    """NetKet's SR driver in the mode the plan decided.

    ``symmetric`` is :class:`vitnqs.sr.KernelSR`; ``explicit`` and ``onthefly`` are
    NetKet's ``VMC_SR`` with and without the stored Jacobian; the kernel trick where
    the plan says so (``M < P``).
    """
    driver_class = KernelSR if plan.sr_mode == "symmetric" else nk.driver.VMC_SR
    return driver_class(
        hamiltonian,
        optimizer,
        diag_shift=diag_shift,
        variational_state=vstate,
        use_ntk=plan.use_ntk,
        on_the_fly=plan.sr_mode == "onthefly",
        mode="complex",
    )


def lr_schedule(config: RunConfig, factor: float = 1.0) -> optax.Schedule:
    """Cosine decay of the learning rate from ``factor * lr`` to 0 over the run."""
    return optax.cosine_decay_schedule(init_value=factor * config.lr, decay_steps=config.steps)


def build_driver(
    config: RunConfig, options: RunOptions, plan: RunPlan | None = None, lr_factor: float = 1.0
) -> nk.driver.VMC_SR:
    """The SR driver of an optimization run, with a freshly initialized variational state.

    Args:
        config: the run.
        options: how it executes (the network's dtype, the local energies).
        plan: what :func:`vitnqs.plan.plan_run` decided (SR mode, kernel trick, chunk);
            by default its plan for ``options`` with the device's memory not known.
        lr_factor: multiplies the learning-rate schedule (a diverged run's remedy).

    """
    model = ViT(
        config.attention, config.layers, config.d, config.heads, config.b,
        dtype=jnp.dtype(options.network_dtype),
    )  # fmt: skip
    plan = plan or plan_run(config, options)
    init_key, sampler_key = jax.random.split(jax.random.key(config.seed))
    vstate = nk.vqs.MCState(
        exchange_sampler(config.L, n_chains=config.samples),
        model,
        n_samples=config.samples,
        n_discard_per_chain=0,  # one new sample per chain and step, as in the paper
        chunk_size=plan.chunk_size,
        seed=init_key,
        sampler_seed=sampler_key,
    )
    return sr_driver(
        j1j2_hamiltonian(config.L, config.J2, options.local_energy),
        vstate,
        optax.sgd(lr_schedule(config, lr_factor)),
        config.diag_shift,
        plan,
    )


def divergence(energy: float, parameters: Any, bounds: tuple[float, float]) -> str | None:
    """What went wrong with a step, or ``None``: the guard of every run loop.

    Args:
        energy: the step's energy per site, of the parameters it started from.
        parameters: the parameters after its update.
        bounds: the rigorous bounds of the energy per site
            (:func:`vitnqs.physics.energy_bounds`).

    """
    lower, upper = bounds
    if not math.isfinite(energy):
        return f"the energy became non-finite ({energy})"
    if not all(bool(np.isfinite(x).all()) for x in jax.tree_util.tree_leaves(parameters)):
        return "the parameters became non-finite after the update"
    if energy < lower:
        return (
            f"the energy per site {energy:.4f} fell below the rigorous bound "
            f"{lower:.4f} (exploding estimate)"
        )
    if energy > upper:
        return (
            f"the energy per site {energy:.4g} rose above the rigorous bound "
            f"{upper:.4f} (exploding state)"
        )
    return None


StepHook = Callable[[int, dict, Any, float], None]
"""``on_step(step, log_data, driver, seconds)``: what a loop does with a finished step."""


class StepMonitor(AbstractCallback, mutable=True):
    """A NetKet callback: step clock, periodic and final checkpoints, stop on a signal.

    At the start of a step (the previous update applied: the state a resumed run starts
    from) it checkpoints and raises :class:`~vitnqs.stops.Interrupted` if a signal
    arrived, or checkpoints when one is due; at the end of a step it waits for the
    step's results and hands them, with the step's wall time, to ``on_step``; at the end
    of the run it checkpoints.
    """

    on_step: StepHook = struct.field(pytree_node=False, serialize=False)
    save: Callable[[Any], None] | None = struct.field(pytree_node=False, serialize=False)
    signals: StopSignals | None = struct.field(pytree_node=False, serialize=False)
    checkpoint_every: int | None = struct.field(pytree_node=False, serialize=False)
    where: Path | None = struct.field(pytree_node=False, serialize=False)
    clock: measure.Stopwatch = struct.field(pytree_node=False, serialize=False)
    last_save: float = struct.field(pytree_node=False, serialize=False)

    def __init__(
        self,
        on_step: StepHook,
        *,
        save: Callable[[Any], None] | None = None,
        signals: StopSignals | None = None,
        checkpoint_every: int | None = None,
        where: Path | None = None,
    ):
        """Monitor a run.

        Args:
            on_step: called after every step (:data:`StepHook`).
            save: writes a checkpoint of the driver (``None``: a loop that keeps none).
            signals: the run's signal handlers (``None``: none are watched).
            checkpoint_every: steps between checkpoints (``None``: every
                :data:`CHECKPOINT_SECONDS`).
            where: the checkpoint's path, for the message of a stop.

        """
        self.on_step, self.save, self.signals = on_step, save, signals
        self.checkpoint_every, self.where = checkpoint_every, where
        self.clock = measure.Stopwatch()
        self.last_save = time.perf_counter()

    def _save(self, driver) -> None:
        if self.save is not None:
            self.save(driver)
            self.last_save = time.perf_counter()

    def _due(self, step: int) -> bool:
        if self.checkpoint_every is None:
            return time.perf_counter() - self.last_save > CHECKPOINT_SECONDS
        return step % self.checkpoint_every == 0

    def on_step_start(self, step, log_data, driver):
        """Stop on a signal, or checkpoint when due; start the step's clock."""
        if self.signals is not None and self.signals.received is not None:
            self._save(driver)
            written = "" if self.save is None else f"checkpoint written to {self.where}; "
            raise Interrupted(
                f"received {signal_name(self.signals.received)} at step {step}: "
                f"{written}rerun the same command to resume"
            )
        if step > 0 and self._due(step):
            self._save(driver)
        self.clock.start()

    def on_step_end(self, step, log_data, driver):
        """Wait for the step's results, then hand them to ``on_step`` with its time."""
        jax.block_until_ready((log_data, driver.state.parameters))
        self.on_step(step, log_data, driver, self.clock.stop())

    def on_run_end(self, step, driver):
        """Checkpoint the end of the run."""
        self._save(driver)


class JumpGuard:
    """Watches a run's energies and keeps the driver's state at its best window.

    :meth:`observe` is called after each step with the whole history; when the last window
    is the lowest so far, the driver's state after that step (the state a run resumed
    there starts from) is kept, in memory: JAX arrays are immutable, so keeping the state
    dict costs no copy.
    """

    def __init__(self, first_step: int):
        """Watch from ``first_step`` on (a resumed run starts a new watch)."""
        self.first_step = first_step
        self.best_mean = math.inf
        self.best_step: int | None = None
        self.best_state: Any = None

    def observe(self, history: list[dict[str, float]], driver) -> Jump | None:
        """Look at the history after a step; return the jump if the last window made one."""
        rows = [r for r in history if r["step"] >= self.first_step]
        if len(rows) < WINDOW:
            return None
        energies = [r["energy"] for r in rows]
        errors = [r["energy_error"] for r in rows]
        jump = find_jump(energies, errors)
        if jump is not None and jump.step == len(rows) - 1:
            return dataclasses.replace(
                jump, step=jump.step + self.first_step, best_step=self.best_step
            )
        means, _ = window_means(energies[-WINDOW:], errors[-WINDOW:])
        if means[0] < self.best_mean:
            self.best_mean = float(means[0])
            self.best_step = int(rows[-1]["step"])
            # at the end of a step NetKet has not yet counted it: the state kept is the one
            # a run resumed at the next step starts from
            state = flax.serialization.to_state_dict(driver)
            self.best_state = {**state, "_step_count": self.best_step + 1}
        return None


def predicted_change(vstate, update: Any) -> float:
    """``||O dθ||^2 / M``: the mean squared change of ``log psi`` on the step's samples.

    ``O`` are the log-derivatives centred over the samples (SR's metric, complex
    ``log psi``); one Jacobian-vector product on the samples of the current step.

    Args:
        vstate: the driver's variational state (its samples are the step's).
        update: a parameter-shaped pytree ``dθ``.

    """
    samples = vstate.samples.reshape(-1, vstate.samples.shape[-1])
    return float(_predicted_change(vstate._apply_fun, vstate.variables, update, samples))


@partial(jax.jit, static_argnames="apply_fun")
def _predicted_change(apply_fun, variables, update, samples):
    def log_psi(params):
        return apply_fun({**variables, "params": params}, samples)

    _, tangent = jax.jvp(log_psi, (variables["params"],), (update,))
    tangent = tangent - tangent.mean()
    return jnp.mean(jnp.abs(tangent) ** 2)


class StepControl(AbstractCallback, mutable=True):
    """Scales each SR update before it is applied: the bounded step and the remedies' factor.

    The driver applies ``θ -> θ - lr(step) * dθ``; this callback multiplies ``dθ`` by
    ``factor`` (the jump remedy's, 1 by default) and, with a bound, by
    ``sqrt(max_update / change)`` where the predicted change
    ``(lr * factor)^2 ||O dθ||^2 / M`` exceeds ``max_update``. :attr:`scale` is the
    factor applied at the last step.
    """

    schedule: Any = struct.field(pytree_node=False, serialize=False)
    max_update: float = struct.field(pytree_node=False, serialize=False)
    factor: float = struct.field(pytree_node=False, serialize=False)
    scale: float = struct.field(pytree_node=False, serialize=False)

    def __init__(self, schedule, max_update: float = 0.0, factor: float = 1.0):
        """Control the updates.

        Args:
            schedule: the run's learning-rate schedule ``lr(step)``.
            max_update: the bound on the predicted change (0: none).
            factor: the remedies' factor on every update.

        """
        self.schedule, self.max_update, self.factor = schedule, max_update, factor
        self.scale = 1.0

    def before_parameter_update(self, step, log_data, driver):
        """Scale ``dθ`` (NetKet applies it right after this hook)."""
        scale = self.factor
        if self.max_update > 0:
            lr = float(self.schedule(step)) * scale
            change = lr**2 * predicted_change(driver.state, driver._dp)
            if change > self.max_update:
                scale *= math.sqrt(self.max_update / change)
        if scale != 1.0:
            driver._dp = jax.tree_util.tree_map(lambda x: x * scale, driver._dp)
        self.scale = scale
