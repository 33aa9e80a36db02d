"""Attention maps of trained runs (Figure 4) and how much they depend on the input.

Both the initial and the optimized parameters are evaluated on the same inputs,
samples drawn with a fixed seed from the optimized state, so that the two rows of
Figure 4 differ only by the parameters. Maps are averaged over heads.
"""

from __future__ import annotations

from pathlib import Path

import netket as nk
import numpy as np
import pandas as pd

from vitnqs.models import ViT, attention_maps
from vitnqs.physics import exchange_sampler
from vitnqs.rundir import INIT_PARAMS, load_run

N_SHOWN_CONFIGS = 3
"""Configurations whose individual T5 maps are shown."""
THERMALIZATION_SWEEPS = 50
"""Sweeps discarded per chain before the analysis samples are taken."""


def sample_state(model: ViT, params: dict, L: int, n_samples: int, seed: int) -> np.ndarray:
    """``n_samples`` configurations from ``|psi|^2``, one per Markov chain, fixed seed."""
    vstate = nk.vqs.MCState(
        exchange_sampler(L, n_chains=n_samples),
        model,
        variables={"params": params},
        n_samples=n_samples,
        n_discard_per_chain=THERMALIZATION_SWEEPS,
        sampler_seed=seed,
    )
    return np.asarray(vstate.sample()).reshape(-1, L * L)


def input_dependence(maps: np.ndarray) -> float:
    """Spread of head-averaged maps across inputs relative to their mean.

    ``mean_ij std_sigma(alpha_ij) / mean_ij |mean_sigma(alpha_ij)|`` for maps of shape
    ``(inputs, n, n)``: 0 for input-independent weights.
    """
    return float(maps.std(axis=0).mean() / np.abs(maps.mean(axis=0)).mean())


def analyse(run_dir: str | Path, n_samples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Head-averaged attention maps and input-dependence numbers of one run.

    Args:
        run_dir: a finished run (``summary.json``, ``init_params`` and ``params``).
        n_samples: configurations to average the Decoupled softmax term over.
        seed: seed of the sampler that draws them.

    Returns:
        ``maps`` in long form (columns ``stage, term, config, layer, i, j, value``) with
        terms ``alpha`` (the first three configurations, T5) or ``softmax_mean`` and
        ``positional`` (Decoupled), and ``dependence`` (one row per stage and term).

    """
    summary, model, final = load_run(run_dir)
    init = load_run(run_dir, INIT_PARAMS)[2]
    c = summary["config"]
    sigma = sample_state(model, final, c["L"], n_samples, seed)
    maps, dependence = [], []
    for stage, params in (("initial", init), ("optimized", final)):
        for layer, weights in enumerate(attention_maps(model, params, sigma)):
            terms = {"alpha": weights["alpha"].mean(axis=1)}  # average over heads
            if "softmax_term" in weights:
                terms["softmax"] = weights["softmax_term"].mean(axis=1)
            for term, per_input in terms.items():
                dependence.append(
                    {
                        "stage": stage,
                        "term": term,
                        "layer": layer,
                        "input_dependence": input_dependence(per_input),
                    }  # fmt: skip
                )
            shown = {f"alpha_config{k}": terms["alpha"][k] for k in range(N_SHOWN_CONFIGS)}
            if "softmax" in terms:
                shown = {
                    "softmax_mean": terms["softmax"].mean(axis=0),
                    "positional": weights["positional_term"].mean(axis=0),
                }
            for term, matrix in shown.items():
                n = matrix.shape[0]
                i, j = np.divmod(np.arange(n * n), n)
                maps.append(
                    pd.DataFrame(
                        {
                            "stage": stage,
                            "term": term,
                            "layer": layer,
                            "i": i,
                            "j": j,
                            "value": matrix.ravel(),
                        }  # fmt: skip
                    )
                )
    key = {k: c[k] for k in ("attention", "L", "J2", "layers", "seed")}
    maps_table = pd.concat(maps, ignore_index=True).assign(**key, samples=n_samples)
    dependence_table = pd.DataFrame(dependence).assign(**key, samples=n_samples)
    return maps_table, dependence_table
