#!/usr/bin/env bash
# Levers, one at a time, on one split (unseen_classes by default), seed 1, ../shared at image_size 128;
# then the table (benchmarks/quality.py). A run folder that has its metrics.json is not run again.
#   bash benchmarks/levers.sh [output folder, default outputs/levers] [split, default unseen_classes] [recipe]
# recipe mobilenet (default): finetune_last_blocks_batch_pairs with the shared MobileNetV2 weights,
#   full runs (about 35 minutes).
# recipe lite0: lite0_batch_pairs (weights/tf_efficientnet_lite0.pth, scripts/convert_efficientnet_lite.py),
#   each run cut after 3 of its 20 scheduled epochs like a benchmarks/hparams.sh trial (on unseen_classes
#   every full run keeps its first epoch's weights anyway); about 15 minutes.
set -euo pipefail
out=${1:-outputs/levers}
split=${2:-unseen_classes}
recipe=${3:-mobilenet}
offline=(data.root=../shared/data data.download=false image_size=128 trainer.enable_progress_bar=false
         data.split=$split seed=1)
if [ "$recipe" = lite0 ]; then
  folder="$out/${split}_lite0"
  base=(experiment=lite0_batch_pairs backbone.weights_path=weights/tf_efficientnet_lite0.pth
        trainer.max_epochs=3 model.scheduler.T_max=20)
else
  folder="$out/$split"
  base=(experiment=finetune_last_blocks_batch_pairs backbone.weights_path=../shared/weights/mobilenet_v2_imagenet_quant.pth)
fi

run() {  # name, overrides...
  local name=$1; shift
  if [ ! -f "$folder/$name/metrics.json" ]; then
    python src/train.py "${base[@]}" "${offline[@]}" "$@" hydra.run.dir="$folder/$name" > /dev/null
  fi
}

run base
if [ "$recipe" = lite0 ]; then
  run m_per_class_8 data.m_per_class=8
  run validate_every_quarter_epoch trainer.val_check_interval=0.25
  run warmup_40_steps model.warmup_steps=40
else
  run test_time_flip model.network.test_time_flip=true
  run more_blocks backbone.trainable_fraction=0.4 model.backbone_lr=3e-5
  run embedding_128 model.network.embedding_dim=128
  run batch_64 batch_size=64
  run lr_3e-4 model.optimizer.lr=3e-4
fi

labels=()
for run_dir in "$folder"/*/; do
  name=$(basename "$run_dir")
  [ -f "$run_dir/metrics.json" ] && labels+=("$name=$run_dir")
done
python benchmarks/quality.py --validation "${labels[@]}"
