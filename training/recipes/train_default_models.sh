#!/usr/bin/env bash
# Train the two models PetSeg ships: the interactive prompt U-Net and the semantic U-Net, both on
# the ImageNet EfficientNet-Lite0 encoder, on Oxford-IIIT Pet TrainVal (Test is never used here).
#
#   training/recipes/train_default_models.sh            # starts in the background (nohup), returns
#   tail -f runs/train_default_models.log               # follow it
#   training/recipes/train_default_models.sh            # again after a crash/reboot: resumes both
#
# Sized for a 2-core AVX2 CPU (measured there: prompt_unet effnet_lite0 at 256 px, fp32 +
# channels_last, ~0.26 s per training image with 3 click rounds -> ~5 min per epoch on 1,231
# photos). The shipped models (these exact settings) took ~50 min each, trained side by side with
# OMP_NUM_THREADS=1 each; see MODEL_CARD.md. Longer runs (--epochs) are likely to help. Do NOT add --bf16 on such CPUs: without AVX512-BF16/AMX,
# bfloat16 autocast is emulated and was 10-37x slower; on a CUDA GPU fp16 autocast is automatic
# (raise --batch-size, --workers). Several GPUs/hosts: prefix with `torchrun --nproc_per_node N`
# (--batch-size is per process).
#
# Environment: see background.sh (PETSEG_PETS, PETSEG_RUNS, PETSEG_TRAIN, OMP_NUM_THREADS).
source "$(dirname "$0")/background.sh" train_default_models "$@"

echo "=== $(date -Is) prompt_unet (effnet_lite0, 256 px)"
# --resume: continues $RUNS/prompt_unet-effnet256 if it has a saved state, else starts it
"$TRAIN" fit --arch prompt_unet --encoder effnet_lite0 --data "$DATA" \
    --out "$RUNS/prompt_unet-effnet256" --resume --base 8 \
    --size 256 --epochs 6 --batch-size 8 --lr 5e-4 --warmup-epochs 1 --augment strong \
    --clicks-rounds 3 --patience 8 --seed 0 --workers 1 --channels-last --no-progress

echo "=== $(date -Is) unet (effnet_lite0, 256 px)"
"$TRAIN" fit --arch unet --encoder effnet_lite0 --data "$DATA" \
    --out "$RUNS/unet-effnet256" --resume --base 16 \
    --size 256 --epochs 5 --batch-size 8 --lr 5e-4 --warmup-epochs 1 --augment strong \
    --loss ce_dice --class-weights auto --cat-boost 2 --patience 8 --seed 0 --workers 1 \
    --channels-last --no-progress

echo "=== $(date -Is) done: best.safetensors in $RUNS/prompt_unet-effnet256 and $RUNS/unet-effnet256"
