#!/usr/bin/env bash
# Optuna search (hparams_search=lite0_batch_pairs) around experiment=history/lite0_batch_pairs on one split,
# ../shared at image_size 128, seed 1, ranked by validation ROC-AUC; then its trials, best first
# (benchmarks/tables.py trials; the sweep's own summary.md has every metric).
# Each trial trains at most max_epochs epochs of the recipe's 20-epoch cosine schedule (the schedule is
# kept, the run is cut short), so a trial is the start of a full run.
#   bash benchmarks/hparams.sh [split, default unseen_classes] [trials, default 8] [max_epochs, default 3]
# Running the same command again continues the study (sqlite in outputs/).
set -euo pipefail
split=${1:-unseen_classes}
trials=${2:-8}
epochs=${3:-3}
python src/train.py experiment=history/lite0_batch_pairs hparams_search=lite0_batch_pairs \
  data.split="$split" seed=1 data.root=../shared/data data.download=false image_size=128 \
  backbone.weights_path=weights/tf_efficientnet_lite0.pth trainer.enable_progress_bar=false \
  trainer.max_epochs="$epochs" model.scheduler.T_max=20 \
  search_name="lite0_$split" hydra.sweeper.n_trials="$trials" > /dev/null
python benchmarks/tables.py trials "outputs/hparams_search/lite0_$split"
