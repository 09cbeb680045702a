#!/usr/bin/env bash
# docs/research.md figure: validation ROC-AUC against training minutes for the tutorial's recipe
# (run to its EarlyStopping, 200 epochs, or MAX_TIME of training), the strongest recipe and the
# frozen floor, on ../shared at image_size 128, stratified, seed 1. Run from the project root, alone
# on the machine (a busy machine stretches the minutes).
#   bash benchmarks/curves.sh [output folder, default outputs/curves] [MAX_TIME, default 00:01:00:00]
# A stopped tutorial run continues with: python src/train.py resume=<output folder>/tutorial
set -euo pipefail
out=${1:-outputs/curves}
max_time=${2:-00:01:00:00}
offline=(data.root=../shared/data data.download=false
         backbone.weights_path=../shared/weights/mobilenet_v2_imagenet_quant.pth
         image_size=128 seed=1 trainer.enable_progress_bar=false)

python src/train.py experiment=tutorial trainer.max_time="$max_time" "${offline[@]}" hydra.run.dir="$out/tutorial"
python src/train.py experiment=history/finetune_last_blocks_batch_pairs "${offline[@]}" hydra.run.dir="$out/batch_pairs"
python src/train.py experiment=history/finetune_last_blocks trainer.max_epochs=0 trainer.min_epochs=0 "${offline[@]}" \
  hydra.run.dir="$out/frozen_floor"

python benchmarks/curves.py tutorial="$out/tutorial" finetune_last_blocks_batch_pairs="$out/batch_pairs" \
  "frozen floor=$out/frozen_floor" --out benchmarks/figures/val_auroc_vs_minutes.png
