"""Command line of ``swav-train``: options, two sets of defaults, validation.

Options mirror facebookresearch/swav ``main_swav.py`` (spelled with dashes). Options left
unset take their value from one of two presets: with ``--data PATH`` (an ImageFolder) the
paper's ImageNet recipe (``scripts/swav_200ep_bs256_pretrain.sh``); without it the built-in
digits run, sized to finish on 2 CPU cores in a few minutes. Every check that can fail
reports through ``argparse`` (usage line, message, exit status 2), never a traceback.
"""
from __future__ import annotations

import argparse
import os
import textwrap
from typing import Sequence

import torch

from ..registry import backend_names, backend_status
from . import requirements, runtime
from .model import arch_names

# The paper's recipe (ResNet-50, 2×224 + 6×96 crops, K = 3000, queue 3840 from epoch 15).
PAPER = dict(
    arch="resnet50",
    width=32,
    small_stem=False,
    nmb_crops=[2, 6],
    size_crops=[224, 96],
    min_scale_crops=[0.14, 0.05],
    max_scale_crops=[1.0, 0.14],
    jitter_strength=1.0,
    blur_prob=0.5,
    hidden_mlp=2048,
    nmb_prototypes=3000,
    queue_length=3840,
    epoch_queue_starts=15,
    epochs=200,
    batch_size=64,
    base_lr=0.6,
    final_lr=0.0006,
    freeze_prototypes_niters=5005,
    warmup_epochs=0,
    workers=8,
)

# The built-in digits run (no --data): measured to learn within a few minutes on 2 CPU
# cores. Digits are grey, so colour jitter only rescales their one channel and, measured, kept
# the loss at ln K (no learning) in a run this short; it is off, as is the blur (a 12-pixel crop
# blurred with sigma up to 2 loses the strokes). Crops cover more of the image than the paper's.
DIGITS = dict(
    arch="resnet8",
    width=8,
    small_stem=False,
    nmb_crops=[2, 2],
    size_crops=[12, 6],
    min_scale_crops=[0.5, 0.25],
    max_scale_crops=[1.0, 0.5],
    jitter_strength=0.0,
    blur_prob=0.0,
    hidden_mlp=256,
    nmb_prototypes=30,
    queue_length=256,
    epoch_queue_starts=2,
    epochs=5,
    batch_size=32,
    base_lr=0.6,
    final_lr=0.0006,
    freeze_prototypes_niters=42,
    warmup_epochs=1,
    workers=1,
)


