"""A whole ``swav-train`` run: build, (resume,) train, checkpoint, report, evaluate."""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..module import SwAVLoss
from . import checkpoint as ckpt
from . import data, report, runtime
from .evaluate import Accuracy, comparison_table, evaluate_backbone
from .loop import SwAVLosses, train_one_epoch
from .model import SwAVModel
from .optim import build_optimizer, build_schedule


class ConfigError(ValueError):
    """The options are valid one by one but this run cannot use them (reported as a usage error)."""


@dataclass
class RunResult:
    epochs_run: int
    final_loss: float
    seconds: float
    random_init: Accuracy | None = None
    trained: Accuracy | None = None


def log(rt: runtime.Runtime, message: str) -> None:
    if rt.is_main:
        print(message, flush=True)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(args) -> SwAVModel:
    return SwAVModel(
        args.arch,
        feat_dim=args.feat_dim,
        hidden_mlp=args.hidden_mlp,
        nmb_prototypes=args.nmb_prototypes,
        small_stem=args.small_stem,
        width=args.width,
    )


def resolve_run_options(args, rt: runtime.Runtime) -> None:
    """Fill the device-dependent defaults (AMP, channels-last, SyncBN); the choices this machine
    cannot honour were refused when the options were parsed (``args.validate_run_environment``)."""
    on_gpu = rt.device.type == "cuda"
    if args.amp is None:
        args.amp = on_gpu
    if args.channels_last is None:
        args.channels_last = on_gpu
    if args.sync_bn is None:
        args.sync_bn = on_gpu and rt.distributed
    requested = args.queue_length
    args.queue_length -= args.queue_length % (args.batch_size * rt.world_size)  # as main_swav.py
    if args.queue_length != requested:
        log(rt, f"queue length {requested} -> {args.queue_length} (a multiple of batch size x world size)")


def build_losses(args, rt: runtime.Runtime) -> SwAVLosses:
    common = dict(
        nmb_crops=args.nmb_crops,
        crops_for_assign=args.crops_for_assign,
        temperature=args.temperature,
        epsilon=args.epsilon,
        sinkhorn_iterations=args.sinkhorn_iterations,
        process_group=rt.process_group,
        backend=args.loss_backend,
    )
    plain = SwAVLoss(**common)
    per_rank = args.queue_length // rt.world_size
    queued = SwAVLoss(**common, queue_length=per_rank, feat_dim=args.feat_dim) if per_rank > 0 else None
    if queued is not None:
        queued.to(rt.device)
    return SwAVLosses(plain, queued)


def build_loader(args, rt: runtime.Runtime) -> DataLoader:
    multi_crop = data.MultiCrop(
        args.size_crops, args.nmb_crops, args.min_scale_crops, args.max_scale_crops, args.jitter_strength, args.blur_prob
    )
    try:
        dataset = data.pretrain_dataset(args.data, multi_crop, args.digits_size, args.size_dataset)
    except FileNotFoundError as error:  # torchvision's ImageFolder: no class folder, or no image in them
        raise ConfigError(
            f"--data {args.data!r} holds no usable images (expected an ImageFolder: one sub-directory of images per "
            f"class): {error}"
        ) from error
    if len(dataset) // rt.world_size < args.batch_size:
        raise ConfigError(
            f"{len(dataset)} images over {rt.world_size} rank(s) do not fill one batch of --batch-size {args.batch_size}"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=args.seed, drop_last=True
    )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )


def checkpoint_state(epoch, iteration, model, optimizer, scheduler, losses, history, args, rt) -> dict | None:
    """The checkpoint of the end of ``epoch`` (every rank's queue and RNG gathered) on rank 0, else None."""
    own = {"queue": losses.queued.state_dict() if losses.queued is not None else None, "rng": ckpt.rng_state()}
    if own["queue"] is not None:
        own["queue"] = {name: value.cpu() for name, value in own["queue"].items()}
    ranks = runtime.gather_to_all(own, rt)
    if not rt.is_main:
        return None
    return {
        "format_version": ckpt.FORMAT_VERSION,
        "epoch": epoch + 1,
        "iteration": iteration,
        "world_size": rt.world_size,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "queues": [rank["queue"] for rank in ranks],
        "rng": [rank["rng"] for rank in ranks],
        "history": {field: [row[field] for row in history] for field in report.LOG_FIELDS},
        "args": {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, list, type(None)))},
    }


