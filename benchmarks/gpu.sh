#!/usr/bin/env bash
# GPU throughput at 224 px with bf16: the training loop (Lightning vs bare PyTorch) and the loader
# (cache none / memory, 0-8 workers) against the model. Run from the project root on a CUDA machine:
#   bash benchmarks/gpu.sh [data root, default ../shared/data]
set -euo pipefail
root=${1:-../shared/data}
python benchmarks/loop.py --accelerator gpu --precision bf16-mixed --image-size 224 --batch-size 64 --steps 60 --repeats 3
python benchmarks/data.py --root "$root" --accelerator gpu --precision bf16-mixed --image-size 224 --batch-size 64 \
  --batches 30 --workers 0 4 8 --caches none memory
