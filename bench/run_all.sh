#!/usr/bin/env bash
# Re-run every benchmark of bench/README.md (one thread: the machine is shared; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
R=bench/results
mkdir -p "$R"
# the acceptance figures, with many rounds
$PY bench/attack_overhead.py --threads 1 --repeats 25 --model mnist-cnn --batch 256 \
    --out $R/attack_overhead_cnn256_long.json
$PY bench/vs_torchattacks.py --threads 1 --repeats 41 --model mnist-cnn \
    --variants fp32,channels_last --out $R/vs_torchattacks_cnn_long.json
# the grids
$PY bench/attack_overhead.py --threads 1 --repeats 9 --out $R/attack_overhead.json
$PY bench/vs_torchattacks.py --threads 1 --repeats 15 --model mnist-cnn,mnist-mlp,mnist-convnet \
    --variants fp32,channels_last --out $R/vs_torchattacks.json
$PY bench/vs_torchattacks.py --threads 1 --repeats 5 --model mnist-cnn \
    --variants fp32,bf16,fp16,compile,channels_last+bf16 --out $R/vs_torchattacks_levers.json
$PY bench/speed_levers.py --threads 1 --repeats 5 --out $R/speed_levers.json
$PY bench/train_throughput.py --threads 1 --repeats 5 --out $R/train_throughput.json
$PY bench/pipeline.py --threads 1 --repeats 3 --naive --out $R/pipeline.json
$PY bench/ensemble_memory.py --threads 1 --repeats 3 --out $R/ensemble_memory.json
$PY bench/ensemble_memory.py --threads 1 --repeats 3 --batch 1024 --time-repeats 3 \
    --out $R/ensemble_memory_b1024.json
