#!/usr/bin/env bash
# Our pre-training vs PiCIE vs random init on the synthetic city at the same budget of images seen,
# three seeds each, evaluated in one joint report per clustering (README "PiCIE beside CPCDR").
#
#   bench/picie_vs_cpcdr.sh                 # DEMO_SIZE=small, 60 steps of 16 images = 960 images per run
#   STEPS=150 SEEDS="0 1 2" bench/picie_vs_cpcdr.sh
#
# Ours: STEPS steps of 16 images (one copy-paste group) at 96x192 crops. PiCIE: the same number of
# view images at 96x192 (half of the 192x384 frames, PiCIE's view/frame ratio): the 20 training
# frames give 40 views per epoch, so EPOCHS = STEPS * 16 / 40. Each run prints its wall time.
# PiCIE reads its 20 small PNGs in the main process (--workers 0): three passes per epoch would
# otherwise start worker processes 72 times for a few milliseconds of decoding each.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-small}
STEPS=${STEPS:-60}
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-runs}
PY=${PY:-.venv/bin/python}
RUN_DIR=$OUT/synthetic-$DEMO
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

frames=$($PY -c "
from train.picie import PicieConfig, training_frames
print(len(training_frames(PicieConfig(dataset='synthetic', demo_size='$DEMO', out='$OUT'))))")
epochs=$(( STEPS * 16 / (2 * frames) ))
echo "=== $STEPS steps x 16 images = $(( STEPS * 16 )) images per run; PiCIE: $epochs epochs x $(( 2 * frames )) views"

ours=(); picie=()
for s in $SEEDS; do
  t0=$(date +%s)
  make --no-print-directory train DEMO_SIZE=$DEMO OUT=$OUT PY=$PY \
    TRAIN_ARGS="--seed $s --max-steps $STEPS --epochs 1000 --crop-height 96 --crop-width 192 --run cmp-ours-s$s --no-progress"
  echo "=== ours seed $s: $(( $(date +%s) - t0 )) s"
  ours+=("$RUN_DIR/train/cmp-ours-s$s/checkpoint.pt")
  t0=$(date +%s)
  make --no-print-directory picie DEMO_SIZE=$DEMO OUT=$OUT PY=$PY \
    PICIE_ARGS="--seed $s --epochs $epochs --run cmp-picie-s$s --no-progress --workers 0"
  echo "=== picie seed $s: $(( $(date +%s) - t0 )) s"
  picie+=("$RUN_DIR/picie/cmp-picie-s$s/checkpoint.pt")
done
n=$(echo $SEEDS | wc -w)
for clustering in agglomerative kmeans; do
  t0=$(date +%s)
  make --no-print-directory eval DEMO_SIZE=$DEMO OUT=$OUT PY=$PY \
    EVAL_ARGS="--checkpoint $(IFS=,; echo "${ours[*]}") --picie $(IFS=,; echo "${picie[*]}") --random-inits $n --clustering $clustering --name cmp-$clustering"
  echo "=== eval ($clustering): $(( $(date +%s) - t0 )) s"
done
$PY - "$RUN_DIR" <<'EOF'
import json, sys
from pathlib import Path
print("| clustering | protocol | ours: pixel acc / mIoU | PiCIE: pixel acc / mIoU | random init: pixel acc / mIoU |")
print("|---|---|---|---|---|")
for clustering in ("agglomerative", "kmeans"):
    r = json.loads((Path(sys.argv[1]) / "eval" / f"cmp-{clustering}" / "report.json").read_text())
    for p, pr in r["protocols"].items():
        cells = []
        for m in ("pre-trained", "picie", "random init"):
            s = pr["models"][m]
            cells.append(f"{s['pixel_accuracy']:.1f} +- {s['pixel_accuracy_std'] or 0:.1f} / {s['miou']:.1f} +- {s['miou_std'] or 0:.1f}")
        print(f"| {clustering} | {p} | " + " | ".join(cells) + " |")
EOF
