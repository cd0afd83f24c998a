"""The label set every part of PetSeg shares: class ids, names, the void value and mask colours."""

from __future__ import annotations

BACKGROUND, CAT, DOG = 0, 1, 2
CLASS_NAMES = ("background", "cat", "dog")  # indexed by class id
PET_CLASSES = (CAT, DOG)

# Label of pixels that no loss or metric counts (the trimaps' unlabelled border, letterbox padding).
VOID = 255

# Mask file colours, by class index: what `models.images.load_mask` understands in RGB masks and
# what `save_png_atomic(..., palette=MASK_PALETTE)` writes (the colours of the Oxford-IIIT Pet masks).
MASK_COLOURS = {BACKGROUND: (0, 0, 0), CAT: (128, 0, 0), DOG: (0, 128, 0), VOID: (255, 255, 255)}
MASK_PALETTE = [channel for index in range(256) for channel in MASK_COLOURS.get(index, (0, 0, 0))]

# The two tasks a model can do, and the labels of each.
SEMANTIC = "semantic"  # image -> 3-class logits over CLASS_NAMES
PROMPT = "prompt"  # image + prompt maps -> 1-channel logits over PROMPT_CLASS_NAMES
PROMPT_CLASS_NAMES = ("background", "object")
