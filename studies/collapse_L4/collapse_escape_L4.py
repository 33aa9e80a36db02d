"""Issue 16: continue a collapsed 4 x 4 run with exact (full-sum) SR or Monte Carlo SR.

    PYTHONPATH=src python studies/collapse_L4/collapse_escape_L4.py RUN_DIR exact 15
    PYTHONPATH=src python studies/collapse_L4/collapse_escape_L4.py RUN_DIR 128 30

Both use a constant lr of 0.1 and a shift of 1e-2, starting from the trained parameters
of RUN_DIR (for instance one from collapse_probe_L4.py). ``exact`` uses the full-sum state
and the dense QGT, about 10 s per step on one core. An integer M uses a kernel SR with M
Metropolis samples. The exact relative error and participation ratio are printed.
Results: studies/collapse_L4/README.md.
"""

from __future__ import annotations

import sys

import netket as nk
import numpy as np
import optax

from vitnqs.physics import exchange_sampler, j1j2_hamiltonian
from vitnqs.rundir import load_run

E0 = -0.5286202


def main() -> None:
    """Continue the run and print the exact energy along the way."""
    run_dir, mode, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, model, params = load_run(run_dir)
    hamiltonian = j1j2_hamiltonian(4, 0.5)
    full = nk.vqs.FullSumState(hamiltonian.hilbert, model, variables={"params": params})
    if mode == "exact":
        qgt = nk.optimizer.qgt.QGTJacobianDense
        sr = nk.optimizer.SR(qgt, diag_shift=1e-2, holomorphic=False)
        driver = nk.driver.VMC(
            hamiltonian, optax.sgd(0.1), variational_state=full, preconditioner=sr
        )
    else:
        M = int(mode)
        state = nk.vqs.MCState(
            exchange_sampler(4, M), model, n_samples=M, n_discard_per_chain=0,
            variables={"params": params}, seed=1, sampler_seed=2,
        )  # fmt: skip
        for _ in range(30):  # burn-in of the fresh chains
            state.sample()
        driver = nk.driver.VMC_SR(
            hamiltonian, optax.sgd(0.1), diag_shift=1e-2, variational_state=state,
            use_ntk=True, mode="complex",
        )  # fmt: skip

    def report(step, log, driver):
        if step % 3 == 0 or step == steps - 1:
            full.parameters = driver.state.parameters
            energy = float(full.expect(hamiltonian).mean.real) / 16
            prob = np.abs(full.to_array()) ** 2
            print(
                f"{mode} step {step}: exact rel {abs(energy - E0) / abs(E0):.4f}, "
                f"participation {1 / np.sum(prob**2):.0f}",
                flush=True,
            )
        return True

    driver.run(steps, out=None, callback=report, show_progress=False)


if __name__ == "__main__":
    main()
