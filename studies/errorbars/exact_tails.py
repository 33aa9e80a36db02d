"""The tail of the local energies of finished 4 x 4 runs, from exact sums over Sz = 0.

For the saved network, plain and symmetrized: the exact V-score, the kurtosis of
E_loc under |psi|^2, the share of the variance and the probability beyond 20 standard
deviations, and the samples that a variance known to 20% needs when sampled from
|psi|^p and reweighted by |psi|^(2-p) (independent samples, delta method), p = 2 (plain
sampling), 1.5, 1, 0.5, 0. Usage: python studies/errorbars/exact_tails.py RUN_DIR...
"""

import sys

import jax
import numpy as np

from vitnqs.physics import j1j2_hamiltonian
from vitnqs.rundir import load_run
from vitnqs.symmetry import symmetrize

POWERS = (2.0, 1.5, 1.0, 0.5, 0.0)

for run in sys.argv[1:]:
    summary, model, params = load_run(run)
    c = summary["config"]
    L, N = c["L"], c["L"] ** 2
    H = j1j2_hamiltonian(L, c["J2"])
    matrix, states = H.to_sparse(), H.hilbert.all_states()
    for kind in ("plain", "symmetrized"):
        net = model if kind == "plain" else symmetrize(model, L)
        variables = {"params": params if kind == "plain" else {"module": params}}
        log_psi = np.asarray(jax.jit(net.apply)(variables, states))
        psi = np.exp(log_psi - log_psi.real.max())
        amplitude = np.abs(psi)
        p = amplitude**2 / (amplitude**2).sum()
        local = (matrix @ psi) / psi / N
        deviation = np.abs(local - (p * local).sum())  # complex: |E_loc - E|
        variance = (p * deviation**2).sum()
        sigma = np.sqrt(variance)
        far = deviation > 20 * sigma
        needed = []
        for power in POWERS:
            q = amplitude**power / (amplitude**power).sum()
            w = amplitude ** (2 - power)
            f = deviation**2
            ratio = (q * w * f).sum() / (q * w).sum()
            spread = (q * w**2 * (f - ratio) ** 2).sum() / (q * w).sum() ** 2
            needed.append(f"p={power:g}: {25 * spread / ratio**2:,.0f}")
        print(
            f"{c['attention']} {kind}: V {N * variance / (p * local).sum().real ** 2:.3f}, "
            f"kurtosis {(p * deviation**4).sum() / variance**2:,.0f}, beyond 20 sigma: "
            f"share of Var {(p * deviation**2 * far).sum() / variance:.2f}, probability "
            f"{(p * far).sum():.1e}; samples for 20% on Var: {', '.join(needed)}"
        )
