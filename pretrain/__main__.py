"""Self-supervised pretraining (LVM-Med graph matching or a lightly baseline) with Accelerate.

    accelerate launch -m pretrain --config configs/pretrain/lvmmed_r50.yaml data.shards=[runs/shards]
    python -m pretrain --config configs/pretrain/tiny_cpu.yaml output_dir=/tmp/x max_steps=20

Two CPU processes (gloo DDP; ``accelerate launch --cpu --num_processes 2`` silently starts ONE process):

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m pretrain --config ...

Read top to bottom, in named steps as dinov2 separates setup from ``do_train``: :func:`setup` (config, Accelerator,
run directory) -> :func:`build` (model/optimiser, data stream, validated resume) -> :func:`train_loop` (each
:func:`optimizer_step` accumulates, clips, guards non-finite values and steps; logging; atomic checkpoints) ->
:func:`finish` (final checkpoint, data-quality verdict, export). The loop never computes loss terms: the
meta-architecture (``pretrain.meta_arch``) combines backbone, projector and loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm

from lvmmed.config import flatten_config, parse_args, save_config, to_dict, to_yaml
from lvmmed.data.pipeline import DataQualityError, StreamPosition, TwoViewStream, build_loader, resolve_shard_sets
from lvmmed.errors import CheckpointError, LvmmedError, OutputError, output_error, run_cli
from lvmmed.models.state_dict import nonfinite_tensors
from pretrain.checkpoint import (
    CHECKPOINT_PATTERN,
    config_changes,
    read_trainer_state,
    resolve_resume,
    save_checkpoint,
)
from pretrain.config import PretrainConfig
from pretrain.export import export_backbone
from pretrain.init_weights import note_resume
from pretrain.logging_utils import MetricsCSV, WindowMeter, build_trackers, start_trackers
from pretrain.meta_arch import SSLMetaArch
from pretrain.monitor import TrainingMonitor
from pretrain.optim import build_optimizer, lr_at, peak_lr, set_lr

log = logging.getLogger("pretrain")


class NonFiniteLossError(LvmmedError, FloatingPointError):
    """Too many optimiser steps in a row had a non-finite loss or gradient (exit 1)."""

    default_fix = "lower optim.lr, raise optim.clip_grad_norm or use mixed_precision=no"


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


@dataclass
class Run:
    """What setup gives every later step: the config, the Accelerator and this process's place in the world."""

    cfg: PretrainConfig
    accelerator: Accelerator
    out: Path
    rank: int
    world: int


@dataclass
class TrainState:
    """Model, optimiser, data stream and counters: everything the loop changes and a checkpoint saves."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    stream: TwoViewStream
    position: StreamPosition
    lr_peak: float
    trainer: dict[str, int] = field(
        default_factory=lambda: {"step": 0, "nonfinite_total": 0, "nonfinite_in_a_row": 0, "images_seen": 0}
    )
    resumed_from: Path | None = None
    data_quality: dict[int, dict[str, Any]] = field(default_factory=dict)  # per worker: skipped, seen, errors
    info: dict[str, float] = field(default_factory=dict)
    epoch: int = 0  # of the last batch


def setup(cfg: PretrainConfig) -> Run:
    """The Accelerator (precision, trackers, DDP options), logging and the run directory."""
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_precision(cfg.mixed_precision),
        log_with=build_trackers(cfg.loggers, out),
        project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.ddp_find_unused_parameters)],
    )
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if out.exists() and not out.is_dir():
        raise OutputError(f"output_dir {out} is a file, not a directory", fix="give a directory for output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise (output_error(err, "output_dir") or err) from err
    run = Run(cfg, accelerator, out, accelerator.process_index, accelerator.num_processes)
    write_process_info(accelerator, out)
    return run


def build(run: Run) -> TrainState:
    """Model and optimiser (identical init on every rank), this rank's data stream, then resume if asked."""
    cfg, accelerator = run.cfg, run.accelerator
    checkpoint = resolve_resume(cfg.resume, run.out)  # validated: files present, sizes and hashes as written
    set_seed(cfg.seed)
    model = SSLMetaArch.from_config(cfg, load_init=checkpoint is None, record_dir=run.out)  # resume: no init weights
    note_resume(cfg, checkpoint)
    lr_peak = peak_lr(cfg.optim, cfg.data.batch_size * run.world * cfg.optim.grad_accum_steps)
    optimizer = build_optimizer(model, cfg.optim, lr_peak)
    model, optimizer = accelerator.prepare(model, optimizer)
    set_seed(cfg.seed, device_specific=True)
    # An endless, exactly-resumable stream for this rank (not prepared by Accelerate: we split it ourselves).
    stream = TwoViewStream(
        resolve_shard_sets(cfg.data), cfg.data, cfg.augment, cfg.model.in_chans, cfg.seed, run.rank, run.world
    )
    state = TrainState(model, optimizer, stream, StreamPosition(cfg.data.num_workers), lr_peak)
    if checkpoint is not None:
        try:
            accelerator.load_state(str(checkpoint))  # model, optimiser, scaler and every RNG of this rank
        except Exception as err:  # broad on purpose: Accelerate/torch raise many types for a bad state
            raise CheckpointError(
                f"{checkpoint} passed validation but could not be loaded into this model: {type(err).__name__}: "
                f"{str(err)[:300]}",
                fix="resume with the config that wrote it, or resume=never",
            ) from err
        prior = read_trainer_state(checkpoint)
        if prior["world_size"] != run.world:
            raise CheckpointError(
                f"{checkpoint} was written by {prior['world_size']} processes, now {run.world}",
                fix=f"launch {prior['world_size']} processes, or resume=never",
            )
        if changed := config_changes(checkpoint / "config.yaml", cfg):
            log.warning("resuming with a config that differs from the checkpoint's in %s: the continuation is not "
                        "the one the original run would have taken", "; ".join(changed))  # fmt: skip
        state.trainer = {k: prior[k] for k in state.trainer}
        state.position.load_state_dict(prior["data_positions"][run.rank])
        state.resumed_from = checkpoint
        log.info("resumed from %s at step %d", checkpoint, state.trainer["step"])
    state.position.apply(stream, stream.batches_per_worker)
    return state


