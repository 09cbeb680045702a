#!/usr/bin/env bash
# Levers, one at a time, on one split (unseen_classes by default), seed 1, ../shared at image_size 128;
# then the table (benchmarks/tables.py seeds). A run folder that has its metrics.json is not run again.
#   bash benchmarks/levers.sh [output folder, default outputs/levers] [split, default unseen_classes] [recipe]
# recipe mobilenet (default): finetune_last_blocks_batch_pairs with the shared MobileNetV2 weights,
#   full runs (about 35 minutes).
# recipe lite0: lite0_batch_pairs (weights/tf_efficientnet_lite0.pth, scripts/convert_efficientnet_lite.py),
#   each run cut after 3 of its 20 scheduled epochs like a benchmarks/hparams.sh trial (on unseen_classes
#   every full run keeps its first epoch's weights anyway); about 15 minutes.
# recipe lite0_full: lite0_batch_pairs, full runs, and the levers of issue 24: the checkpoint kept by
#   val_auroc, an EMA of the weights, EfficientNet-Lite1/2, a pytorch-metric-learning loss, the light
#   augmentation (uncached); the fourth argument names the levers to run (default all), e.g.
#   bash benchmarks/levers.sh outputs/levers stratified lite0_full "base monitor_val_auroc"
set -euo pipefail
out=${1:-outputs/levers}
split=${2:-unseen_classes}
recipe=${3:-mobilenet}
only=${4:-}
offline=(data.root=../shared/data data.download=false image_size=128 trainer.enable_progress_bar=false
         data.split=$split seed=1)
for variant in 0 1 2; do  # the converted EfficientNet-Lite weights the lite0 recipes use
  if [ "$recipe" != mobilenet ] && [ ! -f weights/tf_efficientnet_lite$variant.pth ]; then
    python scripts/convert_efficientnet_lite.py weights/tf_efficientnet_lite$variant.pth --variant $variant > /dev/null
  fi
done
if [ "$recipe" = lite0_full ]; then
  folder="$out/${split}_lite0_full"
  base=(experiment=history/lite0_batch_pairs backbone.weights_path=weights/tf_efficientnet_lite0.pth)
elif [ "$recipe" = lite0 ]; then
  folder="$out/${split}_lite0"
  base=(experiment=history/lite0_batch_pairs backbone.weights_path=weights/tf_efficientnet_lite0.pth
        trainer.max_epochs=3 model.scheduler.T_max=20)
else
  folder="$out/$split"
  base=(experiment=history/finetune_last_blocks_batch_pairs backbone.weights_path=../shared/weights/mobilenet_v2_imagenet_quant.pth)
fi

run() {  # name, overrides...
  local name=$1; shift
  if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then return; fi
  if [ ! -f "$folder/$name/metrics.json" ]; then
    python src/train.py "${base[@]}" "${offline[@]}" "$@" hydra.run.dir="$folder/$name" > /dev/null
  fi
}

run base
if [ "$recipe" = lite0_full ]; then
  run monitor_val_auroc callbacks.model_checkpoint.monitor=val_auroc
  run ema_0.99 'callbacks=[default,ema]' callbacks.ema.decay=0.99
  run lite2 backbone.name=tf_efficientnet_lite2 backbone.weights_path=weights/tf_efficientnet_lite2.pth
  run pml_multi_similarity model/loss=pml model.loss.miner=null
  run lite1 backbone.name=tf_efficientnet_lite1 backbone.weights_path=weights/tf_efficientnet_lite1.pth
  run augmentation_light data.augmentation=light model.cache_frozen_features=false
elif [ "$recipe" = lite0 ]; then
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
python benchmarks/tables.py seeds --validation "${labels[@]}"
