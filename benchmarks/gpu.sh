#!/usr/bin/env bash
# The first thing to run on a GPU machine, from the project root, within about 5 minutes on one GPU:
# the GPU tests (pytest -m gpu: a GPU run against a CPU run, DDP on one GPU, 16-mixed and bf16-mixed,
# every use command on the GPU), then short runs of experiment=photos in 32-true, 16-mixed and
# bf16-mixed (DDP on every visible GPU too when there are several) with one table at the end.
#   bash benchmarks/gpu.sh [Flowers102 root, default ../shared/data160]
# The throughput of the bare loop and of the loader: python benchmarks/loop.py / benchmarks/data.py
# with --accelerator gpu (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device here: nothing to run (bash benchmarks/gpu.sh on a GPU machine)"
  exit 0
fi
root=${1:-../shared/data160}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -m pytest -m gpu -n 0 -q -p no:cacheprovider
python benchmarks/gpu.py --root "$root"
