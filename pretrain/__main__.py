"""Self-supervised pretraining (LVM-Med graph matching or a lightly baseline) with Accelerate.

    accelerate launch -m pretrain --config configs/pretrain/lvmmed_r50.yaml data.shards=[runs/shards]
    python -m pretrain --config configs/pretrain/tiny_cpu.yaml output_dir=/tmp/x max_steps=20

Two CPU processes (gloo DDP; ``accelerate launch --cpu --num_processes 2`` silently starts ONE process):

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m pretrain --config ...

Read top to bottom: config -> Accelerator -> model/optimiser -> data stream -> resume -> loop (accumulate, clip,
non-finite guard, step) -> logging -> atomic checkpoints -> export. The loop never computes loss terms: the
meta-architecture (``pretrain.meta_arch``) combines backbone, projector and loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm

from lvmmed.config import parse_args, save_config, to_dict, to_yaml
from lvmmed.data.pipeline import StreamPosition, TwoViewStream, build_loader, resolve_shard_sets
from pretrain.checkpoint import read_trainer_state, resolve_resume, save_checkpoint
from pretrain.config import PretrainConfig
from pretrain.export import export_backbone
from pretrain.logging_utils import MetricsCSV, WindowMeter
from pretrain.meta_arch import SSLMetaArch
from pretrain.optim import build_optimizer, lr_at, peak_lr, set_lr

log = logging.getLogger("pretrain")


class NonFiniteLossError(FloatingPointError):
    """Too many optimiser steps in a row had a non-finite loss or gradient."""


def resolve_precision(choice: str) -> str:
    """``auto`` -> bf16 on CUDA devices that support it, else no mixed precision (CPU bf16 is slow, not faster)."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def nonfinite_terms(info: dict[str, float]) -> list[str]:
    return sorted(k for k, v in info.items() if isinstance(v, float) and not math.isfinite(v))


