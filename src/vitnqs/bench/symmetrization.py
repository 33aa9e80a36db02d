"""The cost of the symmetrized network: the coset sum against the full space group."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vitnqs import measure
from vitnqs.physics import hilbert_space
from vitnqs.symmetry import symmetrize


def symmetrization_cost(
    model: nn.Module, params: Any, L: int, batch: int = 64, repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Evaluation time of the coset sum, the full space-group sum and the plain network.

    Also checks that the two sums give the same ``log psi`` (the largest difference).

    Args:
        model: a patch-translation-invariant network (a :class:`~vitnqs.models.ViT`).
        params: its ``params`` collection.
        L: linear lattice size.
        batch: configurations per evaluation.
        repeats: timed evaluations after the compiling one (the best one counts).
        seed: seed of the random ``Sz = 0`` configurations.

    Returns:
        Dict with ``plain_s``, ``cosets_s``, ``space_group_s`` (seconds per batch),
        ``n_cosets``, ``n_space_group`` (evaluations per configuration, spin inversion
        included), ``ratio`` (``space_group_s / cosets_s``) and ``max_log_psi_diff``.

    """
    sigma = hilbert_space(L * L).random_state(jax.random.key(seed), batch)
    variables = {"params": {"module": params}}
    timings, outputs = {}, {}
    wrappers = {
        "plain": (model, {"params": params}),
        "cosets": (symmetrize(model, L), variables),
        "space_group": (symmetrize(model, L, group="space_group"), variables),
    }
    for name, (module, v) in wrappers.items():
        fn = jax.jit(module.apply)
        outputs[name] = np.asarray(fn(v, sigma).block_until_ready())
        timings[name] = min(
            measure.timed(lambda fn=fn, v=v: fn(v, sigma)).wall_s for _ in range(repeats)
        )
    diff = outputs["cosets"] - outputs["space_group"]
    diff = diff - 2j * np.pi * np.round(diff.imag / (2 * np.pi))
    return {
        "plain_s": timings["plain"],
        "cosets_s": timings["cosets"],
        "space_group_s": timings["space_group"],
        "n_cosets": 2 * len(np.asarray(wrappers["cosets"][0].permutations)),
        "n_space_group": 2 * len(np.asarray(wrappers["space_group"][0].permutations)),
        "ratio": timings["space_group"] / timings["cosets"],
        "max_log_psi_diff": float(np.max(np.abs(diff))),
    }
