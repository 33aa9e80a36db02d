"""Command line: ``python -m vitnqs <command> ...`` (run ``--help`` for the list)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from vitnqs import devices
from vitnqs.config import (
    ATTENTIONS,
    DEVICES,
    FIELD_CHOICES,
    LOCAL_ENERGY_MODES,
    MAX_SEED,
    MIN_SAMPLES,
    NETWORK_DTYPES,
    PAPER_MODEL,
    RUN_COLUMNS,
    SR_MODES,
    FieldError,
    RunConfig,
    RunOptions,
    field_help,
)
from vitnqs.plan import EVAL_CHAIN_LENGTH
from vitnqs.stops import (
    EXIT_BAD_INPUT,
    EXIT_BAD_SETUP,
    EXIT_BUSY,
    EXIT_DAMAGED_RUN,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_IO,
    Diverged,
    Interrupted,
    StopSignals,
)


class _Parser(argparse.ArgumentParser):
    """Argument errors exit with code 2 and name the option, like argparse itself."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# RunOptions fields with their own wording on the command line
_OPTION_FLAGS = {"progress": None, "reference_file": None}


def _add_dataclass_options(p: argparse.ArgumentParser, cls: type, required=()) -> None:
    """One option per field of ``cls`` (RunConfig, RunOptions), with its docstring as help."""
    helps = field_help(cls)
    for field in dataclasses.fields(cls):
        if _OPTION_FLAGS.get(field.name, "") is None:
            continue
        kind = {"str": str, "int": int, "float": float}[field.type.split(" |")[0]]
        has_default = field.default is not dataclasses.MISSING
        default = field.default if has_default else None
        p.add_argument(
            _flag(field.name),
            dest=field.name,
            type=kind,
            required=field.name in required,
            default=default,
            choices=FIELD_CHOICES.get(field.name),
            help=helps[field.name] + (f" ({default})" if default is not None else ""),
        )


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize",
        help="train the ViT by VMC + SR on the J1-J2 model (resumable)",
        description="Train the ViT wave function by VMC + SR on the J1-J2 model. "
        "Rerunning with the same --out resumes from the last checkpoint.",
    )
    _add_run_options(p)
    p.add_argument("--reference", help=field_help(RunOptions)["reference_file"])
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=_optimize)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """A run's settings (the first four required) and its execution options."""
    run_fields = [f.name for f in dataclasses.fields(RunConfig)]
    _add_dataclass_options(p, RunConfig, required=run_fields[:4])
    _add_dataclass_options(p, RunOptions)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", choices=DEVICES, default="auto", help=field_help(RunOptions)["device"]
    )


TIMING_COMMANDS = ("step-times", "benchmark", "symmetrize", "finetune")
"""Other commands that evaluate the network: their --device is applied and checked before
NetKet loads, as a run's (:func:`_optimize`)."""


def _config_and_options(args: argparse.Namespace) -> tuple[RunConfig, RunOptions]:
    """The run and its options from parsed arguments (the fields' own names)."""
    config = RunConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)})
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RunOptions)
        if f.name not in _OPTION_FLAGS
    }
    reference = None if args.reference is None else Path(args.reference)
    return config, RunOptions(**given, progress=not args.quiet, reference_file=reference)


def _checked_run(args: argparse.Namespace) -> tuple[RunConfig, RunOptions]:
    """The run and options of a command, validated, its devices configured.

    Raises:
        FieldError: naming the first invalid field (exit code 2, :func:`_guarded`).

    """
    config, options = _config_and_options(args)
    config.validate()
    options.validate(config)
    devices.configure(options.device, options.n_devices)
    return config, options


def _optimize(args: argparse.Namespace) -> int:
    from vitnqs.rundir import read_finished

    config, options = _checked_run(args)
    # NetKet starts JAX's backends when imported, after which the platform and the
    # number of CPU devices are fixed: choose them first, and refuse a machine that
    # cannot run the run within seconds, before NetKet loads (a finished run needs none)
    used = None
    if read_finished(config, Path(args.out)) is None:
        used = devices.require_device(options.device, options.n_devices)
    args.signals.check("during start-up")
    from vitnqs.optimize import optimize

    optimize(config, args.out, options, used, args.signals)
    return 0