# What a run writes into --dump-path (besides ckp-EPOCH.pt); finding any of them there means
# an earlier run, which a new one overwrites only when told to (--overwrite).
RUN_FILES = ("checkpoint.pt", "log.csv", "loss.png", "summary.json")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose :meth:`finish` fills preset defaults and validates."""

    def finish(self, args: argparse.Namespace) -> argparse.Namespace:
        preset = PAPER if args.data is not None else DIGITS
        for name, value in preset.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        validate(self, args)
        return args


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default once: ``(default: …)`` is appended only where the help
    text does not state the default itself (the preset options give both presets' values,
    the device-dependent ones say what decides). Description and epilog keep their lines, so
    that an install command stays on one line."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def build_parser() -> Parser:
    """The ``swav-train`` argument parser."""
    parser = Parser(
        prog="swav-train",
        description=textwrap.fill(
            "SwAV pre-training (facebookresearch/swav main_swav.py) with the swav_kernels loss. "
            "Without --data it trains on scikit-learn's 8x8 digits and compares k-NN and linear-probe accuracy "
            "of the trained features with the randomly initialised network. Unset options take the digits "
            "defaults, or with --data the paper's ImageNet recipe.", 88),
        epilog=requirements.help_text(),
        formatter_class=HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None, help="ImageFolder directory (default: built-in digits)")
    data.add_argument("--nmb-crops", type=_positive_int, nargs="+", help="crops per resolution (default: digits 2 2; paper 2 6)")
    data.add_argument("--size-crops", type=_positive_int, nargs="+", help="crop sizes in pixels (default: digits 12 6; paper 224 96)")
    data.add_argument("--min-scale-crops", type=_positive_float, nargs="+", help="RandomResizedCrop min area share (default: digits 0.5 0.25; paper 0.14 0.05)")
    data.add_argument("--max-scale-crops", type=_positive_float, nargs="+", help="RandomResizedCrop max area share (default: digits 1 0.5; paper 1 0.14)")
    data.add_argument("--jitter-strength", type=_non_negative_float, help="colour jitter strength s: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) (default: digits 0; paper 1)")
    data.add_argument("--blur-prob", type=_non_negative_float, help="Gaussian blur probability (default: digits 0; paper 0.5)")
    data.add_argument("--digits-size", type=_positive_int, default=32, help="digits are upsampled from 8x8 to this")
    data.add_argument("--size-dataset", type=int, default=-1, help="use only the first N images (-1: all)")
    data.add_argument("--workers", type=_non_negative_int, help="data-loading processes (default: digits 1; paper 8)")

    swav = parser.add_argument_group("swav")
    swav.add_argument("--crops-for-assign", type=int, nargs="+", default=[0, 1], help="crops whose codes are predicted")
    swav.add_argument("--temperature", type=_positive_float, default=0.1, help="softmax temperature")
    swav.add_argument("--epsilon", type=_positive_float, default=0.05, help="Sinkhorn regularisation")
    swav.add_argument("--sinkhorn-iterations", type=_non_negative_int, default=3, help="Sinkhorn iterations")
    swav.add_argument("--feat-dim", type=_positive_int, default=128, help="embedding dimension D")
    swav.add_argument("--nmb-prototypes", type=_positive_int, help="prototypes K (default: digits 30; paper 3000)")
    swav.add_argument("--queue-length", type=_non_negative_int, help="queued embeddings over all ranks, 0: none (default: digits 256; paper 3840)")
    swav.add_argument("--epoch-queue-starts", type=_non_negative_int, help="first epoch that uses the queue (default: digits 2; paper 15)")
    swav.add_argument(
        "--loss-backend", default="auto", choices=backend_names(), help="swav_kernels backend computing the loss"
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=_positive_int, help="training epochs (default: digits 5; paper 200)")
    optim.add_argument("--batch-size", type=_positive_int, help="images per rank and step (default: digits 32; paper 64)")
    optim.add_argument("--base-lr", type=_positive_float, help="peak learning rate, LARS-scaled (default: digits 0.6; paper 0.6)")
    optim.add_argument("--final-lr", type=_non_negative_float, help="learning rate at the end of the cosine (default: digits 0.0006; paper 0.0006)")
    optim.add_argument(
        "--freeze-prototypes-niters", type=_non_negative_int, help="iterations whose prototype gradient is dropped (default: digits 42 = 1 epoch; paper 5005)"
    )
    optim.add_argument("--wd", type=_non_negative_float, default=1e-6, help="weight decay")
    optim.add_argument("--warmup-epochs", type=_non_negative_int, help="linear warm-up epochs (default: digits 1; paper 0)")
    optim.add_argument("--start-warmup", type=_non_negative_float, default=0.0, help="learning rate at step 0")

    model = parser.add_argument_group("model")
    try:
        archs = arch_names()
    except Exception:  # torchvision missing or broken: parse_args says so before any option is used
        archs = None
    model.add_argument("--arch", choices=archs, help="backbone (default: digits resnet8; paper resnet50)")
    model.add_argument("--width", type=_positive_int, help="first-stage width of resnet8/14/20 (default: digits 8; paper 32)")
    model.add_argument(
        "--small-stem",
        action=argparse.BooleanOptionalAction,
        help="torchvision ResNets: 3x3 stride-1 stem, no max-pool, for tiny images (default: off)",
    )
    model.add_argument("--hidden-mlp", type=_non_negative_int, help="projection head hidden width, 0: one Linear (default: digits 256; paper 2048)")

    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    run.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)"
    )
    run.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format (default: on for CUDA)",
    )
    run.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SyncBatchNorm across ranks (default: on for multi-GPU; CPU ranks cannot)",
    )
    run.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: torch's)")
    run.add_argument("--seed", type=int, default=31, help="random seed (rank r uses seed + r)")
    run.add_argument("--dump-path", default="swav-run", help="directory for checkpoint, CSV log and loss curve")
    run.add_argument("--resume", action="store_true", help="continue from DUMP_PATH/checkpoint.pt")
    run.add_argument(
        "--overwrite", action="store_true", help="replace the run already in DUMP_PATH (without it, that is refused)"
    )
    run.add_argument("--checkpoint-freq", type=_non_negative_int, default=0, help="also keep ckp-EPOCH.pt every N epochs")
    run.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="tqdm bar (default: when a terminal)"
    )
    run.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True, help="k-NN + linear probe at the end")
    run.add_argument("--knn-k", type=_positive_int, default=20, help="neighbours of the k-NN evaluation")
    run.add_argument("--eval-max-images", type=_positive_int, default=5000, help="ImageFolder images evaluated")
    return parser


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-option checks; each failure is ``parser.error`` (exit status 2)."""
    per_resolution = {
        "--nmb-crops": args.nmb_crops,
        "--size-crops": args.size_crops,
        "--min-scale-crops": args.min_scale_crops,
        "--max-scale-crops": args.max_scale_crops,
    }
    if len({len(values) for values in per_resolution.values()}) != 1:
        parser.error(
            "--nmb-crops, --size-crops, --min-scale-crops and --max-scale-crops need one value per resolution, got "
            + ", ".join(f"{name} {' '.join(map(str, values))}" for name, values in per_resolution.items())
        )
    for low, high in zip(args.min_scale_crops, args.max_scale_crops):
        if not 0 < low <= high <= 1:
            parser.error(f"crop scales must satisfy 0 < min <= max <= 1, got min {low} and max {high}")
    n_crops = sum(args.nmb_crops)
    if n_crops < 2:
        parser.error(f"SwAV needs at least 2 crops per image, --nmb-crops gives {n_crops}")
    if len(set(args.crops_for_assign)) != len(args.crops_for_assign) or not all(
        0 <= crop < n_crops for crop in args.crops_for_assign
    ):
        parser.error(f"--crops-for-assign must be distinct crop indices in [0, {n_crops}), got {args.crops_for_assign}")
    if args.warmup_epochs > args.epochs:
        parser.error(f"--warmup-epochs ({args.warmup_epochs}) cannot exceed --epochs ({args.epochs})")
    if args.blur_prob > 1:
        parser.error(f"--blur-prob must be in [0, 1], got {args.blur_prob}")
    if args.data is not None and not os.path.isdir(args.data):
        parser.error(f"--data {args.data!r} is not a directory (expected an ImageFolder: one sub-directory per class)")
    if args.data is not None and not any(entry.is_dir() for entry in os.scandir(args.data)):
        parser.error(f"--data {args.data!r} has no sub-directories (expected an ImageFolder: one sub-directory of "
                     "images per class)")
    if args.resume and not os.path.isfile(os.path.join(args.dump_path, "checkpoint.pt")):
        parser.error(f"--resume: no checkpoint.pt in --dump-path {args.dump_path!r}")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other: --resume continues the run in --dump-path, "
                     "--overwrite replaces it")
    earlier = [name for name in RUN_FILES if os.path.exists(os.path.join(args.dump_path, name))]
    if earlier and not (args.resume or args.overwrite):
        parser.error(f"--dump-path {args.dump_path!r} already holds a run ({', '.join(earlier)}): continue it with "
                     "--resume, replace it with --overwrite, or choose another --dump-path")
    if args.size_dataset < -1:
        parser.error(f"--size-dataset must be -1 (all) or >= 0, got {args.size_dataset}")
    validate_run_environment(parser, args)


