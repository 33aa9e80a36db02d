"""Final evaluations of finished 4 x 4 runs against exact sums over the Sz = 0 states.

For each run directory: the exact energy, variance and V-score of the saved network,
plain and symmetrized, then `--seeds` independent evaluations by the pipeline's own
`vitnqs.evaluation.evaluate` (the |psi|^2 samples of a run's final evaluation, from
chains thermalized afresh, and the tail probe). Prints one row per run, network and seed,
then the coverage: the fraction of |z| < 2 (expected 0.95) for the energy and V-score,
and how many were marked unreliable.
Usage: python studies/errorbars/exact_vs_mc.py RUN_DIR... [--seeds 5] [--rounds 8]
"""

import argparse

import jax
import netket as nk
import numpy as np
import pandas as pd

from vitnqs.estimates import v_score
from vitnqs.evaluation import (
    PLAIN_EVAL_DISCARD,
    SYMMETRIZED_EVAL_DISCARD,
    evaluate,
    warm_started_state,
)
from vitnqs.exact import exact_energy_moments
from vitnqs.physics import exchange_sampler, j1j2_hamiltonian
from vitnqs.plan import EVAL_CHAIN_LENGTH
from vitnqs.rundir import load_run
from vitnqs.symmetry import symmetrize

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--seeds", type=int, default=5)
parser.add_argument("--rounds", type=int, default=8, help="tail-probe rounds at most")
parser.add_argument("--kinds", default="plain,symmetrized")
args = parser.parse_args()

rows = []
for run in args.runs:
    summary, model, params = load_run(run)
    c = summary["config"]
    L, J2, N, M = c["L"], c["J2"], c["L"] ** 2, c["samples"]
    H = j1j2_hamiltonian(L, J2)
    states = H.hilbert.all_states()
    for kind in args.kinds.split(","):
        net = model if kind == "plain" else symmetrize(model, L)
        variables = {"params": params if kind == "plain" else {"module": params}}
        log_psi = np.asarray(jax.jit(net.apply)(variables, states))
        e, v = exact_energy_moments(H, np.exp(log_psi - log_psi.real.max()), N)
        exact_v = v_score(e, v, N)
        for seed in range(args.seeds):
            if kind == "plain":
                vs = nk.vqs.MCState(exchange_sampler(L, n_chains=M), net, variables=variables,
                                    n_samples=EVAL_CHAIN_LENGTH * M, n_discard_per_chain=64,
                                    sampler_seed=seed)  # fmt: skip
                vs.sample()  # thermalized, as a run's chains are
                vs.n_discard_per_chain = PLAIN_EVAL_DISCARD
            else:
                vs = warm_started_state(model, params, L, M, seed, n_samples=EVAL_CHAIN_LENGTH * M,
                                        n_discard_per_chain=SYMMETRIZED_EVAL_DISCARD)  # fmt: skip
            result, _ = evaluate(vs, H, N, seed=seed, max_probe_rounds=args.rounds)
            rows.append({
                "run": c["attention"], "kind": kind, "seed": seed,
                "E exact": e, "E": result.energy, "zE": (result.energy - e) / result.energy_error,
                "V exact": exact_v, "V": result.v_score, "dV": result.v_score_error,
                "zV": (result.v_score - exact_v) / result.v_score_error,
                "V sampled / exact": v_score(result.energy, result.sampled_variance, N) / exact_v,
                "probe samples": result.probe_samples, "unreliable": bool(result.unreliable),
            })  # fmt: skip
            print(rows[-1], flush=True)
table = pd.DataFrame(rows)
pd.set_option("display.width", 250)
print(table.to_markdown(index=False, floatfmt=".4g"))
coverage = table.groupby(["run", "kind"]).agg(
    runs=("seed", "size"),
    E_within_2_sigma=("zE", lambda z: np.mean(np.abs(z) < 2)),
    V_within_2_sigma=("zV", lambda z: np.mean(np.abs(z) < 2)),
    unreliable=("unreliable", "sum"),
    V_exact=("V exact", "first"),
    V_median=("V", "median"),
    V_sampled_over_exact=("V sampled / exact", "median"),
    probe_samples=("probe samples", "median"),
)
print(coverage.to_markdown(floatfmt=".3g"))
