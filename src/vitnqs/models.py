"""The Vision Transformer (ViT) wave function with T5, Decoupled and Factored attention.

Architecture of Rende and Viteritti, Mach. Learn.: Sci. Technol. 6, 010501 (2025):
patch embedding, ``layers`` pre-LayerNorm encoder blocks (multi-head attention and a
``4d`` GELU MLP, each with a skip connection) and a complex log-cosh output head.
All parameters are real and float64; ``log psi`` is complex. The arithmetic is float64
too unless ``dtype=jnp.float32`` (then parameters are rounded to float32 in every
evaluation, and ``log psi`` is complex64).

Choices where the paper is silent (also listed in docs/physics.md):

* the query-key product is divided by the square root of the head size ``d // heads``;
* the positional vector ``p`` of every head and layer has one entry per displacement on
  the periodic patch grid (``n`` entries, see :mod:`vitnqs.geometry`);
* kernels and ``p`` are initialised with Xavier-uniform, biases with zeros, as in the
  NetKet ViT tutorial by the same authors.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from netket.nn.activation import log_cosh

from vitnqs.config import ATTENTIONS, validate_architecture
from vitnqs.geometry import check_patching, displacement_index, extract_patches

_PARAM_DTYPE = jnp.float64


def _dense(features: int, name: str, dtype: Any) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.xavier_uniform(),
        param_dtype=_PARAM_DTYPE,
        dtype=dtype,
        name=name,
    )


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(param_dtype=_PARAM_DTYPE, dtype=dtype, name=name)


class MultiHeadAttention(nn.Module):
    """Multi-head attention over the patch sequence with relative positions.

    ``A_i = W concat_heads( sum_j alpha_ij V x_j )`` with, per head,

    * ``t5``:        ``alpha_ij = softmax_j(q_i . k_j / sqrt(d_head) + p_{i-j})``
    * ``decoupled``: ``alpha_ij = softmax_j(q_i . k_j / sqrt(d_head)) + p_{i-j}``
    * ``factored``:  ``alpha_ij = p_{i-j}`` (independent of the input).

    The weights are sown into the ``intermediates`` collection (``alpha``; for
    Decoupled also ``softmax_term`` and ``positional_term``); this costs nothing unless
    the caller asks for that collection, see :func:`attention_maps`.
    """

    attention: str
    """One of :data:`ATTENTIONS`."""
    d: int
    """Embedding dimension."""
    heads: int
    """Number of heads; each has value dimension ``d // heads``."""
    grid: int
    """Side of the periodic patch grid, ``L // b``; the sequence has ``grid**2`` tokens."""
    dtype: Any = jnp.float64
    """Dtype of the arithmetic (parameters are stored in float64)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the attention.

        Args:
            x: tokens of shape ``(batch, n, d)``.

        Returns:
            Array of shape ``(batch, n, d)``.

        """
        n = self.grid**2
        head_dim = self.d // self.heads
        p = self.param("p", nn.initializers.xavier_uniform(), (self.heads, n), _PARAM_DTYPE)
        positional = p.astype(self.dtype)[:, displacement_index(self.grid)]  # (heads, n, n)

        def split_heads(y):  # (batch, n, d) -> (batch, heads, n, head_dim)
            return y.reshape(*y.shape[:-1], self.heads, head_dim).swapaxes(-2, -3)

        v = split_heads(_dense(self.d, "V", self.dtype)(x))
        if self.attention == "factored":
            alpha = positional
            mixed = jnp.einsum("hij,bhjc->bhic", alpha, v)
        else:
            q = split_heads(_dense(self.d, "Q", self.dtype)(x))
            k = split_heads(_dense(self.d, "K", self.dtype)(x))
            logits = jnp.einsum("bhic,bhjc->bhij", q, k) / math.sqrt(head_dim)
            if self.attention == "t5":
                alpha = jax.nn.softmax(logits + positional, axis=-1)
            elif self.attention == "decoupled":
                softmax_term = jax.nn.softmax(logits, axis=-1)
                alpha = softmax_term + positional
                self.sow("intermediates", "softmax_term", softmax_term)
                self.sow("intermediates", "positional_term", positional)
            else:
                raise ValueError(f"unknown attention {self.attention!r}; allowed: {ATTENTIONS}")
            mixed = jnp.einsum("bhij,bhjc->bhic", alpha, v)
        self.sow("intermediates", "alpha", alpha)
        mixed = mixed.swapaxes(-2, -3).reshape(*x.shape[:-1], self.d)
        return _dense(self.d, "W", self.dtype)(mixed)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``."""

    attention: str
    """One of :data:`ATTENTIONS`."""
    d: int
    """Embedding dimension."""
    heads: int
    """Number of attention heads."""
    grid: int
    """Side of the periodic patch grid."""
    dtype: Any = jnp.float64
    """Dtype of the arithmetic (parameters are stored in float64)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to tokens of shape ``(batch, n, d)``."""
        attention = MultiHeadAttention(
            self.attention, self.d, self.heads, self.grid, self.dtype, name="attn"
        )
        x = x + attention(_layer_norm("norm_attn", self.dtype)(x))
        y = _layer_norm("norm_mlp", self.dtype)(x)
        y = _dense(4 * self.d, "mlp_in", self.dtype)(y)
        y = nn.gelu(y)
        return x + _dense(self.d, "mlp_out", self.dtype)(y)


class OutputHead(nn.Module):
    """``z = LN(sum_i y_i)``; ``log psi = sum_beta log cosh(LN(Dense z) + i LN(Dense z))``."""

    d: int
    """Embedding dimension (also the number of complex hidden units)."""
    dtype: Any = jnp.float64
    """Dtype of the arithmetic (parameters are stored in float64)."""

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        """Map tokens ``(batch, n, d)`` to complex ``log psi`` of shape ``(batch,)``."""
        z = _layer_norm("norm_sum", self.dtype)(y.sum(axis=-2))
        re = _layer_norm("norm_re", self.dtype)(_dense(self.d, "dense_re", self.dtype)(z))
        im = _layer_norm("norm_im", self.dtype)(_dense(self.d, "dense_im", self.dtype)(z))
        return jnp.sum(log_cosh(re + 1j * im), axis=-1)


class ViT(nn.Module):
    """Vision Transformer wave function on an ``L x L`` lattice of spins 1/2.

    Called on configurations of shape ``(batch, L*L)`` with entries +-1 (site order in
    :mod:`vitnqs.geometry`), returns the complex ``log psi`` of shape ``(batch,)``.
    """

    attention: str = "factored"
    """Attention mechanism, one of :data:`ATTENTIONS`."""
    layers: int = 4
    """Number of encoder blocks."""
    d: int = 60
    """Embedding dimension."""
    heads: int = 10
    """Number of attention heads; ``d`` must be divisible by it."""
    b: int = 2
    """Linear patch size; ``L`` must be divisible by it."""
    dtype: Any = jnp.float64
    """Dtype of the arithmetic: float64, or float32 for speed (parameters stay float64)."""

    @nn.compact
    def __call__(self, sigma: jax.Array) -> jax.Array:
        """Evaluate ``log psi(sigma)``."""
        sigma = jnp.atleast_2d(sigma)
        L = int(round(sigma.shape[-1] ** 0.5))
        validate_architecture(self.attention, L, self.layers, self.d, self.heads, self.b)
        grid = check_patching(L, self.b)
        x = _dense(self.d, "embed", self.dtype)(extract_patches(sigma.astype(self.dtype), self.b))
        for layer in range(self.layers):
            block = EncoderBlock(
                self.attention, self.d, self.heads, grid, self.dtype, name=f"block_{layer}"
            )
            x = block(x)
        return OutputHead(self.d, self.dtype, name="head")(x)


def attention_maps(model: ViT, params: Any, sigma: jax.Array) -> list[dict[str, np.ndarray]]:
    """Attention weights of every layer for a batch of configurations.

    Args:
        model: the :class:`ViT`.
        params: its parameters (the ``params`` collection, not the full variables).
        sigma: configurations of shape ``(batch, L*L)``.

    Returns:
        One dict per layer with ``alpha`` of shape ``(batch, heads, n, n)``; for
        Decoupled also ``softmax_term`` (same shape) and ``positional_term`` of shape
        ``(heads, n, n)``, with ``alpha = softmax_term + positional_term``.

    """
    sigma = jnp.atleast_2d(sigma)
    _, state = model.apply({"params": params}, sigma, mutable=["intermediates"])
    maps = []
    for layer in range(model.layers):
        sown = state["intermediates"][f"block_{layer}"]["attn"]
        entry = {key: np.asarray(value[0]) for key, value in sown.items()}
        if entry["alpha"].ndim == 3:  # factored: the same weights for every input
            entry["alpha"] = np.broadcast_to(
                entry["alpha"], (sigma.shape[0], *entry["alpha"].shape)
            )
        maps.append(entry)
    return maps