# Options a resumed run may change; every other one must match the checkpoint's.
FREE_ON_RESUME = {
    "resume", "overwrite", "dump_path", "device", "loss_backend", "workers", "threads", "progress", "eval", "knn_k",
    "eval_max_images", "checkpoint_freq", "amp", "channels_last", "sync_bn",
}


def restore(path, model, optimizer, scheduler, losses, args, rt) -> tuple[int, list]:
    """Load the checkpoint at ``path`` into the run; returns ``(start_epoch, history rows)``."""
    state = ckpt.load(path)
    changed = [
        f"--{key.replace('_', '-')} {state['args'][key]} -> {value}"
        for key, value in sorted(vars(args).items())
        if key not in FREE_ON_RESUME and key in state["args"] and state["args"][key] != value
    ]
    if changed:
        raise ConfigError("--resume with options that differ from the checkpoint's: " + "; ".join(changed))
    if state["world_size"] != rt.world_size:
        raise ConfigError(
            f"the checkpoint was written by {state['world_size']} rank(s); resume it with the same number, not {rt.world_size}"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    queue = state["queues"][rt.rank]
    if (queue is None) != (losses.queued is None):
        raise ConfigError("the checkpoint's queue setting differs from this run's --queue-length")
    if losses.queued is not None:
        losses.queued.load_state_dict(queue)
    ckpt.set_rng_state(state["rng"][rt.rank])
    history = state["history"]
    rows = [dict(zip(report.LOG_FIELDS, values)) for values in zip(*(history[field] for field in report.LOG_FIELDS))]
    return state["epoch"], rows


def evaluate(args, rt, trained: SwAVModel, initial_state: dict) -> tuple[Accuracy, Accuracy]:
    train_set, test_set = data.eval_datasets(
        args.data, args.size_crops[0], args.digits_size, args.eval_max_images, args.seed
    )
    baseline = build_model(args).to(rt.device)
    baseline.load_state_dict(initial_state)
    workers = min(args.workers, 2)
    random_init = evaluate_backbone(baseline.backbone, train_set, test_set, rt.device, args.knn_k, workers)
    after = evaluate_backbone(trained.backbone, train_set, test_set, rt.device, args.knn_k, workers)
    return random_init, after


def train(args: argparse.Namespace) -> RunResult:
    """Run ``swav-train`` with parsed ``args``; raises :class:`ConfigError` for unusable options."""
    started = time.perf_counter()
    rt = runtime.start(args.device)
    try:
        return _train(args, rt, started)
    finally:
        runtime.stop(rt)


def _train(args, rt: runtime.Runtime, started: float) -> RunResult:
    if args.threads:
        torch.set_num_threads(args.threads)
    resolve_run_options(args, rt)
    seed_everything(args.seed + rt.rank)
    checkpoint_path = os.path.join(args.dump_path, ckpt.CHECKPOINT_NAME)
    log_path = os.path.join(args.dump_path, "log.csv")

    model = build_model(args).to(rt.device)
    initial_state = copy.deepcopy(model.state_dict())
    if rt.distributed and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = model
    if rt.distributed:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    losses = build_losses(args, rt)
    loader = build_loader(args, rt)
    os.makedirs(args.dump_path, exist_ok=True)  # only once the options proved usable: a refused run writes nothing
    optimizer = build_optimizer(model.parameters(), args.base_lr, args.wd)
    scheduler = build_schedule(
        optimizer, args.base_lr, args.final_lr, args.start_warmup, args.warmup_epochs, args.epochs, len(loader)
    )

    start_epoch, history = 0, []
    written = [checkpoint_path, log_path]  # what this run writes, said once at its end
    if args.resume:
        start_epoch, history = restore(checkpoint_path, model, optimizer, scheduler, losses, args, rt)
        log(rt, f"resumed from {checkpoint_path} at epoch {start_epoch} (iteration {start_epoch * len(loader)})")
    if rt.is_main:
        report.write_log(log_path, history)

    n_params = sum(p.numel() for p in model.parameters())
    log(
        rt,
        f"swav-train: {args.arch} ({n_params / 1e6:.2f} M parameters), K={args.nmb_prototypes}, "
        f"crops {args.nmb_crops} x {args.size_crops} px, {len(loader.dataset)} images "
        f"({'digits' if args.data is None else args.data}), batch {args.batch_size} x {rt.world_size} rank(s), "
        f"{len(loader)} iterations/epoch, device {rt.device}, loss backend {args.loss_backend}, "
        f"queue {args.queue_length} from epoch {args.epoch_queue_starts}, amp {args.amp}",
    )
    for epoch in range(start_epoch, args.epochs):
        loader.sampler.set_epoch(epoch)
        epoch_result = train_one_epoch(
            model, network, losses, optimizer, scheduler, loader, epoch, args, rt.device, rt.world_size,
            args.progress if rt.is_main else False,
        )
        history.extend(epoch_result.rows)
        iteration = (epoch + 1) * len(loader)
        state = checkpoint_state(epoch, iteration, model, optimizer, scheduler, losses, history, args, rt)
        if rt.is_main:
            ckpt.atomic_save(state, checkpoint_path)
            if args.checkpoint_freq and ((epoch + 1) % args.checkpoint_freq == 0 or epoch + 1 == args.epochs):
                kept = os.path.join(args.dump_path, f"ckp-{epoch + 1}.pt")
                shutil.copyfile(checkpoint_path, kept)
                written.append(kept)
            report.append_log(log_path, epoch_result.rows)
            rows = epoch_result.rows
            log(
                rt,
                f"epoch {epoch + 1}/{args.epochs}  loss {epoch_result.mean_loss:.4f}  lr {rows[-1]['lr']:.4g}  "
                f"{sum(r['images_per_s'] for r in rows) / len(rows):.0f} images/s  "
                f"loss {100 * sum(r['loss_time_share'] for r in rows) / len(rows):.0f}% of step time  "
                f"queue {'in use' if rows[-1]['queue_in_use'] else 'off'}",
            )
            if report.is_collapsed(epoch_result.mean_loss, args.nmb_prototypes):
                warnings.warn(
                    f"epoch {epoch + 1}: the loss ({epoch_result.mean_loss:.4f}) sits at ln K = "
                    f"{math.log(args.nmb_prototypes):.4f}: the embeddings have collapsed (every crop predicts "
                    "uniform codes); lower --base-lr, raise --freeze-prototypes-niters or check the data",
                    RuntimeWarning,
                    stacklevel=2,
                )
        runtime.barrier(rt)

    result = RunResult(
        epochs_run=args.epochs - start_epoch,
        final_loss=history[-1]["loss"] if history else float("nan"),
        seconds=0.0,
    )
    if rt.is_main:
        if history:
            written.append(os.path.join(args.dump_path, "loss.png"))
            report.plot_loss(written[-1], history, args.nmb_prototypes)
        log(rt, f"training done in {time.perf_counter() - started:.1f} s")
        if args.eval:
            result.random_init, result.trained = evaluate(args, rt, model, initial_state)
            log(rt, comparison_table(result.random_init, result.trained, args.knn_k))
    result.seconds = time.perf_counter() - started
    if rt.is_main:
        summary = {
            "seconds": result.seconds,
            "epochs_run": result.epochs_run,
            "final_loss": result.final_loss,
            "random_init": vars(result.random_init) if result.random_init else None,
            "trained": vars(result.trained) if result.trained else None,
        }
        written.append(os.path.join(args.dump_path, "summary.json"))
        with open(written[-1], "w") as file:
            json.dump(summary, file, indent=2)
        log(rt, f"total {result.seconds:.1f} s; wrote {', '.join(written)}")
    runtime.barrier(rt)
    return result
