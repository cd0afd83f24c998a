#!/usr/bin/env bash
# The original studies' scratch rows at a recipe that fits two CPU cores (MODEL_CARD.md, "The
# original studies' architectures"): the U-Net with a scratch encoder, then the autoencoder
# (reconstruction pre-training on the pets, then the segmentation decoder on the frozen encoder),
# both at 128 px, base 16, light augmentation. TrainVal only; Test is never used here.
#
#   training/recipes/train_seed_rows.sh               # starts in the background, returns
#   tail -f runs/train_seed_rows.log                  # follow it; run it again to resume
#
# Environment: see background.sh. OMP_NUM_THREADS=1 leaves a core for other work.
source "$(dirname "$0")/background.sh" train_seed_rows "$@"

COMMON=(--data "$DATA" --size 128 --base 16 --depth 4 --batch-size 16 --lr 2e-3 --warmup-epochs 1
        --augment light --loss ce_dice --class-weights auto --cat-boost 2 --seed 0 --workers 1
        --channels-last --no-progress --resume)

echo "=== $(date -Is) unet, scratch encoder, 128 px"
"$TRAIN" fit --arch unet --encoder scratch --out "$RUNS/unet-scratch128" --epochs 40 "${COMMON[@]}"

echo "=== $(date -Is) autoencoder, 128 px"
"$TRAIN" fit --arch autoencoder --out "$RUNS/autoencoder128-ae20" --ae-epochs 20 --epochs 40 "${COMMON[@]}"

echo "=== $(date -Is) done: best.safetensors in $RUNS/unet-scratch128 and $RUNS/autoencoder128-ae20"
