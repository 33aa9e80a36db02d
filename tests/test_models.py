"""The ViT against the paper's parameter counts, a naive NumPy implementation and symmetries."""

import cmath
import math

import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import pytest

from vitnqs.geometry import translate
from vitnqs.models import ViT, attention_maps

PAPER_COUNTS = {
    6: {"t5": 184_260, "decoupled": 184_260, "factored": 154_980},
    10: {"t5": 184_900, "decoupled": 184_900, "factored": 155_620},
}


@pytest.mark.parametrize("L", [6, 10])
@pytest.mark.parametrize("attention", ["t5", "decoupled", "factored"])
def test_parameter_counts_match_the_paper(L, attention):
    model = ViT(attention=attention, layers=4, d=60, heads=10, b=2)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, L * L)))
    assert nk.jax.tree_size(shapes["params"]) == PAPER_COUNTS[L][attention]


# ---- a deliberately naive reference: loops over sites, tokens and heads --------------


def _layer_norm(x, p, eps=1e-6):  # flax.linen.LayerNorm defaults
    mu = sum(x) / len(x)
    var = sum((v - mu) ** 2 for v in x) / len(x)
    return [(v - mu) / math.sqrt(var + eps) * p["scale"][k] + p["bias"][k] for k, v in enumerate(x)]


def _dense(x, p):
    kernel, bias = p["kernel"], p["bias"]
    return [sum(x[a] * kernel[a][c] for a in range(len(x))) + bias[c] for c in range(len(bias))]