def validate_run_environment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Choices this machine cannot honour (device, process count, bf16 autocast, loss backend,
    SyncBatchNorm): one ``parser.error`` line naming the option and what is available here."""
    try:
        _, world_size, local_rank = runtime.launch_env()
    except ValueError as error:
        parser.error(str(error))
    problem = runtime.device_problem(args.device, local_rank)
    if problem is not None:
        parser.error(problem)
    device = runtime.resolve_device(args.device, local_rank)
    if args.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        parser.error(f"--amp: bf16 autocast needs a GPU with bfloat16 (compute capability >= 8.0), which "
                     f"{torch.cuda.get_device_name(device)} is not; available: --no-amp")
    if args.sync_bn and world_size > 1 and device.type != "cuda":
        parser.error("--sync-bn: torch's SyncBatchNorm runs on CUDA devices only, these ranks use the CPU; "
                     "available: --no-sync-bn")
    if args.loss_backend != "auto":  # the loss sees float32 embeddings (autocast ends before it)
        status = backend_status(device, torch.float32)
        reason = status[args.loss_backend]
        if reason is not None:
            usable = ["auto"] + [name for name, why in status.items() if why is None]
            parser.error(f"--loss-backend {args.loss_backend} cannot run on {device}: {reason}; available here: "
                         f"{', '.join(usable)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse (``--help`` works whatever is installed), check that the trainer's requirements
    import, fill preset defaults, validate. Every error exits with status 2: a usage error
    through argparse, a missing requirement as one line with the pip command that installs it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = requirements.missing_requirements()
    if problem is not None:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    return parser.finish(args)
