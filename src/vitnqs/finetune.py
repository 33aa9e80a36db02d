"""Symmetrized fine-tuning, beyond the paper (``snakemake beyond``).

SR steps on a finished run's network projected on the lattice's symmetries, resumable.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import flax
import optax

from vitnqs import checkpoint, files, measure
from vitnqs.config import ConfigError, RunConfig, RunOptions
from vitnqs.estimates import per_site
from vitnqs.evaluation import SYMMETRIZED_EVAL_DISCARD, WARM_START_SWEEPS, warm_started_state
from vitnqs.loop import StepMonitor, sr_driver
from vitnqs.physics import j1j2_hamiltonian
from vitnqs.plan import plan_finetune
from vitnqs.rundir import CHECKPOINT, PARAMS, SUMMARY, load_run, vouch
from vitnqs.stops import StopSignals

FINETUNE_HISTORY = ("energy", "energy_error", "energy_variance")
"""Per-step entries of the fine-tuning's history (per site, as a run's)."""


def finetune_symmetrized(
    run_dir: str | Path,
    out: str | Path,
    steps: int,
    *,
    samples: int | None = None,
    lr: float = 0.003,
    diag_shift: float | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    checkpoint_every: int = 10,
    n_thermalize: int = SYMMETRIZED_EVAL_DISCARD,
    warm_start_sweeps: int = WARM_START_SWEEPS,
    signals: StopSignals | None = None,
) -> dict[str, Any]:
    """A few SR steps on the symmetrized network, starting from a run's trained parameters.

    The run loop of the optimization (:mod:`vitnqs.loop`), with the SR mode that
    :func:`vitnqs.plan.plan_finetune` decides. Resumable: a checkpoint (driver, sampler
    state, history) is written to ``out`` every ``checkpoint_every`` steps and at the
    end; a second call with the same settings continues from it, or returns at once if
    all steps are done; a larger ``steps`` extends a finished fine-tuning. ``out`` then
    holds a
    ``summary.json`` (the original run's, with a ``finetune`` entry) and the fine-tuned
    ``params.msgpack`` of the inner ViT, so :func:`evaluate_symmetrized` reads ``out``
    as it reads a run directory (its plain numbers stay those of the original run).

    Args:
        run_dir: finished run (``summary.json``, ``params.msgpack``).
        out: output directory (created if needed).
        steps: SR steps in total.
        samples: samples per step (one per chain, as in the run); default the run's.
        lr: constant learning rate (small: the start is already optimized).
        diag_shift: SR diagonal shift; default the run's.
        seed: seed of the samplers.
        chunk_size: configurations per network evaluation chunk.
        checkpoint_every: steps between checkpoints.
        n_thermalize: symmetrized sweeps discarded before the first step.
        warm_start_sweeps: plain sweeps before them (:func:`warm_started_state`; 0:
            the chains start random).
        signals: the caller's signal handlers: a signal stops the steps at the next
            step boundary with a checkpoint (:class:`~vitnqs.stops.Interrupted`).

    Returns:
        The ``finetune`` entry: settings, ``history`` (per step ``energy``,
        ``energy_error``, ``energy_variance``, per site), ``steps_done``, ``time_s``
        (wall time over all calls) and ``thermalization`` (``warm_start_sweeps`` and
        ``n_thermalize`` of the call that took the first step; ``None`` for a
        checkpoint written before they were recorded).

    """
    run_dir, out = Path(run_dir), Path(out)
    summary, model, params = load_run(run_dir)
    c = summary["config"]
    L, J2, n_sites = c["L"], c["J2"], c["L"] ** 2
    settings = {
        "run_dir": str(run_dir),
        "steps": steps,
        "samples": samples or c["samples"],
        "lr": lr,
        "diag_shift": c["diag_shift"] if diag_shift is None else diag_shift,
        "seed": seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    with checkpoint.lock_run_dir(out):
        payload = checkpoint.load_checkpoint(out)
        if payload is not None:
            stored = {k: v for k, v in payload["settings"].items() if k != "steps"}
            if stored != {k: v for k, v in settings.items() if k != "steps"}:
                raise ConfigError("out", f"{out} holds a fine-tuning with other settings: {stored}")
            settings["steps"] = max(steps, int(payload["settings"]["steps"]))
        rows = {} if payload is None else payload["history"]
        history = [dict(rows[key]) for key in sorted(rows, key=int)]
        elapsed_before = 0.0 if payload is None else float(payload["elapsed"])
        clock = measure.Stopwatch()

        if payload is None:
            thermalization = {"warm_start_sweeps": warm_start_sweeps, "n_thermalize": n_thermalize}
        else:  # the checkpoint's chains replace the new ones: no warm start
            thermalization = payload.get("thermalization")
        vstate = warm_started_state(
            model, params, L, settings["samples"], seed,
            n_samples=settings["samples"], n_discard_per_chain=n_thermalize,
            chunk_size=chunk_size, warm_start_sweeps=warm_start_sweeps if payload is None else 0,
        )  # fmt: skip
        plan = plan_finetune(RunConfig.from_row(c), RunOptions(), settings["samples"])
        driver = sr_driver(
            j1j2_hamiltonian(L, J2), vstate, optax.sgd(lr), settings["diag_shift"], plan
        )
        if payload is not None:
            driver = flax.serialization.from_bytes(driver, payload["driver"])
            driver.state.n_discard_per_chain = 0  # the restored chains are thermalized

        def save(driver) -> None:
            checkpoint.save_checkpoint(
                out,
                {
                    "settings": settings,
                    "driver": flax.serialization.to_bytes(driver),
                    "history": {str(i): row for i, row in enumerate(history)},
                    "elapsed": elapsed_before + clock.stop(),
                    "thermalization": thermalization,
                },
            )

        def record(step, log_data, drv, seconds) -> None:
            stats = log_data["Energy"]
            history.append(dict(zip(FINETUNE_HISTORY, per_site(stats, n_sites), strict=True)))
            drv.state.n_discard_per_chain = 0  # thermalized: one new sample per chain

        monitor = StepMonitor(
            record, save=save, signals=signals, checkpoint_every=checkpoint_every,
            where=out / CHECKPOINT,
        )  # fmt: skip
        if driver.step_count < steps:  # never undoes steps already taken
            with signals.deferred() if signals is not None else contextlib.nullcontext():
                driver.run(steps - driver.step_count, callback=monitor, show_progress=False)
        entry = {
            **settings,
            "steps_done": int(driver.step_count),
            "history": history,
            "time_s": elapsed_before + clock.stop(),
            "thermalization": thermalization,
        }
        files.write_atomic(
            out / PARAMS,
            flax.serialization.to_bytes(driver.state.parameters["module"]),
        )
        record_summary = {**summary, "finetune": entry, "files": vouch(out, None, (PARAMS,))}
        files.write_atomic(out / SUMMARY, (json.dumps(record_summary, indent=2) + "\n").encode())
    return entry
