"""The fields every downstream run has, whatever its task family: :class:`RunConfig`.

:class:`downstream.config.DownstreamConfig` (classification, multi-label) and
:class:`downstream.segmentation.config.SegmentationConfig` extend it with their own fields, their defaults and their
``optim`` sub-config. One run directory layout (:meth:`RunConfig.run_dir`), one seed loop
(:func:`downstream.pipeline.run_seeds`) and one ``summary.json`` serve both.

Example:
    >>> from downstream.config import DownstreamConfig
    >>> DownstreamConfig(task="tissue", method="movl").run_dir(1).as_posix()
    'runs/downstream/tissue/movl/random/full/seed1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from downstream.registry import check_method
from downstream.shard_tasks import task_label
from lvmmed.config import check_choice
from lvmmed.models import check_backbone_name


@dataclass
class RunConfig:
    """Shared fields of one downstream run (defaults: the classification ones; subclasses override some).

    Attributes:
        task: A bundled task of the family or any shard set, ``shards:<dir>``.
        task_kind: For ``shards:`` tasks, the kind of samples expected (``auto``: read from the samples).
        method: Method key of the family (:mod:`downstream.registry`), checked when the config is built.
        weights: ``random``, an export dir / weight file (lvmmed.weights), or a published source.
        weights_name: Alias of the weights in results and run directories ("" = ``weights``).
        backbone / in_chans / img_size: Passed to ``lvmmed.create_backbone``; images are resized and
            channel-matched to them.
        seed: Seed of this run (split, subsampling, init, batches).
        seeds: Seeds of the CLI's loop (one run each); ``seed=<n>`` on the command line runs that seed only.
        fraction: Fraction of the training split (1.0 = all).
        split_mode: ``shard`` (the shard set's patient split), ``group`` (re-split by group with ``seed``),
            ``official`` (``meta.official_split``); classification also has ``random``.
        val_frac / test_frac: Split sizes of the re-splitting modes.
        output_dir: Root of the run directories (:meth:`run_dir`).
        data_root: Directory holding the shard sets (``<data_root>/<set name>``).
        norm_mean / norm_std: Input normalisation (after [0, 1] scaling) of random-init runs.
        norm_from_weights: Run the weights at their own settings (:func:`downstream.inputs.weight_settings`).
        max_img_size: On a CPU device, a run whose input is larger stops before loading data, with a cost estimate
            (0 disables the guard).
        augment: Random flips during training.
        bootstrap: Bootstrap resamples of the 95 % CI (0 disables where the family allows it).
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        progress: Progress bars.
        save_delta: Write the trained delta (``delta.safetensors``) next to the result.
    """

    TASK_FAMILY: ClassVar[str] = "classification"
    TASK_KINDS: ClassVar[tuple[str, ...]] = ("auto", "classification", "multilabel", "segmentation")
    SPLIT_MODES: ClassVar[tuple[str, ...]] = ("shard", "group", "random", "official")

    task: str = "tissue"
    task_kind: str = "auto"
    method: str = "linear"
    weights: str = "random"
    weights_name: str = ""
    backbone: str = "vit_tiny"
    in_chans: int = 1
    img_size: int = 224
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fraction: float = 1.0
    split_mode: str = "shard"
    val_frac: float = 0.15
    test_frac: float = 0.25
    output_dir: str = "runs/downstream"
    data_root: str = "runs/shards"
    norm_mean: float = 0.5
    norm_std: float = 0.25
    norm_from_weights: bool = True
    max_img_size: int = 512
    augment: bool = False
    bootstrap: int = 1000
    device: str = "auto"
    progress: bool = True
    save_delta: bool = True

    def __post_init__(self) -> None:
        check_choice(self.split_mode, self.SPLIT_MODES, "split_mode")
        check_choice(self.task_kind, self.TASK_KINDS, "task_kind")
        check_choice(self.device, ("auto", "cpu", "cuda"), "device")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.in_chans not in (1, 3):
            raise ValueError("in_chans must be 1 or 3")
        if not self.seeds:
            raise ValueError("seeds must not be empty: give at least one, e.g. seeds=[0]")
        check_backbone_name(self.backbone)
        check_method(self.method, self.TASK_FAMILY)

    def setting(self) -> str:
        """The data setting of the run directory: ``full`` or ``frac<f>`` (classification adds ``shot<k>``)."""
        return f"frac{self.fraction:g}" if self.fraction < 1 else "full"

    def run_dir(self, seed: int) -> Path:
        """``<output_dir>/<task>/<method>/<weights>/<setting>/seed<n>``: where the CLI puts the run of ``seed``."""
        weights = Path((self.weights_name or self.weights).partition("=")[0]).name or "weights"
        return Path(self.output_dir) / task_label(self.task) / self.method / weights / self.setting() / f"seed{seed}"
