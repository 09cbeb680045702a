#!/usr/bin/env bash
# Levers, one at a time on top of the strongest recipe (finetune_last_blocks_batch_pairs), on one
# split (unseen_classes by default), seed 1, ../shared at image_size 128; then the table
# (benchmarks/quality.py). A run folder that has its metrics.json is not run again.
#   bash benchmarks/levers.sh [output folder, default outputs/levers] [split, default unseen_classes]
set -euo pipefail
out=${1:-outputs/levers}
split=${2:-unseen_classes}
offline=(data.root=../shared/data data.download=false image_size=128 trainer.enable_progress_bar=false
         data.split=$split seed=1)
mobilenet=(backbone.weights_path=../shared/weights/mobilenet_v2_imagenet_quant.pth)

run() {  # name, overrides...
  local name=$1; shift
  if [ ! -f "$out/$split/$name/metrics.json" ]; then
    python src/train.py experiment=finetune_last_blocks_batch_pairs "${offline[@]}" "$@" \
      hydra.run.dir="$out/$split/$name" > /dev/null
  fi
}

run base "${mobilenet[@]}"
run test_time_flip "${mobilenet[@]}" model.test_time_flip=true
run more_blocks "${mobilenet[@]}" backbone.trainable_fraction=0.4 model.backbone_lr=3e-5
run embedding_128 "${mobilenet[@]}" model.network.embedding_dim=128
run batch_64 "${mobilenet[@]}" batch_size=64
run lr_3e-4 "${mobilenet[@]}" model.optimizer.lr=3e-4

labels=()
for run_dir in "$out/$split"/*/; do
  name=$(basename "$run_dir")
  [ -f "$run_dir/metrics.json" ] && labels+=("$name=$run_dir")
done
python benchmarks/quality.py --validation "${labels[@]}"
