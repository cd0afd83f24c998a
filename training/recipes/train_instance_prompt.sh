#!/usr/bin/env bash
# The instance-aware prompt model: the shipped prompt U-Net fine-tuned with copy-paste composites
# (half the training photos get one or two other photos' pets pasted beside their own, one pet the
# target, the others background), so that a click or a box takes *that* pet. Validation (which
# picks best.safetensors) mixes single photos and two-pet composites of the validation photos;
# Test is never used here.
#
#   training/recipes/train_instance_prompt.sh          # starts in the background, returns
#   tail -f runs/train_instance_prompt.log             # follow it; run it again to resume
#
# Two stages: stage 2 continues from stage 1's best with fewer composites (stage 1 alone lost
# single-pet quality: IoU after one click 0.937 -> 0.775 on Test). Then judge it:
# petseg-train eval --checkpoint runs/prompt_unet-instance2/best.safetensors
# --split Test (single pets) and the same with --multi-pet 2 (see MODEL_CARD.md).
source "$(dirname "$0")/background.sh" train_instance_prompt "$@"

echo "=== $(date -Is) prompt_unet fine-tuned with --copy-paste 0.5"
"$TRAIN" fit --arch prompt_unet --data "$DATA" --init-from resources/checkpoints/petseg-prompt-effnet256.safetensors \
    --out "$RUNS/prompt_unet-instance" --resume --copy-paste 0.5 \
    --epochs 5 --batch-size 8 --lr 3e-4 --warmup-epochs 0.5 --augment strong \
    --clicks-rounds 3 --seed 0 --workers 1 --channels-last --no-progress
# The run behind MODEL_CARD.md's figures started stage 2 with --epochs 6 and was cut to 4 by
# `--resume --epochs 4` after its second epoch, so its schedule differs slightly from this one.
echo "=== $(date -Is) stage 2: 4 more epochs from stage 1's best, --copy-paste 0.3"
"$TRAIN" fit --arch prompt_unet --data "$DATA" --init-from "$RUNS/prompt_unet-instance/best.safetensors" \
    --out "$RUNS/prompt_unet-instance2" --resume --copy-paste 0.3 \
    --epochs 4 --batch-size 8 --lr 3e-4 --warmup-epochs 0.3 --augment strong \
    --clicks-rounds 3 --seed 0 --workers 1 --channels-last --no-progress
echo "=== $(date -Is) done: $RUNS/prompt_unet-instance2/best.safetensors"
