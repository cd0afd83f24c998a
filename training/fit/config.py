"""``petseg-train fit``'s options: the command-line flags and :class:`FitConfig`, built once from them.

What differs between architectures (help texts, checks) comes from their registry entries
(:data:`models.registry.ARCHITECTURES`), never from their names.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

import torch

from models.classes import PROMPT
from models.registry import (
    ARCHITECTURES,
    CLIP_RN50,
    RECONSTRUCTION,
    Architecture,
    architecture_names,
    get_architecture,
)
from training.fit.errors import FitError

ENCODERS = ("scratch", "effnet_lite0")
SCRATCH = ENCODERS[0]  # what every architecture's encoder is without ImageNet weights
# How each encoder starts: after its name at the start of a run, and as the alternative to the default.
ENCODER_START = {"scratch": ", no pretrained weights", "effnet_lite0": " with ImageNet weights"}
ENCODER_ALTERNATIVE = {"scratch": "trains from scratch", "effnet_lite0": "starts from ImageNet EfficientNet-Lite0"}
MODEL_OPTIONS = ("base", "depth", "encoder", "context")  # options that are builder keywords, where arch.options lists them

# What picks a prompt model's best epoch (--best-by): IoU after 3 clicks, or the mean after 1 and 3.
THREE_CLICKS, ONE_AND_THREE_CLICKS = "3-clicks", "1-and-3-clicks"
BEST_BY = (THREE_CLICKS, ONE_AND_THREE_CLICKS)

# ``petseg-train finetune``: fit's options with these defaults, for a small folder of the user's own
# photos starting from --init-from: a few epochs, a fifth of the photos kept aside to judge it, and
# guards against forgetting that need no original data (a frozen encoder, batch-norm statistics
# kept, the species guard, the --anchor pull). Chosen by the study in MODEL_CARD.md.
FINETUNE_DEFAULTS = {"epochs": 10, "lr": 3e-4, "warmup_epochs": 0.5, "val_fraction": 0.2, "anchor": 0.01,
                     "freeze_encoder": True, "freeze_norm": True, "species_guard": 1.0, "workers": 0,
                     "mix_parent": True}
# ``finetune --replay DATA``: where the original data is present, replaying it is the guard (with
# the forgetting check on its photos kept aside), so the whole model trains, longer and gentler,
# and the labels teach the cat/dog split too. Options given on the command line still win.
REPLAY_FINETUNE_DEFAULTS = {"epochs": 40, "lr": 1e-4, "anchor": 0.0, "freeze_encoder": False, "species_guard": 0.0,
                            "class_weights": "auto"}
# --replay: photos of the original data kept aside to measure forgetting on; an epoch whose mIoU
# there falls more than REPLAY_TOLERANCE below the starting model's is never saved as the best.
REPLAY_VAL_PHOTOS = 60
REPLAY_TOLERANCE = 0.005

# Options a resumed run takes from the command line when given there; all others come from
# the saved run (changing them would not continue the same training).
RESUME_OVERRIDABLE = frozenset({"epochs", "patience", "data", "workers"})  # workers: the augmentation seeds depend on it
# Options of one invocation only: never taken from the saved run.
INVOCATION_ONLY = frozenset({"device", "stop_after_epochs", "no_progress", "progress_json", "resume", "out"})


@dataclass(frozen=True)
class FitConfig:
    """Every ``fit`` option (named by its argparse dest), plus what the command line said about them."""

    arch: str
    data: str
    out: str | None = None
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    size: int = 256
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    resume: str | None = None
    encoder: str | None = None  # None: the architecture's default_config (written in by with_default_encoder)
    base: int | None = None
    depth: int | None = None
    context: int | None = None
    clip_weights: str | None = None
    loss: str = "ce_dice"
    class_weights: str = "none"
    cat_boost: float = 1.0
    augment: str = "strong"
    bf16: bool = False
    no_amp: bool = False
    channels_last: bool = False
    patience: int = 0
    val_fraction: float = 0.1
    limit: int | None = None
    breed: str | None = None
    source_folder: str | None = None
    ae_epochs: int = 10
    clicks_rounds: int = 3
    copy_paste: float = 0.0
    first_prompt_loss: float = 0.0
    best_by: str = THREE_CLICKS  # prompt models: see BEST_BY
    init_from: str | None = None
    freeze_encoder: bool = False
    freeze_norm: bool = False
    anchor: float = 0.0
    mix_parent: bool = False
    species_guard: float = 0.0
    replay: str | None = None
    replay_ratio: float = 3.0
    stop_after_epochs: int | None = None
    no_progress: bool = False
    progress_json: bool = False
    # not options:
    explicit: frozenset[str] = frozenset()  # the options given on the command line
    argv: tuple[str, ...] = ()  # the command line, for the checkpoint metadata

    @classmethod
    def from_args(cls, namespace: argparse.Namespace, explicit: Iterable[str] = (),
                  argv: Iterable[str] = ()) -> FitConfig:
        """The config of parsed ``fit`` arguments; ``explicit``: the dests given on the command line."""
        return cls(**{name: getattr(namespace, name) for name in option_names()},
                   explicit=frozenset(explicit), argv=tuple(argv))

    @property
    def architecture(self) -> Architecture:
        """The registry entry of ``arch``."""
        return get_architecture(self.arch)

    @property
    def score_name(self) -> str:
        """What picks the best epoch (see :func:`training.fit.validation.selection_score`), for log lines."""
        return "val mean IoU after 1 and 3 clicks" if self.best_by == ONE_AND_THREE_CLICKS else "val mIoU"

    def options(self) -> dict[str, Any]:
        """The options by argparse dest: what the resume state saves."""
        return {name: getattr(self, name) for name in option_names()}

    def resumed(self, saved: Mapping[str, Any], run: str) -> tuple[FitConfig, list[str]]:
        """This invocation continuing the run in folder ``run`` whose saved options are ``saved``.

        Saved options win, except those of one invocation only and the overridable ones given on
        the command line. Also returns the options given here that the saved ones replace.
        """
        names = set(option_names())
        kept, ignored = {}, []
        for key, value in saved.items():
            if key not in names or key in INVOCATION_ONLY or (key in RESUME_OVERRIDABLE and key in self.explicit):
                continue
            if key in self.explicit and getattr(self, key) != value:
                ignored.append(key)
            kept[key] = value
        return replace(self, out=run, **kept), ignored

    def with_replay_defaults(self) -> FitConfig:
        """``finetune``'s config with :data:`REPLAY_FINETUNE_DEFAULTS` for the options not given, when
        ``--replay`` is."""
        if self.replay is None:
            return self
        return replace(self, **{key: value for key, value in REPLAY_FINETUNE_DEFAULTS.items()
                                if key not in self.explicit})

    def with_default_encoder(self) -> FitConfig:
        """This config with the architecture's default encoder written in when it takes one and none
        was given, so that the resume state names the encoder the run trains (not a default that may
        change)."""
        arch = self.architecture
        if self.encoder is not None or "encoder" not in arch.options:
            return self
        return replace(self, encoder=arch.default_config.get("encoder", SCRATCH))  # the builders' own: scratch

    def encoder_line(self, resumed: bool) -> str | None:
        """The start-of-run line saying which encoder trains and why; None for architectures without one."""
        if "encoder" not in self.architecture.options or self.encoder is None:
            return None
        if self.init_from:
            return f"encoder: {self.encoder} (from --init-from {Path(self.init_from).name})"
        if resumed:
            why = "saved with the run"
        elif "encoder" in self.explicit:
            why = f"--encoder {self.encoder}"
        else:
            others = "; ".join(f"--encoder {e} {ENCODER_ALTERNATIVE[e]}" for e in ENCODERS if e != self.encoder)
            why = f"the default for {self.arch}; {others}"
        return f"encoder: {self.encoder}{ENCODER_START[self.encoder]} ({why})"

    def resume_command(self) -> str:
        """The command line that continues this run (in ``out``) after it stopped: the original one
        with a bare ``--resume`` (and ``--out``) added when not given; it starts afresh when the run
        saved nothing yet."""
        argv = list(self.argv) or ["petseg-train", "fit", "--arch", self.arch, "--data", self.data]
        if "out" not in self.explicit:
            argv += ["--out", str(self.out)]
        if "resume" not in self.explicit:
            argv.append("--resume")
        return shlex.join(argv)

    def check(self) -> None:
        """FitError for option values (and a ``--device``) that cannot work."""
        arch = self.architecture
        if self.size <= 0 or self.size % 32:
            raise FitError(f"--size {self.size}: must be a positive multiple of 32")
        for option in ("epochs", "batch_size"):
            _check_number(self, option, minimum=1)
        for option in ("lr", "cat_boost", "replay_ratio"):
            _check_number(self, option, above=0.0)
        for option in ("weight_decay", "grad_clip", "warmup_epochs", "workers", "patience", "clicks_rounds", "anchor",
                       "species_guard"):
            _check_number(self, option, minimum=0)
        for option in ("limit", "stop_after_epochs"):
            if getattr(self, option) is not None:
                _check_number(self, option, minimum=1)
        if RECONSTRUCTION in arch.phases and self.ae_epochs < 0:
            raise FitError("--ae-epochs must be 0 or more")
        if not 0 <= self.copy_paste <= 1:
            raise FitError(f"--copy-paste {self.copy_paste}: must be between 0 and 1")
        if self.first_prompt_loss < 0:
            raise FitError(f"--first-prompt-loss {self.first_prompt_loss}: must be 0 or more")
        if self.best_by != THREE_CLICKS and arch.task != PROMPT:
            raise FitError(f"--best-by is only for {_names(lambda a: a.task == PROMPT, ' and ')}")
        if self.first_prompt_loss and arch.task != PROMPT:
            raise FitError(f"--first-prompt-loss is only for {_names(lambda a: a.task == PROMPT, ' and ')}")
        if self.copy_paste and arch.task != PROMPT:
            raise FitError(f"--copy-paste is only for {_names(lambda a: a.task == PROMPT, ' and ')} "
                           "(it makes the other pets background)")
        if self.mix_parent and not self.init_from:
            raise FitError("--mix-parent mixes the fine-tuned weights with --init-from's; give --init-from CHECKPOINT")
        if self.anchor and not self.init_from:
            raise FitError("--anchor keeps the weights near --init-from's; give --init-from CHECKPOINT")
        if self.freeze_encoder and RECONSTRUCTION in arch.phases:
            raise FitError(f"--freeze-encoder: {self.arch} already trains its segmentation decoder on a frozen encoder")
        if self.replay is not None and not Path(self.replay).expanduser().is_dir():
            raise FitError(f"--replay {self.replay}: no such folder")
        if not 0 < self.val_fraction < 1:
            raise FitError(f"--val-fraction {self.val_fraction}: must be between 0 and 1")
        if arch.pretrained == CLIP_RN50 and self.clip_weights is None:
            raise FitError(
                f"{self.arch} needs --clip-weights PATH|openai|none (a local open_clip RN50 weights file, "
                "'openai' from open_clip's cache, or 'none' for random init: tests and smoke runs only)"
            )
        if self.encoder not in (None, SCRATCH) and "encoder" not in arch.options:
            raise FitError(f"--encoder {self.encoder} is only for {_names(_takes('encoder'), ' and ')}")
        if self.context is not None and self.context < 0:
            raise FitError(f"--context {self.context}: must be 0 or more layers")
        for key in ("base", "depth", "context"):
            if getattr(self, key) is not None and key not in arch.options:
                raise FitError(f"--{key} is not an option of architecture {self.arch}")
        check_device(self.device)


def check_device(name: str) -> None:
    """FitError unless ``name`` is ``auto``, ``cpu``, or a CUDA (or MPS) device that exists here."""
    try:
        device = torch.device(name) if name != "auto" else None
    except RuntimeError:
        device = None
    if name == "auto" or (device is not None and device.type == "cpu"):
        return
    if device is None or device.type not in ("cuda", "mps"):
        raise FitError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FitError(f"--device {name}: MPS is not available here")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FitError(f"--device {name}: CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise FitError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices here (cuda:0..)")


def _check_number(cfg: FitConfig, option: str, minimum: float | None = None, above: float | None = None) -> None:
    """FitError unless the option's value is finite and at least ``minimum`` (or more than ``above``)."""
    value = getattr(cfg, option)
    flag = "--" + option.replace("_", "-")
    if not math.isfinite(value):
        raise FitError(f"{flag} {value}: must be a finite number")
    if minimum is not None and value < minimum:
        raise FitError(f"{flag} {value}: must be at least {minimum}")
    if above is not None and value <= above:
        raise FitError(f"{flag} {value}: must be more than {above:g}")


