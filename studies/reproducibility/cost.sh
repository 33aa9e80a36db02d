#!/usr/bin/env bash
# The cost of portable CPU numerics: seconds per step of the quick 6 x 6 T5 run (60 steps,
# 1 thread), natively and pinned (XLA AVX2, OpenBLAS Haswell), alternated REPS times so
# that the machine's load falls on both alike. Usage: bash cost.sh OUT [REPS]
set -euo pipefail
out=${1:?output folder}
reps=${2:-3}
quick=(--attention t5 --L 6 --J2 0.0 --layers 1 --d 16 --heads 4 --b 2 --samples 128
       --steps 60 --lr 0.1 --diag-shift 0.01 --seed 0 --device cpu --quiet)
for rep in $(seq "$reps"); do
    for mode in native pinned; do
        xla="--xla_force_host_platform_device_count=1"
        blas=()
        if [ "$mode" = pinned ]; then
            xla="$xla --xla_cpu_max_isa=AVX2"
            blas=(OPENBLAS_CORETYPE=Haswell)
        fi
        env "${blas[@]}" XLA_FLAGS="$xla" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
            python -m vitnqs optimize "${quick[@]}" --out "$out/$mode-$rep"
    done
done
python - "$out" <<'PY'
import sys
from pathlib import Path

import pandas as pd

times = {}
for run in sorted(Path(sys.argv[1]).glob("*-*/history.csv")):
    mode = run.parent.name.split("-")[0]
    times.setdefault(mode, []).append(pd.read_csv(run)["time_s"].iloc[10:].median())
medians = {mode: pd.Series(t).median() for mode, t in times.items()}
for mode, t in times.items():
    print(f"{mode}: median s/step per run {[round(x, 4) for x in t]}, median {medians[mode]:.4f}")
print(f"pinned / native: {medians['pinned'] / medians['native']:.2f}")
PY
