"""Let ``import netket`` work where flax.nnx does not match jax (used by gpu_check.sh only).

NetKet imports ``flax.nnx`` at import time; the pipeline's models use ``flax.linen``
only. Where ``jax.experimental.hijax`` lacks a name that flax.nnx subclasses or calls
at import (jax 0.11.2 with flax 0.12.9: ``HiPrimitive``), this supplies a placeholder
for the missing names so that the import completes; nnx itself would not work, and
nothing here uses it. gpu_check.sh installs this file as ``sitecustomize`` only after
``import flax.nnx`` failed, and the check's log says so.
"""

import sys


def _patch() -> None:
    try:
        import jax.experimental.hijax as hijax
    except ImportError:
        return
    missing = []

    class Placeholder:
        def __init__(self, *args, **kwargs):
            pass

    def placeholder_function(*args, **kwargs):
        return args[0] if args else None

    def module_getattr(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        missing.append(name)
        return Placeholder if name[:1].isupper() else placeholder_function

    hijax.__getattr__ = module_getattr
    try:
        import flax.nnx  # noqa: F401
    except Exception as error:  # report, and let the real import fail later
        print(f"[flax_nnx_compat] flax.nnx still fails: {error!r}", file=sys.stderr)
    if missing:
        print(f"[flax_nnx_compat] placeholders for jax.experimental.hijax: {missing}",
              file=sys.stderr)  # fmt: skip


_patch()
