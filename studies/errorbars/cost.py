"""Seconds of a final evaluation before (|psi|^2 samples only) and with the tail probe.

For each finished run: the plain and the symmetrized network, chains thermalized as in
the pipeline, each evaluation timed on its second call (compiled), with the probe's
samples. Usage: python studies/errorbars/cost.py RUN_DIR...
"""

import sys
import time

import netket as nk

from vitnqs.evaluation import (
    PLAIN_EVAL_DISCARD,
    SYMMETRIZED_EVAL_DISCARD,
    evaluate,
    warm_started_state,
)
from vitnqs.physics import exchange_sampler, j1j2_hamiltonian
from vitnqs.plan import EVAL_CHAIN_LENGTH
from vitnqs.rundir import load_run


def timed(call):
    """Seconds of the second call, and its result."""
    call()  # compiles
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


for run in sys.argv[1:]:
    summary, model, params = load_run(run)
    c = summary["config"]
    L, M, N = c["L"], c["samples"], c["L"] ** 2
    H = j1j2_hamiltonian(L, c["J2"])
    for kind in ("plain", "symmetrized"):
        if kind == "plain":
            vstate = nk.vqs.MCState(exchange_sampler(L, n_chains=M), model,
                                    variables={"params": params}, n_samples=EVAL_CHAIN_LENGTH * M,
                                    n_discard_per_chain=64, sampler_seed=0)  # fmt: skip
            vstate.sample()
            vstate.n_discard_per_chain = PLAIN_EVAL_DISCARD
        else:
            vstate = warm_started_state(model, params, L, M, 0, n_samples=EVAL_CHAIN_LENGTH * M,
                                        n_discard_per_chain=SYMMETRIZED_EVAL_DISCARD)  # fmt: skip

        def before(vstate=vstate, H=H):
            """The evaluation before the probe: NetKet's statistics of |psi|^2 samples."""
            vstate.reset()
            return vstate.expect(H)

        old, _ = timed(before)
        new, (result, _) = timed(lambda vstate=vstate, H=H, N=N: evaluate(vstate, H, N))
        print(f"{c['attention']} {kind}: before {old:.2f} s, with the probe {new:.2f} s "
              f"({new / old:.1f}x), probe samples {result.probe_samples}"
              f"{', unreliable' if result.unreliable else ''}", flush=True)  # fmt: skip