def write_process_info(accelerator: Accelerator, out: Path) -> None:
    """Each rank records who it is (tests assert a real world size and distinct ranks from these files)."""
    folder = out / "processes"
    folder.mkdir(parents=True, exist_ok=True)
    info = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "pid": os.getpid(),
        "device": str(accelerator.device),
        "distributed_type": str(accelerator.distributed_type),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
    }
    (folder / f"rank{accelerator.process_index}.json").write_text(json.dumps(info))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(PretrainConfig, argv, prog="python -m pretrain", description=__doc__.split("\n")[0])
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_precision(cfg.mixed_precision),
        log_with=list(cfg.trackers) or None,
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.ddp_find_unused_parameters)],
    )
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    out.mkdir(parents=True, exist_ok=True)
    write_process_info(accelerator, out)

    # Model and optimiser: identical initialisation on every rank, then per-rank RNG streams.
    set_seed(cfg.seed)
    model = SSLMetaArch.from_config(cfg)
    accum = cfg.optim.grad_accum_steps
    lr_peak = peak_lr(cfg.optim, cfg.data.batch_size * world * accum)
    optimizer = build_optimizer(model, cfg.optim, lr_peak)
    model, optimizer = accelerator.prepare(model, optimizer)
    set_seed(cfg.seed, device_specific=True)

    # Data: an endless, exactly-resumable stream for this rank (not prepared by Accelerate: we split it ourselves).
    stream = TwoViewStream(
        resolve_shard_sets(cfg.data), cfg.data, cfg.augment, cfg.model.in_chans, cfg.seed, rank=rank, world_size=world
    )
    position = StreamPosition(cfg.data.num_workers)
    trainer = {"step": 0, "nonfinite_total": 0, "nonfinite_in_a_row": 0, "images_seen": 0}

    checkpoint = resolve_resume(cfg.resume, out)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))  # model, optimiser, scaler and every RNG of this rank
        prior = read_trainer_state(checkpoint)
        if prior["world_size"] != world:
            raise RuntimeError(f"{checkpoint} was written by {prior['world_size']} processes, now {world}")
        trainer = {k: prior[k] for k in trainer}
        position.load_state_dict(prior["data_positions"][rank])
        log.info("resumed from %s at step %d", checkpoint, trainer["step"])
    position.apply(stream, stream.batches_per_worker)

    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
        log.info("config:\n%s", to_yaml(cfg))
        log.info(
            "world size %d, batch %d x %d accum, peak lr %.3g, %d batches/worker/epoch",
            world,
            cfg.data.batch_size,
            accum,
            lr_peak,
            stream.batches_per_worker,
        )
    if cfg.trackers:
        accelerator.init_trackers("pretrain", config=_flat(to_dict(cfg)))
    csv_log = MetricsCSV(out / "metrics.csv", resume_step=trainer["step"]) if accelerator.is_main_process else None

    saved = {"step": trainer["step"] if checkpoint else -1, "path": checkpoint}

    def checkpoint_now() -> Path:
        positions = gather_object([position.state_dict()])
        state = {**trainer, "world_size": world, "data_positions": positions}
        path = save_checkpoint(accelerator, out, trainer["step"], state, to_yaml(cfg), cfg.keep_checkpoints)
        saved.update(step=trainer["step"], path=path)
        return path

    loader = iter(build_loader(stream, cfg.data.num_workers, seed=cfg.seed))
    meter = WindowMeter()
    progress = tqdm(
        total=cfg.max_steps,
        initial=trainer["step"],
        disable=not accelerator.is_local_main_process,
        desc="pretrain",
        dynamic_ncols=True,
    )
    model.train()
    info: dict[str, float] = {}
    while trainer["step"] < cfg.max_steps:
        step = trainer["step"]
        lr = lr_at(step, cfg.max_steps, lr_peak, cfg.optim)
        set_lr(optimizer, lr)
        meter.start_step()
        buffers = accelerator.unwrap_model(model).snapshot_buffers()
        losses = []
        for micro in range(accum):
            batch = next(loader)
            position.update(batch)
            view0 = batch["view0"].to(accelerator.device, non_blocking=True)
            view1 = batch["view1"].to(accelerator.device, non_blocking=True)
            if step in cfg.inject_nonfinite_steps:
                view0 = torch.full_like(view0, float("nan"))
            sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
            with sync:
                loss, info = model(view0, view1)
                accelerator.backward(loss / accum)
            losses.append(loss.detach())
        clip = cfg.optim.clip_grad_norm if cfg.optim.clip_grad_norm > 0 else float("inf")
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), clip)
        finite = torch.isfinite(torch.stack(losses)).all() & torch.isfinite(torch.as_tensor(grad_norm))
        finite = bool(accelerator.reduce(finite.float().to(accelerator.device), reduction="sum") == world)
        if finite:
            optimizer.step()
            trainer["nonfinite_in_a_row"] = 0
        else:  # skip: no update, and BatchNorm statistics back to their state before this step
            accelerator.unwrap_model(model).restore_buffers(buffers)
            trainer["nonfinite_total"] += 1
            trainer["nonfinite_in_a_row"] += 1
            failed = nonfinite_terms(info) or ["grad_norm"]
            log.warning(
                "step %d: non-finite %s on rank %d; step skipped (%d in a row, %d total)",
                step,
                failed,
                rank,
                trainer["nonfinite_in_a_row"],
                trainer["nonfinite_total"],
            )
            if trainer["nonfinite_in_a_row"] >= cfg.max_nonfinite_in_a_row:
                raise NonFiniteLossError(
                    f"{trainer['nonfinite_in_a_row']} non-finite steps in a row at step {step} "
                    f"(terms {failed}). Lower optim.lr, raise clip or use mixed_precision=no."
                )
        optimizer.zero_grad(set_to_none=True)
        trainer["step"] += 1
        trainer["images_seen"] += cfg.data.batch_size * world * accum
        meter.end_step(
            cfg.data.batch_size * world * accum,
            {**info, "grad_norm": float(grad_norm), "lr": lr} if finite else {"lr": lr},
        )
        progress.update(1)
        progress.set_postfix(loss=f"{info.get('loss', float('nan')):.4f}", refresh=False)

        if trainer["step"] % cfg.log_every == 0 or trainer["step"] == cfg.max_steps:
            metrics = {
                **meter.flush(),
                "nonfinite_skips": float(trainer["nonfinite_total"]),
                "data_skips": float(batch["skipped"]),
                "epoch": float(batch["epoch"]),
            }
            accelerator.log(metrics, step=trainer["step"])
            if csv_log is not None:
                csv_log.log(trainer["step"], metrics)
        if cfg.checkpoint_every and trainer["step"] % cfg.checkpoint_every == 0 and trainer["step"] < cfg.max_steps:
            checkpoint_now()
    progress.close()

    final = checkpoint_now() if saved["step"] != trainer["step"] else saved["path"]
    export_dir = None
    # One export per machine: the main process, and the local main of every machine that does not see the main
    # process's files (no shared filesystem; rank files are written at start-up, long before this point).
    seen_by_main = accelerator.is_main_process or (out / "processes" / "rank0.json").is_file()
    if cfg.export_at_end and (accelerator.is_main_process or (accelerator.is_local_main_process and not seen_by_main)):
        export_dir = export_backbone(accelerator.unwrap_model(model).backbone, out / "export", cfg, trainer["step"])
        log.info("exported backbone to %s", export_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {
        "step": trainer["step"],
        "checkpoint": str(final),
        "export": str(export_dir) if export_dir else None,
        "nonfinite_total": trainer["nonfinite_total"],
        "last_info": info,
        "world_size": world,
        "rank": rank,
    }


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattens a nested config for trackers (TensorBoard hparams take scalars only)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


if __name__ == "__main__":
    main()