def optimizer_step(run: Run, state: TrainState, loader: Iterator[dict[str, Any]]) -> tuple[bool, Any, float]:
    """One optimiser step: accumulate micro-batches, clip, skip the update when anything is non-finite.

    Returns ``(finite, grad_norm, lr)``; raises :class:`NonFiniteLossError` after too many skips in a row.
    """
    cfg, accelerator, model, trainer = run.cfg, run.accelerator, state.model, state.trainer
    step, accum = trainer["step"], cfg.optim.grad_accum_steps
    lr = lr_at(step, cfg.max_steps, state.lr_peak, cfg.optim)
    set_lr(state.optimizer, lr)
    buffers = accelerator.unwrap_model(model).snapshot_buffers()
    losses = []
    for micro in range(accum):
        batch = next(loader)
        state.position.update(batch)
        state.epoch = int(batch["epoch"])
        state.data_quality[int(batch["worker"])] = {
            "skipped": int(batch["skipped"]),
            "seen": int(batch["seen"]),
            "errors": list(batch.get("skip_errors", [])),
            "shards": dict(batch.get("skip_shards", {})),
        }
        view0 = batch["view0"].to(accelerator.device, non_blocking=True)
        view1 = batch["view1"].to(accelerator.device, non_blocking=True)
        sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
        with sync:
            loss, state.info = model(view0, view1)
            accelerator.backward(loss / accum)
        losses.append(loss.detach())
    clip = cfg.optim.clip_grad_norm if cfg.optim.clip_grad_norm > 0 else float("inf")
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), clip)
    finite = torch.isfinite(torch.stack(losses)).all() & torch.isfinite(torch.as_tensor(grad_norm))
    finite = bool(accelerator.reduce(finite.float().to(accelerator.device), reduction="sum") == run.world)
    if finite:
        state.optimizer.step()
        trainer["nonfinite_in_a_row"] = 0
    else:  # skip: no update, and BatchNorm statistics back to their state before this step
        accelerator.unwrap_model(model).restore_buffers(buffers)
        trainer["nonfinite_total"] += 1
        trainer["nonfinite_in_a_row"] += 1
        failed = nonfinite_terms(state.info) or ["grad_norm"]
        log.warning(
            "step %d: non-finite %s on rank %d; step skipped (%d in a row, %d total)",
            step, failed, run.rank, trainer["nonfinite_in_a_row"], trainer["nonfinite_total"],
        )  # fmt: skip
        if trainer["nonfinite_in_a_row"] >= cfg.max_nonfinite_in_a_row:
            raise NonFiniteLossError(
                f"{trainer['nonfinite_in_a_row']} non-finite steps in a row at step {step} "
                f"(terms {failed}); the earlier checkpoints are kept"
            )
    state.optimizer.zero_grad(set_to_none=True)
    return finite, grad_norm, lr


