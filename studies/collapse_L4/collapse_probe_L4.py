"""Issue 16: one 4 x 4 run, then its trained state evaluated exactly (full sum, no noise).

    PYTHONPATH=src python studies/collapse_L4/collapse_probe_L4.py decoupled 0 --steps 150
    PYTHONPATH=src python studies/collapse_L4/collapse_probe_L4.py t5 1 --exact-sampler

Prints the training trajectory (relative error, acceptance, sampled variance every 25
steps) and, from a full sum over the 12,870 Sz = 0 states, the exact energy, the exact
variance per site^2 and the participation ratio 1 / sum p^2 of |psi|^2 (the ground state:
329). A collapsed run has a participation ratio of 5-100 and a small *sampled* variance
next to a large exact one. Results: studies/collapse_L4/README.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import netket as nk
import numpy as np

import vitnqs.optimize
from vitnqs.config import RunConfig, RunOptions
from vitnqs.physics import hilbert_space, j1j2_hamiltonian
from vitnqs.rundir import load_run

E0 = -0.5286202  # per site, ED at J2 = 0.5


def main() -> None:
    """Run, then print the trajectory and the exact full-sum evaluation."""
    parser = argparse.ArgumentParser()
    parser.add_argument("attention")
    parser.add_argument("seed", type=int)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--shift", type=float, default=1e-2)
    parser.add_argument("--exact-sampler", action="store_true", help="no Markov chain")
    parser.add_argument("--out", default="/tmp/issue16")
    a = parser.parse_args()
    if a.exact_sampler:  # independent samples from |psi|^2
        import netket.sampler.exact as exact

        exact.ExactSamplerState.acceptance = property(lambda self: float("nan"))
        vitnqs.optimize.exchange_sampler = lambda L, n_chains: nk.sampler.ExactSampler(
            hilbert_space(L * L)
        )
    config = RunConfig(
        a.attention, 4, 0.5, 1, d=16, heads=4, b=2, samples=a.samples, steps=a.steps,
        lr=a.lr, diag_shift=a.shift, seed=a.seed,
    )  # fmt: skip
    tag = "exact" if a.exact_sampler else "mc"
    out = Path(a.out) / f"{a.attention}_s{a.seed}_M{a.samples}_lr{a.lr}_sh{a.shift}_{tag}"
    vitnqs.optimize.optimize(config, out, RunOptions(progress=False))
    rows = list(csv.DictReader(open(out / "history.csv")))
    for r in rows[::25] + rows[-1:]:
        print(
            f"step {r['step']:>4} rel {float(r['rel_error']):.3f} acc {r['acceptance'][:5]:5} "
            f"sampled var {float(r['energy_variance']):.1e}"
        )
    summary, model, params = load_run(out)
    hamiltonian = j1j2_hamiltonian(4, 0.5)
    state = nk.vqs.FullSumState(hamiltonian.hilbert, model, variables={"params": params})
    stats = state.expect(hamiltonian)
    prob = np.abs(state.to_array()) ** 2
    energy = float(stats.mean.real) / 16
    print(
        f"{out.name}: final MC rel {summary['rel_error']:.4f}; exact rel "
        f"{abs(energy - E0) / abs(E0):.4f}, exact var/N^2 {float(stats.variance.real) / 256:.1e}, "
        f"participation {1 / np.sum(prob**2):.0f}, max p {prob.max():.3f}"
    )


if __name__ == "__main__":
    main()
