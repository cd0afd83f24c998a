#!/usr/bin/env bash
# Scratch vs ImageNet-pretrained encoder for the semantic U-Net, at the shipped model's full recipe
# (256 px, 5 epochs, strong augmentation): the pretrained side is the shipped model
# (train_default_models.sh), this script trains the scratch side (classic U-Net encoder, base 32,
# 7.8 M parameters) and evaluates both on all Test photos. Background + --resume as there.
#
#   training/recipes/compare_scratch_vs_pretrained.sh        # background; log: runs/compare_scratch.log
source "$(dirname "$0")/background.sh" compare_scratch "$@"

echo "=== $(date -Is) unet (scratch encoder, base 32, 256 px)"
"$TRAIN" fit --arch unet --encoder scratch --data "$DATA" \
    --out "$RUNS/unet-scratch256" --resume --base 32 \
    --size 256 --epochs 5 --batch-size 8 --lr 5e-4 --warmup-epochs 1 --augment strong \
    --loss ce_dice --class-weights auto --cat-boost 2 --patience 8 --seed 0 --workers 1 \
    --channels-last --no-progress

for checkpoint in "$RUNS/unet-scratch256/best.safetensors" resources/checkpoints/petseg-unet-effnet256.safetensors; do
    echo "=== $(date -Is) eval $checkpoint"
    "$TRAIN" eval --checkpoint "$checkpoint" --data "$DATA" --split Test --no-progress \
        --json "$RUNS/eval-$(basename "$(dirname "$checkpoint")")-$(basename "$checkpoint" .safetensors).json"
done