def _add_pilot(sub: argparse._SubParsersAction) -> None:
    from vitnqs.plan import PILOT_STEPS

    p = sub.add_parser(
        "pilot",
        help="a short job of one run at its full size: time, memory, stability",
        description="Build one run's driver as its job will (run plan, device, chunk), "
        "compile it, time a few steps of its schedule and write one row of pilot.csv. "
        "Touches no run directory.",
    )
    _add_run_options(p)
    p.add_argument("--timed-steps", type=int, default=PILOT_STEPS, help="(%(default)s)")
    p.add_argument("--reference", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, help="CSV of the row to write")
    p.set_defaults(handler=_pilot)


def _pilot(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.timed_steps < 1:
        raise FieldError("timed_steps", f"must be >= 1 (got {args.timed_steps})")
    config, options = _checked_run(args)
    devices.require_device(options.device, options.n_devices)
    args.signals.check("during start-up")
    from vitnqs.pilot import pilot

    row = pilot(config, options, args.timed_steps, args.signals)
    pd.DataFrame([row]).to_csv(args.out, index=False)
    print(pd.Series(row).to_string())
    return 0


def _add_pilot_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pilot-table", help="pilot.csv from the pilot's rows, with verdicts")
    p.add_argument("rows", nargs="+", help="CSV rows written by `vitnqs pilot`")
    p.add_argument("--max-runtime", type=int, help="the site's cap on a job, in minutes")
    p.add_argument("--retries", type=int, help="the optimize rule's retries")
    p.add_argument("--out", required=True, help="pilot.csv to write; also printed")
    p.set_defaults(handler=_pilot_table)


def _pilot_table(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.pilot import requests, summary, verdicts

    table = pd.concat([pd.read_csv(f) for f in args.rows], ignore_index=True)
    rows = [row.to_dict() for _, row in table.iterrows()]
    extra = [
        {
            **requests(row, args.max_runtime),
            "verdict": verdicts(row, args.max_runtime, args.retries),
        }
        for row in rows
    ]
    table = pd.concat([table, pd.DataFrame(extra)], axis=1)
    table.to_csv(args.out, index=False)
    print(summary(table))
    return 0


def _add_symmetrize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "symmetrize",
        help="energy, variance and V-score of a finished run's network projected on the "
        "lattice symmetries (beyond the paper)",
    )
    p.add_argument("--run-dir", required=True, help="a finished run directory")
    p.add_argument(
        "--samples",
        type=int,
        help="samples of the projected state (default: 4 x the run's, from its M chains, as "
        "the plain network's final evaluation)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (%(default)s)")
    p.add_argument("--chunk-size", type=int, help="configurations per network chunk")
    _add_device(p)
    p.add_argument("--out", required=True, help="JSON to write")
    p.set_defaults(handler=_symmetrize)


def _symmetrize(args: argparse.Namespace) -> int:
    import json

    from vitnqs import files
    from vitnqs.evaluation import evaluate_symmetrized

    _check_positive(args, "chunk_size")
    _check_seed(args.seed)
    minimum = EVAL_CHAIN_LENGTH * MIN_SAMPLES
    if args.samples is not None and args.samples < minimum:
        raise FieldError(
            "samples", f"must be >= {minimum} ({MIN_SAMPLES} chains of {EVAL_CHAIN_LENGTH})"
        )
    _finished_run_dir(args.run_dir)
    with args.signals.immediate():  # nothing to save: a rerun repeats the evaluation
        result = evaluate_symmetrized(args.run_dir, args.samples, args.seed, args.chunk_size)
    files.write_atomic(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(
        f"[vitnqs] symmetrized E/N = {result['energy']:.6f} +- {result['energy_error']:.6f} "
        f"(plain {result['plain_energy']:.6f}), V-score {result['v_score']:.3g} (plain "
        f"{result['plain_v_score']:.3g}), {result['eval_time_s']:.0f} s = "
        f"{result['eval_time_in_steps']:.0f} plain steps",
        file=sys.stderr,
    )
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="SR steps on a finished run's symmetrized network (resumable; beyond the paper)",
    )
    p.add_argument("--run-dir", required=True, help="a finished run directory")
    p.add_argument("--steps", type=int, required=True, help="SR steps in total")
    p.add_argument("--lr", type=float, default=0.003, help="constant learning rate (%(default)s)")
    p.add_argument("--chunk-size", type=int, help="configurations per network chunk")
    _add_device(p)
    p.add_argument("--out", required=True, help="directory of the fine-tuned stage")
    p.set_defaults(handler=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from vitnqs.finetune import finetune_symmetrized

    _check_positive(args, "steps", "chunk_size")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise FieldError("lr", f"must be finite and > 0 (got {args.lr})")
    _finished_run_dir(args.run_dir)
    entry = finetune_symmetrized(
        args.run_dir, args.out, args.steps, lr=args.lr, chunk_size=args.chunk_size,
        signals=args.signals,
    )  # fmt: skip
    last = entry["history"][-1]
    print(
        f"[vitnqs] fine-tuned {entry['steps_done']} steps: E/N = {last['energy']:.6f} +- "
        f"{last['energy_error']:.6f}",
        file=sys.stderr,
    )
    return 0


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse a non-positive integer option (``None``: not given)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FieldError(name, f"must be a positive integer (got {value})")


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise FieldError("seed", f"must be an integer from 0 to 2**63 - 1 (got {seed})")


def _finished_run_dir(run_dir: str) -> None:
    """Refuse a directory that holds no finished run (nothing to evaluate there)."""
    from vitnqs.rundir import SUMMARY

    if not (Path(run_dir) / SUMMARY).exists():
        raise FieldError("run_dir", f"{run_dir} holds no finished run (no {SUMMARY})")


def _add_reference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reference",
        help="reference ground-state energy per site (ED for L <= 4, literature otherwise)",
    )
    p.add_argument("--L", type=int, required=True)
    p.add_argument("--J2", type=float, required=True)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(handler=_reference)


def _reference(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vitnqs import files
    from vitnqs.references import reference_energy

    ref = reference_energy(args.L, args.J2)
    record = {"L": args.L, "J2": args.J2}
    if ref is None:
        record |= {"energy": None, "note": "no reference known: relative errors stay empty"}
        print(
            f"[vitnqs] WARNING: no reference energy for L={args.L}, J2={args.J2}", file=sys.stderr
        )
    else:
        record |= dataclasses.asdict(ref)
    files.write_atomic(Path(args.out), (json.dumps(record, indent=2) + "\n").encode())
    return 0


def _add_attention_maps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention-maps", help="attention maps of a finished run (Figure 4)")
    p.add_argument("--run-dir", required=True, help="a finished run directory")
    p.add_argument("--samples", type=int, required=True, help="inputs to average over")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (%(default)s)")
    p.add_argument("--out-maps", required=True, help="CSV of head-averaged maps")
    p.add_argument("--out-dependence", required=True, help="CSV of input-dependence numbers")
    p.set_defaults(handler=_attention_maps)


def _attention_maps(args: argparse.Namespace) -> int:
    from vitnqs.analysis import analyse

    maps, dependence = analyse(args.run_dir, args.samples, args.seed)
    maps.to_csv(args.out_maps, index=False)
    dependence.to_csv(args.out_dependence, index=False)
    return 0


def _add_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="runs.csv and history.csv from run directories")
    p.add_argument("--sweeps", required=True, help="the pipeline's sweeps.csv")
    p.add_argument("--runs-dir", required=True, help="directory holding one folder per run")
    p.add_argument("--out-runs", help="runs.csv to write")
    p.add_argument("--out-history", help="history.csv to write")
    p.add_argument("--out-symmetrized", help="symmetrized.csv to write (beyond the paper)")
    p.set_defaults(handler=_collect)


def _collect(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.tables import collect

    sweeps = pd.read_csv(args.sweeps)
    run_dirs = [Path(args.runs_dir) / run for run in sweeps["run"]]
    if args.out_symmetrized:
        from vitnqs.tables import collect_symmetrized

        collect_symmetrized(sweeps, run_dirs).to_csv(args.out_symmetrized, index=False)
    if args.out_runs or args.out_history:
        runs, history = collect(sweeps, run_dirs)
        runs.to_csv(args.out_runs, index=False)
        history.to_csv(args.out_history, index=False)
    return 0


def _add_table1(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table1", help="the reproduced Table 1 beside the paper's")
    p.add_argument("--runs", required=True, help="runs.csv")
    p.add_argument("--step-times", help="step_times.csv (timed one run at a time)")
    p.add_argument("--symmetrized", help="symmetrized.csv (beyond the paper)")
    p.add_argument("--scale", required=True, help="preset that produced the runs")
    p.add_argument("--out", required=True, help="output prefix: writes .csv, .md and .tex")
    p.set_defaults(handler=_table1)


def _table1(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.tables import table1, table1_text

    step_times = None if args.step_times is None else pd.read_csv(args.step_times)
    symmetrized = None if args.symmetrized is None else pd.read_csv(args.symmetrized)
    table = table1(pd.read_csv(args.runs), args.scale, step_times, symmetrized)
    prefix = Path(args.out)
    table.to_csv(prefix.with_suffix(".csv"), index=False)
    prefix.with_suffix(".md").write_text(table1_text(table, "md"))
    prefix.with_suffix(".tex").write_text(table1_text(table, "tex"))
    return 0


def _add_step_times(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "step-times", help="time per step of the fig3 runs, one run at a time (Figure 3)"
    )
    p.add_argument("--plan", required=True, help="CSV of the runs to time (run settings)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run (%(default)s)")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per chunk, as the runs")
    _add_device(p)
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(handler=_step_times)


def _step_times(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.timing import time_steps

    if args.steps < 1:
        print(
            f"vitnqs step-times: error: --steps: must be >= 1 (got {args.steps})", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    options = RunOptions(chunk_size=args.chunk_size, device=args.device, progress=False)
    table = time_steps(pd.read_csv(args.plan), args.steps, options)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


def _add_findings(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("findings", help="the paper's claims checked on the tables (pass/fail)")
    p.add_argument("--runs", required=True, help="runs.csv")
    p.add_argument("--dependence", required=True, help="attention_dependence.csv")
    p.add_argument("--maps", required=True, help="attention_maps.csv")
    p.add_argument("--step-times", required=True, help="step_times.csv")
    p.add_argument("--symmetrized", help="symmetrized.csv (beyond the paper)")
    p.add_argument("--scale", required=True, help="preset that produced the data")
    p.add_argument("--out", required=True, help="findings.csv to write; also printed")
    p.set_defaults(handler=_findings)


def _findings(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.findings import findings, findings_markdown

    read = pd.read_csv
    symmetrized = None if args.symmetrized is None else read(args.symmetrized)
    table = findings(
        read(args.runs), read(args.dependence), read(args.maps), read(args.step_times), symmetrized
    )
    table.to_csv(args.out, index=False)
    print(f"Findings at the {args.scale} scale ({args.out}):\n")
    print(findings_markdown(table))
    return 0


FIGURES = ("fig2", "fig3", "fig4", "fig5")


def _add_figure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figure", help="render a figure from the pipeline's tables")
    p.add_argument("name", choices=FIGURES)
    p.add_argument("--runs", help="runs.csv (fig2, fig3)")
    p.add_argument("--history", help="history.csv (fig2)")
    p.add_argument("--maps", help="attention_maps.csv (fig4)")
    p.add_argument("--dependence", help="attention_dependence.csv (fig4)")
    p.add_argument("--step-times", help="step_times.csv (fig3)")
    p.add_argument("--table1", help="table1.csv, for the paper's values (fig3)")
    p.add_argument("--symmetrized", help="symmetrized.csv (fig3, beyond the paper)")
    p.add_argument("--scale", required=True, help="preset that produced the data")
    p.add_argument("--out", required=True, help="PDF path; the PNG is written beside it")
    p.set_defaults(handler=_figure)


def _figure(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs import plots
    from vitnqs.tables import in_sweep

    needed = {
        "fig2": ("runs", "history"),
        "fig3": ("runs", "step_times", "table1"),
        "fig4": ("maps", "dependence"),
    }
    missing = [
        f"--{n.replace('_', '-')}" for n in needed.get(args.name, ()) if getattr(args, n) is None
    ]
    if missing:
        print(f"vitnqs figure {args.name}: error: needs {' '.join(missing)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.name == "fig2":
        runs = in_sweep(pd.read_csv(args.runs), "fig2")
        history = pd.read_csv(args.history).merge(runs[list(RUN_COLUMNS)], on=list(RUN_COLUMNS))
        plots.figure2(history, runs, args.out, args.scale)
    elif args.name == "fig3":
        plots.figure3(
            in_sweep(pd.read_csv(args.runs), "fig3"),
            pd.read_csv(args.step_times),
            pd.read_csv(args.table1),
            args.out,
            args.scale,
            None if args.symmetrized is None else pd.read_csv(args.symmetrized),
        )
    elif args.name == "fig4":
        plots.figure4(pd.read_csv(args.maps), pd.read_csv(args.dependence), args.out, args.scale)
    else:
        from vitnqs.fig5 import write_fig5

        write_fig5(args.out, args.scale)
    return 0


def _add_shastry_sutherland(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shastry-sutherland", help="check the exact Shastry-Sutherland mapping (paper sec. 4.3)"
    )
    p.add_argument("--out", required=True, help="CSV of the checks")
    p.set_defaults(handler=_shastry_sutherland)


def _shastry_sutherland(args: argparse.Namespace) -> int:
    from vitnqs.shastry_sutherland import write_checks

    table = write_checks(args.out)
    failed = table[~table["passed"].astype(bool)]
    for row in failed.itertuples():
        print(f"vitnqs: check {row.check} ({row.attention}, J'={row.Jp}) failed", file=sys.stderr)
    return 1 if len(failed) else 0


def _add_concat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("concat", help="concatenate CSV tables with the same columns")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=_concat)


def _concat(args: argparse.Namespace) -> int:
    import pandas as pd

    pd.concat([pd.read_csv(f) for f in args.inputs], ignore_index=True).to_csv(
        args.out, index=False
    )
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="time per SR step split into phases, with operation counts and rates",
        description="Time the phases of an SR step of the paper-size ViT (d {d}, h {heads}, "
        "b {b}, {layers} layers by default) for every attention x L x SR mode, each in its "
        "own process.".format(**PAPER_MODEL),
    )
    p.add_argument("--attention", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--L", nargs="+", type=int, default=[4, 6, 8, 10])
    p.add_argument(
        "--sr-modes",
        nargs="+",
        default=["symmetric", "explicit", "onthefly"],
        choices=SR_MODES,
        help="kernel phases to time on the same samples (the first also updates; %(default)s)",
    )
    p.add_argument("--network-dtypes", nargs="+", default=["float64"], choices=NETWORK_DTYPES)
    p.add_argument(
        "--local-energies",
        nargs="+",
        default=["compact"],
        choices=LOCAL_ENERGY_MODES,
        help="the driver's local energies, a case each (%(default)s; both are always timed)",
    )
    p.add_argument("--J2", type=float, default=0.5, help="(%(default)s)")
    p.add_argument("--samples", type=int, default=256, help="samples per step (%(default)s)")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per chunk")
    for name in ("layers", "d", "heads"):  # the paper's model by default
        p.add_argument(_flag(name), type=int, default=PAPER_MODEL[name])
    p.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up step")
    p.add_argument("--max-minutes", type=float, default=None, help="start no case after this long")
    p.add_argument(
        "--no-driver-step",
        action="store_true",
        help="skip timing the driver's own step (saves one compilation per case)",
    )
    p.add_argument("--out", help="CSV of the phases (one row per case and phase)")
    p.add_argument("--markdown", help="also write the summary table here")
    _add_device(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.set_defaults(handler=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    import pandas as pd

    from vitnqs.bench import phases

    if args.child:
        phases.child_main(args.child)
        return 0
    if args.out is None:
        print("vitnqs benchmark: error: --out is required", file=sys.stderr)
        return EXIT_BAD_INPUT
    cases = [
        phases.Case(
            RunConfig(
                attention=attention,
                L=L,
                J2=args.J2,
                layers=args.layers,
                d=args.d,
                heads=args.heads,
                samples=args.samples,
            ),
            RunOptions(
                chunk_size=args.chunk_size,
                sr_mode=args.sr_modes[0],
                network_dtype=dtype,
                local_energy=local_energy,
                progress=False,
            ),
            sr_modes=tuple(args.sr_modes),
            steps=args.steps,
            time_driver=not args.no_driver_step,
        )
        for L in args.L
        for dtype in args.network_dtypes
        for local_energy in args.local_energies
        for attention in args.attention
    ]
    budget = None if args.max_minutes is None else 60 * args.max_minutes
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for result in phases.run_cases(cases, budget):
        rows += phases.rows(result)
        pd.DataFrame(rows).to_csv(args.out, index=False)  # after each case: a cut run keeps it
    table = pd.DataFrame(rows)
    text = phases.summary_table(table) if len(table) else "no case finished\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if len(table) else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``vitnqs`` argument parser with all subcommands."""
    parser = _Parser(prog="python -m vitnqs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _add_optimize,
        _add_pilot,
        _add_pilot_table,
        _add_symmetrize,
        _add_finetune,
        _add_reference,
        _add_attention_maps,
        _add_collect,
        _add_table1,
        _add_step_times,
        _add_findings,
        _add_figure,
        _add_shastry_sutherland,
        _add_concat,
        _add_benchmark,
    ):
        add(sub)
    return parser


def _guarded(args: argparse.Namespace) -> int:
    """Run a command's handler; every failure the commands share ends in its exit code.

    The same codes for every command (``vitnqs.stops``): bad input 2 (naming the field),
    diverged 3, a damaged finished run 65, busy 73, a file error 74 (naming the file),
    interrupted 75, a machine that cannot run it 78.
    """
    from vitnqs.checkpoint import RunDirBusy
    from vitnqs.plan import MemoryRefused
    from vitnqs.rundir import DamagedRun

    error_line = f"vitnqs {args.command}: error:"
    try:
        return args.handler(args)
    except MemoryRefused as error:
        print(f"{error_line} {error.flagged()}", file=sys.stderr)
        return EXIT_BAD_SETUP
    except FieldError as error:
        print(f"{error_line} {error.flagged()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except devices.DeviceError as error:
        print(f"{error_line} {error}", file=sys.stderr)
        return EXIT_BAD_SETUP
    except RunDirBusy as error:
        print(f"{error_line} {error}", file=sys.stderr)
        return EXIT_BUSY
    except Interrupted as error:
        print(f"[vitnqs] {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Diverged as error:
        print(f"{error_line} {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except DamagedRun as error:
        print(f"{error_line} {error}", file=sys.stderr)
        return EXIT_DAMAGED_RUN
    except OSError as error:  # a full disk, a read-only directory
        where = error.filename or getattr(args, "out", None) or "?"
        print(f"{error_line} {where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_IO


def main(argv: Sequence[str] | None = None, signals: StopSignals | None = None) -> int:
    """Entry point; returns the process exit code.

    Args:
        argv: the arguments (default: the process's).
        signals: stop-signal handlers already installed (``python -m vitnqs`` installs
            them first thing, :mod:`vitnqs.__main__`); installed here if not.

    """
    if signals is None:
        with StopSignals() as signals:
            return main(argv, signals)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.signals = signals
    if args.command in TIMING_COMMANDS:
        # like a run (the optimize handler): the device before NetKet loads, then the guard
        devices.configure(args.device)
        if not getattr(args, "child", None):  # a benchmark's case process: its parent checked
            try:
                devices.require_device(args.device)
            except devices.DeviceError as error:
                print(f"vitnqs {args.command}: error: {error}", file=sys.stderr)
                return EXIT_BAD_SETUP
    try:
        signals.check("during start-up")
    except Interrupted as error:
        print(f"[vitnqs] {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _guarded(args)