def checkpoint_now(run: Run, state: TrainState) -> Path:
    """Saves an atomic checkpoint with every rank's data position (all ranks call it)."""
    positions = gather_object([state.position.state_dict()])
    trainer_state = {**state.trainer, "world_size": run.world, "data_positions": positions}
    cfg = run.cfg
    path = save_checkpoint(run.accelerator, run.out, state.trainer["step"], trainer_state, to_yaml(cfg),
                           cfg.keep_checkpoints)  # fmt: skip
    return path


def train_loop(run: Run, state: TrainState, monitor: TrainingMonitor | None = None) -> Path | None:
    """Optimiser steps until ``max_steps``, logging, monitoring (``pretrain.monitor``; before the first step too) and
    checkpointing on schedule; returns the last checkpoint."""
    cfg, accelerator, trainer = run.cfg, run.accelerator, state.trainer
    monitor = monitor if monitor is not None else TrainingMonitor.start(cfg, accelerator)
    if accelerator.is_main_process:
        save_config(cfg, run.out / "config.yaml")
        log.info("config:\n%s", to_yaml(cfg))
        log.info(
            "world size %d, batch %d x %d accum, peak lr %.3g, %d batches/worker/epoch",
            run.world, cfg.data.batch_size, cfg.optim.grad_accum_steps, state.lr_peak, state.stream.batches_per_worker,
        )  # fmt: skip
    start_trackers(accelerator, cfg.loggers, _flat(to_dict(cfg)), resumed_step=trainer["step"])
    csv_log = MetricsCSV(run.out / "metrics.csv", resume_step=trainer["step"]) if accelerator.is_main_process else None
    last_checkpoint = state.resumed_from
    loader = iter(build_loader(state.stream, cfg.data.num_workers, seed=cfg.seed))
    meter = WindowMeter()
    images_per_step = cfg.data.batch_size * run.world * cfg.optim.grad_accum_steps
    progress = tqdm(total=cfg.max_steps, initial=trainer["step"], disable=not accelerator.is_local_main_process,
                    desc="pretrain", dynamic_ncols=True)  # fmt: skip
    state.model.train()
    try:  # an error closes the bar first, so the one-line error message is the last line
        initial = monitor.maybe_evaluate(state.model, 0) if trainer["step"] == 0 else {}  # the curve's start
        if initial:
            accelerator.log(initial, step=0)
            if csv_log is not None:
                csv_log.log(0, initial)
        while trainer["step"] < cfg.max_steps:
            meter.start_step()
            finite, grad_norm, lr = optimizer_step(run, state, loader)
            trainer["step"] += 1
            trainer["images_seen"] += images_per_step
            logged = {**state.info, "grad_norm": float(grad_norm), "lr": lr} if finite else {"lr": lr}
            meter.end_step(images_per_step, logged)
            progress.update(1)
            progress.set_postfix(loss=f"{state.info.get('loss', float('nan')):.4f}", refresh=False)
            evaluated = monitor.maybe_evaluate(state.model, trainer["step"])
            if trainer["step"] % cfg.log_every == 0 or trainer["step"] == cfg.max_steps or monitor.due(trainer["step"]):
                quality = _skip_totals(state.data_quality)
                metrics = {**meter.flush(), "nonfinite_skips": float(trainer["nonfinite_total"]),
                           "data_skips": float(quality["skipped"]), "epoch": float(state.epoch)}  # fmt: skip
                metrics.update(evaluated)
                accelerator.log(metrics, step=trainer["step"])
                if csv_log is not None:
                    csv_log.log(trainer["step"], metrics)
            if cfg.checkpoint_every and trainer["step"] % cfg.checkpoint_every == 0 and trainer["step"] < cfg.max_steps:
                last_checkpoint = checkpoint_now(run, state)
    finally:
        progress.close()
    return last_checkpoint


