#!/usr/bin/env bash
# Rebuild this repository's results/ from scratch with real runs on the generated smoke data (the README's
# "A real leaderboard" section): every row with its record, the tables, the page and the figures.
# Needs the real BYOL-A 512-d weights at ../shared/weights/ and the packaged CREPE / Resemblyzer weights.
set -euo pipefail
cd "$(dirname "$0")/.."
W=../shared/weights/AudioNTT2020-BYOLA-64x96d512.pth
export EVAR_RESULTS_DIR=results EVAR_CACHE_DIR="${TMPDIR:-/tmp}/evar-results-cache"
rm -rf results "$EVAR_CACHE_DIR"
python -c "from evar.synth.trees import make_esc50_tree; make_esc50_tree('$EVAR_CACHE_DIR/ESC-50-master', n_classes=10, clips_per_class_per_fold=2, sample_rate=16000, seconds=5.0, noise=1.0)"
evar prepare esc50 --root "$EVAR_CACHE_DIR/ESC-50-master"
evar probe --task esc50 --model melspec
evar probe --task esc50 --model byola --weights $W --seeds 42,43,44
evar probe --task esc50 --model byola --weights $W --layers all
evar probe --task esc50 --model byola --weights $W --layers conv3,fc2
evar probe --task esc50 --model crepe --seeds 42,43,44
evar probe --task esc50 --model crepe_tiny --seeds 42,43,44
evar probe --task esc50 --model resemblyzer --seeds 42,43,44
evar probe --task esc50 --model byola --weights $W --protocol knn
evar probe --task esc50 --model byola --weights $W --protocol fewshot
evar probe --task esc50 --model byola --weights $W --protocol mlp --seeds 42,43,44
evar finetune --task esc50 --model byola --weights $W --epochs 10 --batch-size 16 --warmup-epochs 1
evar finetune --task esc50 --model byola --weights $W --epochs 10 --batch-size 16 --warmup-epochs 1 \
    --mixup 0 --no-rrc --freq-mask 0 --time-mask 0 --lr 0.01
evar leaderboard --out results/leaderboard.md
evar leaderboard --format latex --out results/leaderboard.tex
evar leaderboard --format html --out results/leaderboard.html
evar plot layers --model byola --task esc50
evar plot tsne --model byola --weights $W --task esc50 --fold 1
evar plot bars
evar results validate results
