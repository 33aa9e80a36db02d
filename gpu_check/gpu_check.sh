#!/usr/bin/env bash
# GPU check of the pipeline's code (see gpu_check/gpu_check.py for the sections).
#
#   bash gpu_check/gpu_check.sh                 # on a GPU machine: writes into $OUT
#   bash gpu_check/gpu_check.sh --device cpu    # toy size on the CPU (CI)
#
# On a machine without NetKet (the lent GPU image has jax, flax and optax only, and no
# network), the wheels in .whl/ are installed into /tmp/site first; make them with
# `bash gpu_check/gpu_check.sh --download-wheels` where PyPI is reachable.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(netket==3.23.0 igraph==1.0.0 texttable==1.7.2 plum-dispatch==2.10.1
        beartype==0.23.1 sparse==0.19.3 orjson==3.13.0)
if [[ "${1:-}" == "--download-wheels" ]]; then
    # CPython 3.12 on x86-64 Linux, the GPU image's interpreter; no dependencies: the
    # image has the rest (numpy, scipy, numba, jax, flax, optax, einops, equinox, rich)
    for wheel in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$wheel" || exit 1
    done
    ls -l .whl
    exit 0
fi

OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
{
    echo "gpu_check $(date -u +%FT%TZ) on $(hostname), args: $*"
    if ! "$PYTHON" -c "import netket" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
        echo "installing $(ls .whl | wc -l) wheels from .whl into /tmp/site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    if ! "$PYTHON" -c "import flax.nnx" 2>/tmp/flax_nnx.err; then
        # flax.nnx, which NetKet imports (we use flax.linen only), may not match the
        # image's jax (jax 0.11.2 with flax 0.12.9: 'hijax' has no 'HiPrimitive')
        echo "flax.nnx does not import here: $(tail -1 /tmp/flax_nnx.err); using the shim"
        mkdir -p /tmp/compat && cp gpu_check/flax_nnx_compat.py /tmp/compat/sitecustomize.py
        export PYTHONPATH="/tmp/compat:$PYTHONPATH"
    fi
    "$PYTHON" gpu_check/gpu_check.py --out "$OUT" "$@"
} 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