def option_names() -> list[str]:
    """The argparse dests of ``fit``'s options, in FitConfig's order."""
    return [f.name for f in fields(FitConfig) if f.name not in ("explicit", "argv")]


def _takes(option: str) -> Callable[[Architecture], bool]:
    return lambda arch: option in arch.options


def _names(predicate: Callable[[Architecture], bool], sep: str = "/") -> str:
    """The registry's architectures for which ``predicate`` holds, in table order, for help texts."""
    return sep.join(a.name for a in ARCHITECTURES.values() if predicate(a))


def _defaults(option: str) -> str:
    """Each default value of ``option`` in the registry with its architectures, for help texts."""
    by_value: dict[Any, list[str]] = {}
    for arch in ARCHITECTURES.values():
        if option in arch.options and option in arch.default_config:
            by_value.setdefault(arch.default_config[option], []).append(arch.name)
    return "; ".join(f"{value} for {' and '.join(names)}" for value, names in by_value.items())


def add_fit_arguments(parser: argparse.ArgumentParser, finetune: bool = False) -> None:
    """The ``fit`` subcommand's options (defaults: FitConfig's); with ``finetune``, ``finetune``'s:
    --init-from required, --arch taken from it, :data:`FINETUNE_DEFAULTS`."""
    d = {f.name: f.default for f in fields(FitConfig) if f.default is not MISSING}
    if finetune:
        d.update(FINETUNE_DEFAULTS)
    clip, reconstructs = _names(lambda a: a.pretrained == CLIP_RN50), _names(lambda a: RECONSTRUCTION in a.phases)
    p = parser
    p.add_argument("--arch", required=not finetune, choices=architecture_names(),
                   help="architecture to train" + (" (default: --init-from's)" if finetune else ""))
    p.add_argument("--data", required=True, help="pet data root (processed, Oxford or images+masks layout)")
    p.add_argument("--out", default=d["out"], help="output folder (default runs/<arch>-<YYYYmmdd-HHMMSS>)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs (segmentation phase)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per step (per process under torchrun)")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--warmup-epochs", type=float, default=d["warmup_epochs"], help="linear warm-up length (then cosine)")
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"], help="gradient norm clip (0 = off)")
    p.add_argument("--size", type=int, default=d["size"], help="square model input in pixels (multiple of 32)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--workers", type=int, default=d["workers"], help="data loader worker processes")
    p.add_argument("--device", default=d["device"], help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument(
        "--resume", nargs="?", const="auto", default=d["resume"], metavar="RUN",
        help="continue a run: a run folder or its last.safetensors (bare --resume: --out's; "
        "starts fresh when there is nothing to resume yet)",
    )
    p.add_argument("--encoder", choices=ENCODERS, default=d["encoder"],
                   help=f"{_names(_takes('encoder'))} encoder: scratch (no pretrained weights) or effnet_lite0 "
                   f"(ImageNet EfficientNet-Lite0); default: {_defaults('encoder')}")
    p.add_argument("--base", type=int, default=d["base"], help="model base width (architecture default if omitted)")
    p.add_argument("--depth", type=int, default=d["depth"], help="model depth (architecture default if omitted)")
    p.add_argument("--context", type=int, default=d["context"], metavar="LAYERS",
                   help=f"{_names(_takes('context'))}: self-attention layers over the deepest features, so one "
                   "click reaches the whole pet (default 0; with --init-from a model without them, they are "
                   "added and start as no change)")
    p.add_argument("--clip-weights", default=d["clip_weights"], metavar="PATH|openai|none",
                   help=f"{clip}: RN50 weights file, 'openai' (open_clip cache), or 'none' "
                   "(random init: tests and smoke runs only)")
    p.add_argument("--loss", choices=("ce_dice", "focal_dice", "ce"), default=d["loss"],
                   help="semantic loss (the prompt model always uses BCE + Dice)")
    p.add_argument("--class-weights", choices=("none", "auto"), default=d["class_weights"],
                   help="auto: inverse-sqrt pixel frequency over the training masks")
    p.add_argument("--cat-boost", type=float, default=d["cat_boost"],
                   help="oversample cat photos by this factor (2 balances Oxford-IIIT Pet)")
    p.add_argument("--augment", choices=("none", "light", "strong"), default=d["augment"])
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    p.add_argument("--no-amp", action="store_true", help="CUDA: disable fp16 autocast + GradScaler")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--patience", type=int, default=d["patience"],
                   help="early stop after N epochs without a better val mIoU (0 = off)")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="share of TrainVal held out for validation")
    p.add_argument("--limit", type=int, default=d["limit"],
                   help="use only N training images (and at most max(2, N//4) validation images): smoke runs")
    p.add_argument("--breed", default=d["breed"],
                   help="train only on the photos of this Oxford-IIIT Pet breed (by file name, e.g. Bengal)")
    p.add_argument("--source-folder", default=d["source_folder"], metavar="PATH",
                   help="the folder the photos come from, for the metadata, when --data is a copy of it (the app)")
    p.add_argument("--ae-epochs", type=int, default=d["ae_epochs"], help=f"{reconstructs}: reconstruction (phase 1) epochs")
    p.add_argument("--clicks-rounds", type=int, default=d["clicks_rounds"],
                   help=f"{_names(lambda a: a.task == PROMPT)}: max corrective click rounds per batch")
    p.add_argument("--copy-paste", type=float, default=d["copy_paste"], metavar="P",
                   help=f"{_names(lambda a: a.task == PROMPT)}: with probability P paste 1-2 other photos' pets "
                   "beside the photo's pet, one of them the target (instance-aware training)")
    p.add_argument("--first-prompt-loss", type=float, default=d["first_prompt_loss"], metavar="W",
                   help=f"{_names(lambda a: a.task == PROMPT)}: also judge the initial prompt's own prediction "
                   "(before the corrective clicks), with this weight: one click is what a user tries first")
    p.add_argument("--best-by", choices=BEST_BY, default=d["best_by"],
                   help=f"{_names(lambda a: a.task == PROMPT)}: the validation figure an epoch must beat to be the "
                   "best: IoU after 3 clicks, or the mean of IoU after 1 and after 3 clicks (the first click counts as much)")
    p.add_argument("--init-from", default=d["init_from"], metavar="CHECKPOINT", required=finetune,
                   help="fine-tune: start from this checkpoint's weights (its architecture options and "
                   "input size are used; the best checkpoint must beat it on the validation photos)")
    p.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=d["freeze_encoder"],
                   help="train the decoder only, the encoder (and its batch-norm statistics) kept as it starts")
    p.add_argument("--freeze-norm", action=argparse.BooleanOptionalAction, default=d["freeze_norm"],
                   help="batch-norm layers keep the statistics they start with (eval mode) while the rest trains: "
                   "a small folder's batches would otherwise replace them")
    p.add_argument("--mix-parent", action=argparse.BooleanOptionalAction, default=d["mix_parent"],
                   help="after the last epoch, also try its weights mixed back with --init-from's (0.75, 0.5, 0.25 "
                   "of the change kept; WiSE-FT): a mixture that beats every epoch becomes best.safetensors")
    p.add_argument("--anchor", type=float, default=d["anchor"], metavar="STRENGTH",
                   help="with --init-from: L2 pull of the trained weights towards the starting ones "
                   "(guards against forgetting on a small folder; 0 = off)")
    p.add_argument("--species-guard", type=float, default=d["species_guard"], metavar="WEIGHT",
                   help="semantic models with --init-from: the labels teach pet vs background only and each pet "
                   "pixel's cat/dog split is distilled from the starting model (weight of that term; 0 = off), "
                   "so that a folder of one species does not turn every pet into it")
    p.add_argument("--replay", default=d["replay"], metavar="DATA",
                   help="where the original training data is present: mix its TrainVal photos (other than "
                   "--data's and --breed's) into every epoch, a guard against forgetting")
    p.add_argument("--replay-ratio", type=float, default=d["replay_ratio"], metavar="R",
                   help="with --replay: photos drawn from it per training photo of --data, each epoch")
    p.add_argument("--stop-after-epochs", type=int, default=d["stop_after_epochs"], metavar="N",
                   help="stop this invocation after N epochs (continue later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--progress-json", action="store_true",
                   help="one JSON line per training step and per epoch on stdout (for the app)")
