#!/usr/bin/env bash
# What a CUDA machine measures in one go, from the repository root, with the machine's own python3 (CUDA PyTorch):
#   1. benchmarks/throughput.py: the training loop's reference and fast paths and the neighbour search, on the GPU;
#   2. a short ResNet-18 run of the CIFAR-10 (JPEG) copy on the fast path: profile cifar10-jpg-resnet18 of
#      benchmarks/accuracy.py (SimCLR -> SCAN -> self-label) with shortened stages.
# Usage: benchmarks/gpu_check.sh CIFAR10_JPG_TAR_GZ OUT_DIR [WHEEL_DIR]
#   WHEEL_DIR: wheels of what the machine lacks (e.g. faiss-cpu, easydict), installed into a scratch folder first.
# Each part has its own time limit, so one that overruns still leaves the other's figures; everything it wrote
# (results, logs) ends up in OUT_DIR/gpu_check.tar.gz.
set -u
data_tar=$1 out=$2 wheels=${3:-}
source "$(dirname "$0")/cuda_machine.sh"
mkdir -p datasets && tar xzf "$data_tar" -C datasets || exit 1

timeout "${THROUGHPUT_SECONDS:-300}" $PYTHON benchmarks/throughput.py --batch 512 --steps 15 --workers 4 8 \
  --sizes 50000 200000 --search_repeats 2 --out benchmarks/results/throughput_gpu.md 2>&1 | tee "$out/throughput.log"

timeout "${PIPELINE_SECONDS:-270}" $PYTHON benchmarks/accuracy.py --profile cifar10-jpg-resnet18 --seeds 1 \
  data_root=datasets pretext.epochs="${PRETEXT_EPOCHS:-25}" pretext.knn_every=5 \
  clustering.epochs="${CLUSTERING_EPOCHS:-3}" selflabel.epochs="${SELFLABEL_EPOCHS:-3}" 2>&1 | tee "$out/pipeline.log"

tar czf "$out/gpu_check.tar.gz" --ignore-failed-read benchmarks/results/throughput_gpu.md \
  benchmarks/results/cifar10-jpg-resnet18* \
  $(find results/benchmarks/cifar10-jpg-resnet18 \( -name '*.log' -o -name '*.yml' -o -name '*.json' -o -name '*.csv' \
    -o -name '*.png' -o -name '*.html' \) 2>/dev/null) "$out/machine.txt" "$out/throughput.log" "$out/pipeline.log"
ls -la "$out"
