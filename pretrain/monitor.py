"""Online k-NN monitor during pretraining: how well the backbone's features separate labelled classes, over time.

The monitor that lightly (``KNNClassifier``), solo-learn (online k-NN) and DINO (``eval_knn``) users rely on, made
cheap enough to leave on. Off while ``monitor.eval_set`` is empty. Otherwise, before the first step, every
``monitor.eval_every`` optimiser steps and at the last step, the main process:

1. takes the backbone out of DDP (``accelerator.unwrap_model``) and computes its pooled features in ``eval()``
   mode under ``no_grad`` and the run's mixed precision, for a small labelled shard set held in memory: it is read
   once at start-up (:mod:`lvmmed.data.labelled_sets`) and brought to the pretraining input as the training
   stream does, minus the randomness: the deterministic ``augment.preset=none`` view (resize to ``augment.size``,
   grey/colour matched to ``model.in_chans``, normalised with ``augment.mean/std``), kept as float16;
2. fits a weighted k-NN memory (k=20, T=0.07 by default; Wu et al. 2018, DINO) on the eval set's ``train_split``
   and reports top-1 accuracy on its ``test_split`` (default train → val; ``test`` is refused, it stays held out
   for downstream), and with ``monitor.linear_probe`` a logistic-regression probe (:mod:`lvmmed.probes`);
3. restores the backbone's mode and every RNG it could touch (Python, NumPy, torch CPU and CUDA), so that a run
   takes the same steps with the monitor as without it (seeded runs and exact resume are unchanged; tested).

Other ranks wait at a barrier meanwhile. The eval set is read and checked by the main process at start-up (before
the model is built) and the verdict is broadcast, so that every rank stops with the same one-line error before
any step: exit 2 for a config problem (no such directory, not a shard set, no labels, a split without samples,
one class), exit 1 for an unreadable shard.

Logged, in the same rows as the loss (``metrics.csv``, the trackers): ``monitor_knn_acc``, ``monitor_lp_acc`` and
``monitor_seconds`` (wall time of the evaluation; the step timing behind ``images_per_s`` excludes it). A resumed
run does not repeat the evaluation of the step it resumes from (its row is kept).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from lvmmed.config import ConfigError
from lvmmed.data.augment import AugmentConfig, ViewTransform
from lvmmed.data.labelled_sets import LabelledSetError, load_labelled_set
from lvmmed.errors import EXIT_USAGE, LvmmedError, classify
from lvmmed.probes import knn_accuracy, linear_probe_accuracy, pooled_features
from pretrain.config import MonitorConfig, PretrainConfig

log = logging.getLogger("pretrain.monitor")

KNN_KEY, PROBE_KEY, SECONDS_KEY = "monitor_knn_acc", "monitor_lp_acc", "monitor_seconds"


@dataclass
class EvalTensors:
    """The monitor's eval set as model inputs: (N, C, S, S) float16 normalised images and (N,) labels per split."""

    name: str
    kind: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def eval_view(cfg: PretrainConfig) -> ViewTransform:
    """The training view without randomness: resize to ``augment.size``, match ``model.in_chans``, normalise."""
    plain = AugmentConfig(preset="none", size=cfg.augment.size, mean=list(cfg.augment.mean), std=list(cfg.augment.std))
    return ViewTransform(plain, 0, cfg.model.in_chans)


