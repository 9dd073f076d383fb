#!/usr/bin/env bash
# Re-run every benchmark of bench/README.md, then print its tables to bench/results/summary.md.
# One torch thread and OMP_NUM_THREADS=1: the machine is shared (see bench/README.md). About
# 55 minutes on the README's 2-core CPU. ZOO=1 also re-runs bench/zoo_speed.py (every zoo
# model, AlexNet and VOne included: much longer).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=bench/results
export OMP_NUM_THREADS=1
T="--threads 1"
mkdir -p "$R"

# The acceptance figures, with many rounds (multiples of 6: the balanced orders of three
# contenders, see bench/_common.py).
$PY bench/attack_overhead.py $T --repeats 24 --model mnist-cnn --batch 256 \
    --out $R/attack_overhead_cnn256_long.json
$PY bench/vs_torchattacks.py $T --repeats 36 --model mnist-cnn --variants fp32,channels_last \
    --out $R/vs_torchattacks_cnn_long.json
# A second, independent measurement of the closest fp32 figure (MI-FGSM), two contenders.
$PY bench/vs_torchattacks.py $T --repeats 48 --model mnist-cnn --attack mifgsm --variants fp32 \
    --out $R/vs_torchattacks_mifgsm_repeat.json

# The grids (mnist-cnn at batch 256 is in the long runs above).
$PY bench/attack_overhead.py $T --repeats 6 --out $R/attack_overhead.json
$PY bench/vs_torchattacks.py $T --repeats 12 --model mnist-mlp,mnist-convnet \
    --variants fp32,channels_last --out $R/vs_torchattacks.json

# Where advlab's time goes besides the passes (per-call and per-step costs).
$PY bench/fixed_costs.py $T --out $R/fixed_costs.json

# The other attack options against torchattacks (large effects: few rounds).
$PY bench/vs_torchattacks.py $T --repeats 3 --model mnist-cnn \
    --variants fp32,bf16,fp16,compile,channels_last+bf16 --out $R/vs_torchattacks_levers.json
# The allocator: glibc keeps freed memory instead of returning it to the system (both
# libraries pay fewer page faults; compare with vs_torchattacks_cnn_long.json).
MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 \
    $PY bench/vs_torchattacks.py $T --repeats 12 --model mnist-cnn --variants fp32 \
    --out $R/vs_torchattacks_malloc.json

# Results of the options (sign flips, success rates), evaluation and data levers.
$PY bench/speed_levers.py $T --repeats 6 --n 1000 \
    --variants fp32,bf16,fp16,channels_last,compile --out $R/speed_levers.json

$PY bench/train_throughput.py $T --repeats 5 --out $R/train_throughput.json
$PY bench/pipeline.py $T --repeats 3 --naive --out $R/pipeline.json

# Ensemble memory: RSS that follows the live tensors (default), glibc's own heap, batch 1024.
$PY bench/ensemble_memory.py $T --repeats 3 --time-repeats 4 --out $R/ensemble_memory.json
$PY bench/ensemble_memory.py $T --repeats 3 --time-repeats 0 --allocator default \
    --out $R/ensemble_memory_default_alloc.json
$PY bench/ensemble_memory.py $T --repeats 1 --time-repeats 0 --sizes 6 --batch 1024 \
    --out $R/ensemble_memory_b1024.json

# The student's exact VOne front end: subnormal taps flushed vs kept, and FFT, for scale.
$PY bench/vone_frontend.py $T --repeats 8 --out $R/vone_frontend.json

if [[ "${ZOO:-0}" == 1 ]]; then
    $PY bench/zoo_speed.py $T --out $R/zoo_speed.json
fi

$PY bench/summarize.py --results $R > $R/summary.md
