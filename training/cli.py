"""``petseg-train``: the training command line (subcommands ``fit``, ``eval``, ``robustness``).

User errors (missing data, bad options, missing pretrained weights) print one line and exit 2;
Ctrl-C exits 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

PROG = "petseg-train"


def _explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests of the options given on the command line (so --resume keeps the others)."""
    actions = parser._option_string_actions  # noqa: SLF001 (argparse has no public lookup)
    found = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if name in actions:
            found.add(actions[name].dest)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and evaluate PetSeg models on Oxford-IIIT Pet style data.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="{fit,finetune,eval,robustness}")
    sub.required = True
    parsers = {}

    from training.fit import add_fit_arguments

    fit = sub.add_parser(
        "fit", help="train a model", allow_abbrev=False,
        description="Train an architecture; writes last/best checkpoints, log.csv and curves.png into --out. "
        "Runs under torchrun --nproc_per_node N for data-parallel training.",
    )
    add_fit_arguments(fit)
    parsers["fit"] = fit
    finetune = sub.add_parser(
        "finetune", help="fine-tune a checkpoint on a folder of your own annotated photos", allow_abbrev=False,
        description="fit from --init-from with fine-tuning defaults (see --help for each): a fifth of the photos "
        "kept aside for validation, the encoder frozen and the weights pulled towards the checkpoint's "
        "(--anchor) so that the general quality holds; best.safetensors only when it beats the checkpoint there. "
        "With --replay DATA (the original training data, where present) the whole model trains instead, "
        "40 epochs at --lr 1e-4, with DATA's photos mixed in and an epoch that forgets on them never kept. "
        "--data: a folder annotated in PetSeg (photos with <name>_mask.png), images + masks, or Oxford-IIIT Pet.",
    )
    add_fit_arguments(finetune, finetune=True)
    parsers["finetune"] = finetune

    for name, module, adder, helptext in (
        ("eval", "training.evaluate", "add_eval_arguments", "evaluate a checkpoint (IoU/Dice table, or NoC for prompt models)"),
        ("robustness", "training.robustness", "add_robustness_arguments", "robustness study under 8 perturbations"),
    ):
        p = sub.add_parser(name, help=helptext, allow_abbrev=False)
        try:
            mod = __import__(module, fromlist=[adder])
            getattr(mod, adder)(p)
        except Exception as error:  # a broken or missing module must not break `fit`
            p.set_defaults(_unavailable=f"{name} is unavailable in this installation ({error})")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parsers[name] = p
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(f"{PROG}: error: {args._unavailable}", file=sys.stderr)
        return 2
    try:
        if args.command in ("fit", "finetune"):
            from training.fit import FitConfig, FitError, parent_arch, run_fit

            try:
                if args.arch is None:
                    args.arch = parent_arch(args.init_from)
                config = FitConfig.from_args(args, _explicit_options(parsers[args.command], argv[1:]),
                                             [PROG, *argv])
                if args.command == "finetune":
                    config = config.with_replay_defaults()
                return run_fit(config)
            except FitError as error:
                print(f"{PROG}: error: {error}", file=sys.stderr)
                return 2
        if args.command == "eval":
            from training.evaluate import run_eval

            return int(run_eval(args) or 0)
        from training.robustness import run_robustness

        return int(run_robustness(args) or 0)
    except KeyboardInterrupt as interrupt:
        resume = getattr(interrupt, "resume", None)  # training.fit.FitInterrupted's
        hint = f"; continue with: {resume}" if resume else ""
        print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # known one-line user errors from the data and checkpoint layers
        from models.checkpoint import CheckpointError
        from models.images import ImageLoadError

        if isinstance(error, (CheckpointError, ImageLoadError)):
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
