#!/usr/bin/env bash
# Emulates x86-64 machines on one CPU: XLA's instruction set (--xla_cpu_max_isa) x
# OpenBLAS's kernels (OPENBLAS_CORETYPE), for two quick-preset runs (6 x 6 T5 at J2 = 0,
# 4 x 4 T5 at J2 = 0.5, 1 thread each), plus the first cell twice (the same machine).
# Usage: bash studies/reproducibility/grid.sh OUT  (then compare.py OUT)
set -euo pipefail
out=${1:?output folder}
quick=(--layers 1 --d 16 --heads 4 --b 2 --samples 128 --steps 300 --lr 0.1
       --diag-shift 0.01 --seed 0 --device cpu --quiet)
run() {  # cell isa coretype L J2
    local dir="$out/$1/L$4_J2$5"
    [ -f "$dir/summary.json" ] && return 0
    local xla="--xla_force_host_platform_device_count=1"
    [ "$2" = native ] || xla="$xla --xla_cpu_max_isa=$2"
    local blas=()
    [ "$3" = native ] || blas=(OPENBLAS_CORETYPE="$3")
    echo "$(date +%T) $1: XLA $2, OpenBLAS $3, L=$4 J2=$5"
    env "${blas[@]}" XLA_FLAGS="$xla" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        python -m vitnqs optimize --attention t5 --L "$4" --J2 "$5" "${quick[@]}" --out "$dir"
}
for L_J2 in "4 0.5" "6 0.0"; do
    set -- $L_J2
    run native-native native native "$1" "$2"
    run native-native-again native native "$1" "$2"
    run native-skylakex native SKYLAKEX "$1" "$2"
    run avx2-native AVX2 native "$1" "$2"
    run avx2-skylakex AVX2 SKYLAKEX "$1" "$2"
done
