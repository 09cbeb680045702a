#!/usr/bin/env bash
# Real photos (issue 29): Flowers102 at 160 px on the shorter side with each photo's own shape
# (../shared/data160, centre-cropped by data.resize=crop), every run also scored on 600 photos of five
# flowers from another collection (../shared/flower_photos, data.foreign: measured every epoch and at
# the end, never used to choose). Validation (every pair of the val images) chooses; then the table
# (benchmarks/tables.py seeds). Run from the project root, alone on the machine. A run folder that has its
# metrics.json (a sweep: its summary.md) is not run again, and a stopped sweep started again skips its
# finished jobs and continues the stopped one from its last complete epoch: a stopped script continues.
#   bash benchmarks/photos.sh levers [output folder, default outputs/photos] [lever names, default all]
#     lite0_ema_auroc, then one lever at a time (no_ema: without its average of the weights): stratified,
#     seed 1 (15-20 minutes a run at 128 px; crops_uncached about three times that), and WiSE-FT mixes
#     of the first run's checkpoint (wise.txt: their validation table)
#   bash benchmarks/photos.sh results [output folder]
#     experiment=photos (160 px), 3 seeds x stratified/official/unseen_classes (about 2.5 hours), its table
#     and the goal table (tables.py seeds, tables.py goal)
#   bash benchmarks/photos.sh tutorial [output folder] [MAX_TIME, default 00:01:00:00]
#     experiment=tutorial (MobileNetV2, the Keras recipe) at 160 px, the photos' shorter side, for an hour of
#     training (stratified, seed 1); a stopped run continues with: python src/train.py resume=<output folder>/tutorial
set -euo pipefail
mode=${1:-levers}
out=${2:-outputs/photos}
only=${*:3}
offline=(paths=shared trainer.enable_progress_bar=false)  # conf/paths/shared.yaml: the 160 px photos, the foreign ones, the weights
if [ "$mode" != tutorial ] && [ ! -f weights/tf_efficientnet_lite0.pth ]; then
  python scripts/convert_efficientnet_lite.py weights/tf_efficientnet_lite0.pth
fi

if [ "$mode" = levers ]; then
  run() {  # name, overrides...
    local name=$1; shift
    if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then return; fi
    if [ ! -f "$out/levers/$name/metrics.json" ]; then
      python src/train.py experiment=history/lite0_ema_auroc image_size=128 data.split=stratified seed=1 "${offline[@]}" "$@" \
        hydra.run.dir="$out/levers/$name" > /dev/null
    fi
  }
  run lite0_ema_auroc
  run image_160 image_size=160
  run probe_2_epochs model.probe_epochs=2
  run fewer_blocks backbone.trainable_fraction=0.1
  run trunk_lr_3e-5 model.backbone_lr=3e-5
  run no_ema callbacks.ema=null
  run crops_8_views data.augmentation=crops data.cached_views=8
  run crops_uncached data.augmentation=crops model.cache_frozen_features=false
  # WiSE-FT on the first run's kept checkpoint: trunk mixes, each validated (validation chooses alpha)
  if { [ -z "$only" ] || [[ " $only " == *" wise "* ]]; } && [ ! -f "$out/levers/wise/metrics.json" ]; then
    best=$(python -c "import json; print(json.load(open('$out/levers/lite0_ema_auroc/metrics.json'))['best_checkpoint'])")
    python src/wise.py ckpt_path="$best" alphas=[0.25,0.5,0.75,1.0] hydra.run.dir="$out/levers/wise" \
      > "$out/levers/wise.txt"
  fi
  labels=()
  for run_dir in "$out"/levers/*/; do
    [ -f "$run_dir/metrics.json" ] && labels+=("$(basename "$run_dir")=$run_dir")
  done
  python benchmarks/tables.py seeds --validation --foreign "${labels[@]}"
elif [ "$mode" = results ]; then
  if [ ! -f "$out/photos/summary.md" ]; then
    python src/train.py -m experiment=photos sweep=seeds_x_splits "${offline[@]}" \
      hydra.sweep.dir="$out/photos" > /dev/null
  fi
  python benchmarks/tables.py seeds --foreign photos="$out/photos" --out benchmarks/results/01_photos_3x3.json
  python benchmarks/tables.py goal "$out/photos" --out benchmarks/results/02_photos_goal.json
elif [ "$mode" = tutorial ]; then
  max_time=${3:-00:01:00:00}
  if [ ! -f "$out/tutorial/metrics.json" ]; then
    python src/train.py experiment=tutorial image_size=160 data.split=stratified seed=1 trainer.max_time="$max_time" \
      "${offline[@]}" \
      hydra.run.dir="$out/tutorial" > /dev/null
  fi
  python benchmarks/tables.py seeds --validation --foreign tutorial="$out/tutorial"
else
  echo "usage: bash benchmarks/photos.sh levers|results|tutorial [output folder] [lever names | MAX_TIME]" >&2
  exit 2
fi
