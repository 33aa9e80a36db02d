"""Command line: ``python -m vitnqs <command> ...`` (run ``--help`` for the list)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vitnqs.models import ATTENTIONS


class _Parser(argparse.ArgumentParser):
    """Argument errors exit with code 2 and name the option, like argparse itself."""


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    from vitnqs.optimize import RunConfig

    defaults = RunConfig(attention="factored", L=6, J2=0.0, layers=4)
    p = sub.add_parser(
        "optimize",
        help="train the ViT by VMC + SR on the J1-J2 model (resumable)",
        description="Train the ViT wave function by VMC + SR on the J1-J2 model. "
        "Rerunning with the same --out resumes from the last checkpoint.",
    )
    p.add_argument("--attention", required=True, choices=ATTENTIONS)
    p.add_argument("--L", type=int, required=True, help="linear lattice size")
    p.add_argument("--J2", type=float, required=True, help="next-nearest-neighbour coupling (>= 0)")
    p.add_argument("--layers", type=int, required=True, help="number of encoder blocks")
    p.add_argument("--d", type=int, default=defaults.d, help="embedding dimension (%(default)s)")
    p.add_argument(
        "--heads", type=int, default=defaults.heads, help="attention heads (%(default)s)"
    )
    p.add_argument("--b", type=int, default=defaults.b, help="linear patch size (%(default)s)")
    p.add_argument(
        "--samples", type=int, default=defaults.samples, help="samples per step (%(default)s)"
    )
    p.add_argument(
        "--steps", type=int, default=defaults.steps, help="optimization steps (%(default)s)"
    )
    p.add_argument(
        "--lr", type=float, default=defaults.lr, help="initial learning rate (%(default)s)"
    )
    p.add_argument(
        "--diag-shift",
        type=float,
        default=defaults.diag_shift,
        help="SR diagonal shift (%(default)s)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (%(default)s)")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per chunk (memory bound)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints (default: ~5 min)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=_optimize)


def _optimize(args: argparse.Namespace) -> int:
    from vitnqs.optimize import (
        EXIT_BAD_INPUT,
        EXIT_DIVERGED,
        EXIT_INTERRUPTED,
        ConfigError,
        Diverged,
        Interrupted,
        RunConfig,
        RunOptions,
        optimize,
    )

    config = RunConfig(
        attention=args.attention,
        L=args.L,
        J2=args.J2,
        layers=args.layers,
        d=args.d,
        heads=args.heads,
        b=args.b,
        samples=args.samples,
        steps=args.steps,
        lr=args.lr,
        diag_shift=args.diag_shift,
        seed=args.seed,
    )
    options = RunOptions(
        chunk_size=args.chunk_size, checkpoint_every=args.checkpoint_every, progress=not args.quiet
    )
    try:
        optimize(config, args.out, options)
    except ConfigError as error:
        print(f"vitnqs optimize: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as error:
        print(f"[vitnqs] {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Diverged as error:
        print(f"vitnqs optimize: error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vitnqs`` argument parser with all subcommands."""
    parser = _Parser(prog="python -m vitnqs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_optimize(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