def load_eval_tensors(cfg: PretrainConfig) -> EvalTensors:
    """Reads ``monitor.eval_set`` and prepares both splits as model inputs (see the module docstring).

    Raises:
        LabelledSetError: Not a usable labelled set (the caller reports it as a config error).
        ShardFormatError: A shard cannot be read.
    """
    m = cfg.monitor
    data = load_labelled_set(m.eval_set, (m.train_split, m.test_split), m.labels, m.patch_size, m.patch_stride,
                             m.max_samples)  # fmt: skip
    view = eval_view(cfg)

    def inputs(images: list[np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([view(torch.from_numpy(img)).to(torch.float16) for img in images])

    train, test = data.splits[m.train_split], data.splits[m.test_split]
    return EvalTensors(
        data.name, data.kind, data.num_classes, inputs(train.images), torch.from_numpy(train.labels),
        inputs(test.images), torch.from_numpy(test.labels),
    )  # fmt: skip


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restores the Python, NumPy and torch (CPU, and CUDA on a CUDA device) RNG states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class TrainingMonitor:
    """Evaluates on schedule from the training loop; every rank calls :meth:`maybe_evaluate` at every step.

    Args:
        cfg: The monitor config.
        max_steps: The run's step budget (there is always an evaluation at the last step).
        accelerator: The run's Accelerator.
        data: The prepared eval set on the main process, None elsewhere (and when the monitor is off).
    """

    def __init__(self, cfg: MonitorConfig, max_steps: int, accelerator: Accelerator, data: EvalTensors | None):
        self.cfg, self.max_steps, self.accelerator, self.data = cfg, max_steps, accelerator, data

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.eval_set)

    @classmethod
    def start(cls, cfg: PretrainConfig, accelerator: Accelerator) -> TrainingMonitor:
        """Reads and checks the eval set on the main process; every rank gets the verdict (see the module docstring).

        Raises:
            ConfigError: The eval set is missing or unusable (exit 2).
            LvmmedError: It could not be read (exit 1).
        """
        m = cfg.monitor
        if not m.eval_set:
            return cls(m, cfg.max_steps, accelerator, None)
        data, failure = None, None
        if accelerator.is_main_process:
            started = time.perf_counter()
            try:
                data = load_eval_tensors(cfg)
            except Exception as err:  # every rank must learn of it, whatever it is, or the others would hang
                failure = err
            else:
                log.info(
                    "monitor: %s (%s labels, %d classes), %d %s / %d %s samples at %d px, read in %.1f s",
                    data.name, data.kind, data.num_classes, len(data.train_y), m.train_split, len(data.test_y),
                    m.test_split, cfg.augment.size, time.perf_counter() - started,
                )  # fmt: skip
        verdict = broadcast_object_list([_describe(failure, m.eval_set)])[0]
        if failure is not None:
            if isinstance(failure, LabelledSetError):
                raise ConfigError(verdict[1], fix=verdict[2]) from failure
            raise failure
        if verdict is not None:
            error = ConfigError(verdict[1], fix=verdict[2]) if verdict[0] == EXIT_USAGE else LvmmedError(*verdict[1:])
            raise error
        return cls(m, cfg.max_steps, accelerator, data)

    def due(self, step: int) -> bool:
        """True at the steps that are evaluated (the same answer on every rank)."""
        every = self.cfg.eval_every
        return self.enabled and (step in (0, self.max_steps) or (every > 0 and step % every == 0))

    def maybe_evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """The monitor metrics at a due step on the main process ({} elsewhere and at other steps).

        Every rank must call it at the same steps: the others wait at a barrier while the main process evaluates.
        """
        if not self.due(step):
            return {}
        metrics = self.evaluate(model) if self.data is not None else {}
        self.accelerator.wait_for_everyone()
        if metrics:
            log.info("step %d: monitor %s", step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """k-NN (and probe) accuracy of the current backbone; leaves its mode and every RNG as they were."""
        data, cfg = self.data, self.cfg
        if data is None:
            raise RuntimeError("the monitor has no eval set on this process")
        started = time.perf_counter()
        backbone = self.accelerator.unwrap_model(model).backbone
        with preserved_rng(self.accelerator.device):
            extract = {"batch_size": cfg.batch_size, "autocast": self.accelerator.autocast}  # float16 -> float32
            train = pooled_features(backbone, data.train_x, **extract)
            test = pooled_features(backbone, data.test_x, **extract)
            metrics = {KNN_KEY: knn_accuracy(train, data.train_y, test, data.test_y, data.num_classes, cfg.k,
                                             cfg.temperature)}  # fmt: skip
            if cfg.linear_probe:
                metrics[PROBE_KEY] = linear_probe_accuracy(train.numpy(), data.train_y.numpy(), test.numpy(),
                                                           data.test_y.numpy(), cfg.linear_probe_c)  # fmt: skip
        metrics[SECONDS_KEY] = time.perf_counter() - started
        return metrics


def _describe(err: BaseException | None, eval_set: str) -> tuple[int, str, str] | None:
    """``(exit code, message, fix)`` of a start-up failure, picklable for the other ranks (None: no failure)."""
    if err is None:
        return None
    if isinstance(err, LabelledSetError):
        return EXIT_USAGE, f"monitor.eval_set={eval_set}: {err}", err.fix
    code, message, fix = classify(err) or (1, f"{type(err).__name__}: {err}", "")
    return code, f"the main process could not prepare monitor.eval_set={eval_set}: {message}", fix
