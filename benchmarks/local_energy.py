"""Local energies with and without the zero matrix elements, for the paper's ViT, on the CPU.

For every lattice side ``L``, coupling ``J2`` and attention, a freshly initialised ViT
(d 60, heads 10, b 2, 4 layers) samples ``M`` configurations (``n_chains = M``, a few
sweeps of the exchange sampler), then :func:`vitnqs.bench.local_energy.measure_modes` times
``vstate.local_estimators(H)`` for NetKet's padded operator and for the compact one,
side by side in this process. Prints a table row per case as soon as it is measured
and appends it to the CSV::

    python benchmarks/local_energy.py --L 6 --csv local_energy.csv
    python benchmarks/local_energy.py --L 10 --repeats 2 --chunk-size 512

The waste is the share of padded configurations whose matrix element is zero; the ratio
is padded / compact seconds; ``configs_*`` count the network evaluations of one call
(padded: ``M (2 + n_bonds)``, the sample and its padded connections; compact: ``M +
slots``). Compile times are excluded (one call per mode first).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

COLUMNS = (
    "L", "J2", "attention", "M", "chunk", "waste", "n_bonds", "max_flips", "nonzero", "slots",
    "configs_padded", "configs_compact", "padded_s", "compact_s", "ratio", "round_trip_ms",
    "max_abs_diff", "sample_s",
)  # fmt: skip


def measure(L: int, J2: float, attention: str, samples: int, chunk: int | None, sweeps: int,
            repeats: int, seed: int) -> dict:  # fmt: skip
    """One case: sample, then :func:`vitnqs.bench.local_energy.measure_modes`."""
    import jax
    import netket as nk

    from vitnqs.bench.local_energy import measure_modes
    from vitnqs.models import ViT
    from vitnqs.physics import exchange_sampler

    vstate = nk.vqs.MCState(
        exchange_sampler(L, n_chains=samples),
        ViT(attention, layers=4, d=60, heads=10, b=2),
        n_samples=samples,
        n_discard_per_chain=0,
        chunk_size=chunk,
        seed=seed,
        sampler_seed=seed + 1,
    )
    start = time.perf_counter()
    jax.block_until_ready(vstate.sample(n_discard_per_chain=sweeps))  # the chain's samples
    sample_s = time.perf_counter() - start
    result = measure_modes(vstate, L, J2, repeats=repeats)
    return {
        "L": L, "J2": J2, "attention": attention, "M": samples, "chunk": chunk,
        **result, "round_trip_ms": 1e3 * result["round_trip_s"], "sample_s": sample_s,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Measure every requested case and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, nargs="+", default=[6, 10])
    parser.add_argument("--J2", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--attention", nargs="+", default=["factored", "t5"])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--sweeps", type=int, default=4, help="sweeps sampled before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=Path("local_energy.csv"))
    args = parser.parse_args(argv)

    new_file = not args.csv.exists()
    with args.csv.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        shown = COLUMNS[:4] + COLUMNS[5:]
        print(" ".join(f"{c[:10]:>10}" for c in shown), flush=True)
        for L in args.L:
            for J2 in args.J2:
                for attention in args.attention:
                    row = measure(L, J2, attention, args.samples, args.chunk_size,
                                  args.sweeps, args.repeats, args.seed)  # fmt: skip
                    writer.writerow(row)
                    handle.flush()
                    cells = [row[c] for c in shown]
                    print(
                        " ".join(
                            f"{c:>10.4g}" if isinstance(c, float) else f"{c!s:>10}" for c in cells
                        ),
                        flush=True,
                    )
    from vitnqs.local_energy import STATS

    print(f"buckets seen {dict(STATS['buckets'])}; compilations {len(STATS['traces'])}",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
