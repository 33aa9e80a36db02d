"""vitnqs: Vision Transformer wave functions with T5, Decoupled and Factored attention.

Reproduces R. Rende and L. L. Viteritti, Mach. Learn.: Sci. Technol. 6, 010501 (2025).
"""

import os

__version__ = "0.1.0"

# XLA's GPU autotuner fails to compile the float64 batched products of the Jacobian as
# Triton GEMM fusions ("No candidates could be compiled", jax 0.11.2 on an H200,
# docs/performance.md); cuBLAS computes them. Set before JAX starts its GPU backend;
# an explicit setting of the flag by the user wins. Ignored on the CPU.
if "xla_gpu_enable_triton_gemm" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_gpu_enable_triton_gemm=false"
    ).strip()