def _gelu(v):  # tanh approximation, the flax default
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _attention(tokens, p, attention, heads, g):
    n, d = len(tokens), len(tokens[0])
    dh = d // heads
    v = [_dense(t, p["V"]) for t in tokens]
    if attention != "factored":
        q = [_dense(t, p["Q"]) for t in tokens]
        k = [_dense(t, p["K"]) for t in tokens]
    out = [[0.0] * d for _ in range(n)]
    for h in range(heads):
        cols = range(h * dh, (h + 1) * dh)
        for i in range(n):
            Xi, Yi = divmod(i, g)
            pos = [p["p"][h][((j // g - Xi) % g) * g + (j % g - Yi) % g] for j in range(n)]
            if attention == "factored":
                alpha = pos
            else:
                logits = [sum(q[i][c] * k[j][c] for c in cols) / math.sqrt(dh) for j in range(n)]
                if attention == "t5":
                    alpha = _softmax([logits[j] + pos[j] for j in range(n)])
                else:
                    alpha = [s + pos[j] for j, s in enumerate(_softmax(logits))]
            for c in cols:
                out[i][c] = sum(alpha[j] * v[j][c] for j in range(n))
    return [_dense(o, p["W"]) for o in out]


def naive_log_psi(params, sigma, attention, layers, heads, b):
    params = jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), params)
    L = int(round(len(sigma) ** 0.5))
    g = L // b
    patches = [[0.0] * (b * b) for _ in range(g * g)]
    for x in range(L):
        for y in range(L):
            patches[(x // b) * g + y // b][(x % b) * b + y % b] = float(sigma[x * L + y])
    tokens = [_dense(t, params["embed"]) for t in patches]
    for layer in range(layers):
        blk = params[f"block_{layer}"]
        normed = [_layer_norm(t, blk["norm_attn"]) for t in tokens]
        att = _attention(normed, blk["attn"], attention, heads, g)
        tokens = [
            [a + c for a, c in zip(t, s, strict=True)] for t, s in zip(tokens, att, strict=True)
        ]
        mlp = [
            _dense(
                [_gelu(u) for u in _dense(_layer_norm(t, blk["norm_mlp"]), blk["mlp_in"])],
                blk["mlp_out"],
            )
            for t in tokens
        ]
        tokens = [
            [a + c for a, c in zip(t, s, strict=True)] for t, s in zip(tokens, mlp, strict=True)
        ]
    head = params["head"]
    z = _layer_norm([sum(t[c] for t in tokens) for c in range(len(tokens[0]))], head["norm_sum"])
    re = _layer_norm(_dense(z, head["dense_re"]), head["norm_re"])
    im = _layer_norm(_dense(z, head["dense_im"]), head["norm_im"])
    return sum(cmath.log(cmath.cosh(complex(r, i))) for r, i in zip(re, im, strict=True))


def _random_params(model, L, seed):
    """Initial parameters with every leaf perturbed, so biases and LayerNorms matter too."""
    params = model.init(jax.random.key(seed), jnp.ones((1, L * L)))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
        a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _random_configs(L, n, seed):
    rng = np.random.default_rng(seed)
    return np.array(
        [rng.permutation([1] * (L * L // 2) + [-1] * (L * L // 2)) for _ in range(n)], dtype=float
    )


def _same_log_psi(a, b, tol):
    """Equal real parts and equal phases modulo 2 pi."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a.real, b.real, atol=tol, rtol=0)
    np.testing.assert_allclose(np.angle(np.exp(1j * (a.imag - b.imag))), 0, atol=tol)


@pytest.mark.parametrize("attention", ["t5", "decoupled", "factored"])
def test_matches_naive_implementation(attention):
    L, b, heads, layers = 4, 2, 2, 2
    model = ViT(attention=attention, layers=layers, d=8, heads=heads, b=b)
    params = _random_params(model, L, seed=3)
    sigma = _random_configs(L, 3, seed=4)
    fast = model.apply({"params": params}, sigma)
    slow = [naive_log_psi(params, s, attention, layers, heads, b) for s in sigma]
    _same_log_psi(fast, slow, tol=1e-10)


@pytest.mark.parametrize("attention", ["t5", "decoupled", "factored"])
def test_invariant_under_patch_translations(attention):
    L, b = 6, 2
    model = ViT(attention=attention, layers=2, d=8, heads=2, b=b)
    params = _random_params(model, L, seed=5)
    sigma = _random_configs(L, 4, seed=6)
    log_psi = model.apply({"params": params}, sigma)
    for dx, dy in [(b, 0), (0, b), (2 * b, b)]:
        _same_log_psi(model.apply({"params": params}, translate(sigma, L, dx, dy)), log_psi, 1e-10)
    # a one-site shift moves spins across patch borders: not a symmetry of this ansatz
    shifted = model.apply({"params": params}, translate(sigma, L, 1, 0))
    assert np.max(np.abs(np.asarray(shifted) - np.asarray(log_psi))) > 1e-3


def test_factored_weights_do_not_depend_on_the_input():
    L = 4
    model = ViT(attention="factored", layers=2, d=8, heads=2, b=2)
    params = _random_params(model, L, seed=7)
    maps = attention_maps(model, params, _random_configs(L, 3, seed=8))
    for layer in maps:
        assert layer["alpha"].shape == (3, 2, 4, 4)
        np.testing.assert_array_equal(layer["alpha"][0], layer["alpha"][1])
        np.testing.assert_array_equal(layer["alpha"][0], layer["alpha"][2])
    t5 = ViT(attention="t5", layers=1, d=8, heads=2, b=2)
    t5_maps = attention_maps(t5, _random_params(t5, L, 9), _random_configs(L, 2, 10))
    assert (
        np.max(np.abs(t5_maps[0]["alpha"][0] - t5_maps[0]["alpha"][1])) > 1e-3
    )  # the check can fail


def test_decoupled_without_queries_and_keys_is_factored_plus_one_over_n():
    L, layers, n = 4, 2, 4
    decoupled = ViT(attention="decoupled", layers=layers, d=8, heads=2, b=2)
    params = _random_params(decoupled, L, seed=11)
    for layer in range(layers):
        attn = params[f"block_{layer}"]["attn"]
        for name in ("Q", "K"):
            attn[name] = jax.tree_util.tree_map(jnp.zeros_like, attn[name])
    factored_params = jax.tree_util.tree_map(lambda a: a, params)
    for layer in range(layers):
        attn = factored_params[f"block_{layer}"]["attn"]
        del attn["Q"], attn["K"]
        attn["p"] = attn["p"] + 1.0 / n
    factored = ViT(attention="factored", layers=layers, d=8, heads=2, b=2)
    sigma = _random_configs(L, 5, seed=12)
    _same_log_psi(
        decoupled.apply({"params": params}, sigma),
        factored.apply({"params": factored_params}, sigma),
        1e-12,
    )
    maps = attention_maps(decoupled, params, sigma)
    for layer in maps:
        np.testing.assert_allclose(layer["softmax_term"], 1.0 / n, atol=1e-15)
        np.testing.assert_allclose(
            layer["alpha"], layer["softmax_term"] + layer["positional_term"], atol=1e-15
        )
