#!/usr/bin/env bash
# The speedrun on one CUDA machine, from the repository root, with the machine's own python3 (CUDA PyTorch).
# Usage: benchmarks/speedrun.sh CIFAR10_JPG_TAR OUT [WHEEL_DIR]
#   WHEEL_DIR: wheels of what the machine lacks (e.g. faiss-cpu, easydict), installed into a scratch folder first.
#   SMOKE=1: every stage one epoch (about a minute: every code path on the GPU before the full run's minutes).
# Writes OUT/speedrun.json and OUT/speedrun.md (benchmarks/speedrun.py), OUT/machine.txt, OUT/speedrun.log and the
# stages' logs, configs and metrics under OUT/runs; the model files are removed from OUT to keep it small. Render
# the README block from the JSON with: python benchmarks/speedrun.py --render OUT/speedrun.json
set -u
data_tar=$1 out=$2 wheels=${3:-}
source "$(dirname "$0")/cuda_machine.sh"
extra=()
[ -n "${SMOKE:-}" ] && extra=(epochs=1)
SECONDS=0
timeout "${SPEEDRUN_SECONDS:-590}" $PYTHON benchmarks/speedrun.py "$data_tar" "$out" --readme '' ${extra[@]+"${extra[@]}"} \
  2>&1 | tee "$out/speedrun.log"
status=${PIPESTATUS[0]}
echo "command wall time: $SECONDS s (python included), exit $status" | tee -a "$out/speedrun.log"
find "$out" \( -name '*.pth.tar' -o -name '*.tmp' \) -delete
rm -rf "$out/data"
exit "$status"
