#!/usr/bin/env bash
# The README's results table: sweeps on ../shared (64 px Flowers102 at image_size 128, the shared
# MobileNetV2 weights), then benchmarks/quality.py over them. Run from the project root.
#   bash benchmarks/results.sh [output folder, default outputs/results]
set -euo pipefail
out=${1:-outputs/results}
offline=(data.root=../shared/data data.download=false
         backbone.weights_path=../shared/weights/mobilenet_v2_imagenet_quant.pth
         image_size=128 trainer.enable_progress_bar=false)
splits=stratified,official,unseen_classes

python src/train.py -m experiment=finetune_last_blocks_batch_pairs data.split=$splits seed=1,2,3 "${offline[@]}" \
  hydra.sweep.dir="$out/finetune_last_blocks_batch_pairs"
# the same without the miner, the flips and the wider margin: the sampled pairs only
python src/train.py -m experiment=finetune_last_blocks data.split=$splits seed=1,2,3 "${offline[@]}" \
  hydra.sweep.dir="$out/finetune_last_blocks"
# no training at all: ImageNet features through the untrained 64-d head
python src/train.py -m experiment=finetune_last_blocks trainer.max_epochs=0 trainer.min_epochs=0 \
  data.split=$splits seed=1 "${offline[@]}" hydra.sweep.dir="$out/frozen_floor"
# the tutorial's recipe: one run of (at least) an hour, stratified, by benchmarks/curves.sh (which also
# draws the README figure); its row is added when that run folder is there
tutorial=()
if [ -f outputs/curves/tutorial/metrics.json ]; then tutorial=("tutorial (60 min)=outputs/curves/tutorial"); fi

python benchmarks/quality.py finetune_last_blocks_batch_pairs="$out/finetune_last_blocks_batch_pairs" \
  finetune_last_blocks="$out/finetune_last_blocks" "${tutorial[@]}" "frozen floor=$out/frozen_floor"