def _skip_totals(per_worker: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {
        "skipped": sum(w["skipped"] for w in per_worker.values()),
        "seen": sum(w["seen"] for w in per_worker.values()),
        "errors": [e for w in per_worker.values() for e in w["errors"]],
        "shards": sorted({shard for w in per_worker.values() for shard in w.get("shards", {})}),
    }


def check_data_quality(run: Run, state: TrainState) -> None:
    """Fails the run when the skipped fraction over all ranks exceeds ``data.max_skip_fraction``, however short.

    The stream's own guard waits for ``data.min_skips_to_fail`` skips so that one bad sample early on does not stop
    a long run; at the end of a run the whole count is known, so the threshold applies as written.
    """
    totals = gather_object([_skip_totals(state.data_quality)])
    skipped, seen = sum(t["skipped"] for t in totals), sum(t["seen"] for t in totals)
    limit = run.cfg.data.max_skip_fraction
    if seen and skipped / seen > limit:
        errors = [e for t in totals for e in t["errors"]]
        shards = sorted({s for t in totals for s in t.get("shards", [])}) or sorted(
            {m for e in errors for m in re.findall(r"[^\s'\"<>,()]+\.tar\b", e)}
        )  # full paths or URLs: sets may share shard names
        listed = ", ".join(shards[:10]) + (f" (+{len(shards) - 10} more)" if len(shards) > 10 else "")
        raise DataQualityError(
            f"{skipped} of {seen} samples ({skipped / seen:.1%}) were unreadable, more than "
            f"data.max_skip_fraction={limit:.1%}; shards with skipped samples: {listed or 'unknown'}; "
            f"last error: {errors[-1][:300] if errors else 'see the warnings above'}"
        )


def check_finite_weights(backbone: torch.nn.Module, checkpoint: Path) -> None:
    """Refuses to export a backbone with NaN/inf weights (steps whose loss was non-finite are skipped, but a
    finite loss can still push weights to inf, e.g. with an enormous learning rate)."""
    bad = nonfinite_tensors(backbone.state_dict())
    if bad:
        raise LvmmedError(
            f"the trained backbone holds NaN or inf in {len(bad)} tensor(s), e.g. {bad[:3]}; nothing was exported "
            f"(the last checkpoint, {checkpoint.name}, holds the same weights)",
            fix="lower optim.lr or raise optim.clip_grad_norm, and resume=<an earlier checkpoint> or start afresh",
        )


def finish(run: Run, state: TrainState, last_checkpoint: Path | None) -> dict[str, Any]:
    """Final checkpoint, data-quality verdict, backbone export, and the run summary."""
    cfg, accelerator, trainer = run.cfg, run.accelerator, state.trainer
    final = last_checkpoint if last_checkpoint is not None and _step_of(last_checkpoint) == trainer["step"] else None
    final = final or checkpoint_now(run, state)
    check_data_quality(run, state)  # after the checkpoint (nothing is lost), before an export is published
    export_dir = None
    # One export per machine: the main process, and the local main of every machine that does not see the main
    # process's files (no shared filesystem; rank files are written at start-up, long before this point).
    seen_by_main = accelerator.is_main_process or (run.out / "processes" / "rank0.json").is_file()
    if cfg.export_at_end:
        check_finite_weights(accelerator.unwrap_model(state.model).backbone, final)
    if cfg.export_at_end and (accelerator.is_main_process or (accelerator.is_local_main_process and not seen_by_main)):
        export_dir = export_backbone(accelerator.unwrap_model(state.model).backbone, run.out / "export", cfg,
                                     trainer["step"], {**trainer, "world_size": run.world})  # fmt: skip
        log.info("exported backbone to %s", export_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {
        "step": trainer["step"],
        "checkpoint": str(final),
        "export": str(export_dir) if export_dir else None,
        "nonfinite_total": trainer["nonfinite_total"],
        "last_info": state.info,
        "world_size": run.world,
        "rank": run.rank,
    }


def _step_of(checkpoint: Path) -> int:
    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    return int(match.group(1)) if match else -1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the config and runs setup -> build -> train loop -> finish; returns the run summary (raises on error).

    The command line goes through :func:`cli`, which applies the error contract of :mod:`lvmmed.errors`.
    """
    cfg = parse_args(PretrainConfig, argv, prog="python -m pretrain", description=__doc__.split("\n")[0])
    run = setup(cfg)
    monitor = TrainingMonitor.start(cfg, run.accelerator)  # its eval set is checked before anything is built
    state = build(run)
    last_checkpoint = train_loop(run, state, monitor)
    return finish(run, state, last_checkpoint)


def cli(argv: list[str] | None = None) -> int:
    """``python -m pretrain``: :func:`main` under the error contract (one-line errors, exit 2 config / 1 failure)."""
    return run_cli(main, argv, "python -m pretrain")


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    """Flattens a nested config for trackers (TensorBoard hparams take scalars only)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flatten_config(tree).items()}


if __name__ == "__main__":
    raise SystemExit(cli())
