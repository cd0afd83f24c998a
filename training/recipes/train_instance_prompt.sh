#!/usr/bin/env bash
# The instance-aware prompt model: the shipped prompt U-Net fine-tuned with copy-paste composites
# (half the training photos get one or two other photos' pets pasted beside their own, one pet the
# target, the others background), so that a click or a box takes *that* pet. The loss also judges
# the prediction from the first prompt alone (--first-prompt-loss: one click is what a user tries
# first), and the best epoch is the one with the highest mean of IoU after 1 and after 3 clicks on
# the validation set, which mixes single photos and two-pet composites of the validation photos.
# Test is never used here.
#
#   training/recipes/train_instance_prompt.sh          # starts in the background, returns
#   tail -f runs/train_instance_prompt.log             # follow it; run it again to resume
#
# Four stages: stage 2 continues from stage 1's best with fewer composites (stage 1 alone loses
# single-pet quality); stages 3 and 4 add two self-attention layers over the deepest features
# (--context 2: one click then reaches every part of a large pet; they start as no change) and
# train on (stage 4 with another seed, so other composites). Then judge it: petseg-train eval
# --checkpoint runs/prompt_unet-instance-v3-stage4/best.safetensors --split Test (single pets) and
# the same with --multi-pet 2 (see MODEL_CARD.md). The first recipe (no first-prompt loss, epochs
# picked on IoU after 3 clicks) is this file at commit 80125a3; v2 (stages 1-2 only) at 70282cc.
source "$(dirname "$0")/background.sh" train_instance_prompt "$@"

COMMON=(--arch prompt_unet --data "$DATA" --resume --first-prompt-loss 1.0 --best-by 1-and-3-clicks
        --batch-size 8 --lr 3e-4 --augment strong --clicks-rounds 3 --seed 0 --workers 1 --channels-last --no-progress)
echo "=== $(date -Is) stage 1: the shipped prompt_unet fine-tuned with --copy-paste 0.5"
"$TRAIN" fit "${COMMON[@]}" --init-from resources/checkpoints/petseg-prompt-effnet256.safetensors \
    --out "$RUNS/prompt_unet-instance-v2-stage1" --copy-paste 0.5 --epochs 5 --warmup-epochs 0.5
echo "=== $(date -Is) stage 2: 8 more epochs from stage 1's best, --copy-paste 0.3"
"$TRAIN" fit "${COMMON[@]}" --init-from "$RUNS/prompt_unet-instance-v2-stage1/best.safetensors" \
    --out "$RUNS/prompt_unet-instance-v2-stage2" --copy-paste 0.3 --epochs 8 --warmup-epochs 0.3
echo "=== $(date -Is) stage 3: --context 2 added, 8 epochs from stage 2's best"
"$TRAIN" fit "${COMMON[@]}" --init-from "$RUNS/prompt_unet-instance-v2-stage2/best.safetensors" --context 2 \
    --out "$RUNS/prompt_unet-instance-v3-stage3" --copy-paste 0.3 --epochs 8 --warmup-epochs 0.3
echo "=== $(date -Is) stage 4: 10 more epochs from stage 3's best, seed 1"
"$TRAIN" fit "${COMMON[@]}" --init-from "$RUNS/prompt_unet-instance-v3-stage3/best.safetensors" --seed 1 \
    --out "$RUNS/prompt_unet-instance-v3-stage4" --copy-paste 0.3 --epochs 10 --warmup-epochs 0.3
echo "=== $(date -Is) done: $RUNS/prompt_unet-instance-v3-stage4/best.safetensors"
