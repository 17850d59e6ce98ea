# Sourced by the scripts run on a lent CUDA machine (gpu_check.sh, speedrun.sh) with $out and $wheels set: the
# machine's own python3 (CUDA PyTorch) as $PYTHON, the wheels of what it lacks (e.g. faiss-cpu, easydict) installed
# into a scratch folder on PYTHONPATH, and the GPU, driver, torch and cores written to $out/machine.txt.
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
if [ -n "$wheels" ]; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cuda_site \
    "$wheels"/*.whl && export PYTHONPATH=/tmp/cuda_site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PYTHON -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
  nproc; } 2>&1 | tee "$out/machine.txt"
