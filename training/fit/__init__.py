"""``petseg-train fit``: train any registered architecture on labelled pet photos.

One command trains, validates each epoch on the seeded validation split of TrainVal (never
Test), and writes into ``--out`` (default ``runs/<arch>-<time>``, where the app's discovery looks):

- ``last.safetensors`` each epoch and ``best.safetensors`` (best validation mIoU; for the prompt
  model the mean IoU after 3 simulated clicks), in the PetSeg checkpoint format with full metadata;
- ``.last.state.safetensors``: everything else ``--resume`` needs (optimizer moments, scaler,
  RNG states, epoch, step, best score, history), in safetensors (never pickle): tensors in the
  file, scalars and JSON in its metadata. The leading dot keeps the app's checkpoint discovery
  from listing it as an unusable model;
- ``log.csv`` (one row per epoch) and ``curves.png`` (loss and IoU curves).

``--init-from CHECKPOINT`` fine-tunes a checkpoint (:mod:`.parent`): its options are kept, it is
validated first, and ``best.safetensors`` is written only by an epoch that beats it;
``petseg-train finetune`` is ``fit`` with defaults for that (:data:`.config.FINETUNE_DEFAULTS`).
``--progress-json`` prints a JSON line per step and per epoch for the app's progress bar.

The same command scales out under ``torchrun --nproc_per_node N`` (DistributedDataParallel,
NCCL on CUDA, gloo on CPU; ``--batch-size`` is per process; only rank 0 writes).

Modules: :mod:`.config` (options, :class:`FitConfig`), :mod:`.command` (:func:`run_fit`),
:mod:`.run` (the run's shared state), :mod:`.loop` (the epoch loop), :mod:`.model_setup` (model
from the registry entry), :mod:`.data` (photos, sampler), :mod:`.validation`, :mod:`.saving`
(checkpoints each epoch), :mod:`.state` (resume state), :mod:`.run_log` (log.csv, curves.png),
:mod:`.out_folder` (the run folder), :mod:`.parent` (``--init-from``), :mod:`.runtime` (device, ranks, precision), :mod:`.schedule`
(learning rate).

Faults a user can fix (bad options, a missing device, masks that are not labels or not their
photo's size, an unwritable ``--out``, a full disk) end in one line and exit 2, found before
the first epoch where they can be.
"""

from training.fit.command import run_fit
from training.fit.config import FitConfig, add_fit_arguments
from training.fit.errors import FitError
from training.fit.parent import parent_arch

__all__ = ["FitConfig", "FitError", "add_fit_arguments", "parent_arch", "run_fit"]
