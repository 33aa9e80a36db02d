"""Time per optimization step and peak memory of the paper-size ViT (d 60, h 10, b 2, 4 layers).

Each (attention, L) runs in its own process so that its peak memory is its own:
one compilation step, then ``--steps`` timed steps; the median is printed, with the
ratio to Factored measured in the same invocation. Usage:

    python benchmarks/step_time.py --samples 1024 --steps 3 --L 4 6
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(attention: str, L: int, samples: int, steps: int, chunk: int | None, on_the_fly: bool):
    """Run in a child process: median seconds per step and peak RSS in MB."""
    import jax

    from vitnqs import optimize as run

    config = run.RunConfig(
        attention=attention, L=L, J2=0.5, layers=4, samples=samples, steps=steps + 1
    )
    driver = run.build_driver(config, run.RunOptions(chunk_size=chunk, ntk_on_the_fly=on_the_fly))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        driver.run(1, show_progress=False)
        jax.block_until_ready(driver.state.parameters)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times[1:]), "compile_s": times[0], "peak_mb": peak_mb,
            "parameters": driver.state.n_parameters}  # fmt: skip


def main() -> None:
    """Measure every (L, attention) in a child process and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--L", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--attention", nargs="+", default=["factored", "decoupled", "t5"])
    parser.add_argument("--on-the-fly", action="store_true", help="lazy NTK (NetKet's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        attention, L = args.child.split(":")
        print(
            json.dumps(
                measure(
                    attention, int(L), args.samples, args.steps, args.chunk_size, args.on_the_fly
                )
            )
        )
        return
    print(f"samples {args.samples}, chunk {args.chunk_size}, on_the_fly {args.on_the_fly}, "
          f"{args.steps} timed steps after one compile step")  # fmt: skip
    header = ("L", "attention", "params", "s/step", "vs Fact.", "compile s", "peak MB")
    print("{:>3} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8}".format(*header))
    for L in args.L:
        results = {}
        for attention in args.attention:
            extra = ["--on-the-fly"] if args.on_the_fly else []
            child = ["--child", f"{attention}:{L}", "--samples", str(args.samples),
                     "--steps", str(args.steps), "--chunk-size", str(args.chunk_size),
                     *extra]  # fmt: skip
            out = subprocess.run(
                [sys.executable, __file__, *child], capture_output=True, text=True, check=True
            )
            results[attention] = json.loads(out.stdout.strip().splitlines()[-1])
        base = results.get("factored", next(iter(results.values())))["median_s"]
        for attention, r in results.items():
            ratio = r["median_s"] / base
            print(f"{L:>3} {attention:>10} {r['parameters']:>8} {r['median_s']:>8.2f} "
                  f"{ratio:>8.2f} {r['compile_s']:>9.1f} {r['peak_mb']:>8.0f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
