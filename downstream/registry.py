"""Which class runs which method key: plain tables, no registration side effects.

Classification keys (``CLASSIFICATION_METHODS``): ``linear``, ``mlp``, ``finetune``, ``partial-k``, ``vp-pad``,
``vp-fixed``, ``vp-random``, ``movl``, ``vpt-shallow``, ``vpt-deep``, ``adapter``, ``lora``, ``gmoe-adapter``, ``knn``.
Segmentation keys (:func:`segmentation_methods`, imported on demand because it pulls in MONAI, which is slow):
``seg-unet``, ``seg-prompt-shallow``, ``seg-prompt-deep``, ``mask-guided``. The contract every class implements is
:mod:`downstream.contract`. A project adds its own method with :func:`register_method` (a decorator that puts the
class into ``USER_METHODS``).

Parametrised keys: a key ending in ``-k`` (``partial-k``) also accepts ``partial-2``, ``partial-4``...; the method
receives the concrete key and parses its argument.

Example:
    >>> from lvmmed.models import create_backbone
    >>> from downstream.config import DownstreamConfig
    >>> bb = create_backbone("vit_tiny", in_chans=1, img_size=32)
    >>> m = build_method("linear", bb, num_classes=3, cfg=DownstreamConfig())
    >>> m.parameter_report()["trainable"]
    579
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

from downstream.contract import Method
from downstream.methods.adapter import AdapterTuning
from downstream.methods.finetune import FullFinetune
from downstream.methods.gmoe import GMoEAdapter
from downstream.methods.knn import KNNClassifier
from downstream.methods.linear import LinearProbe
from downstream.methods.lora import LoRATuning
from downstream.methods.mlp import MLPProbe
from downstream.methods.movl import MoVL
from downstream.methods.partial import PartialFinetune
from downstream.methods.visual_prompt import VPFixed, VPPad, VPRandom
from downstream.methods.vpt import VPTDeep, VPTShallow

TASKS = ("classification", "segmentation")

CLASSIFICATION_METHODS: dict[str, type[Method]] = {
    "linear": LinearProbe,
    "mlp": MLPProbe,
    "finetune": FullFinetune,
    "partial-k": PartialFinetune,
    "vp-pad": VPPad,
    "vp-fixed": VPFixed,
    "vp-random": VPRandom,
    "movl": MoVL,
    "vpt-shallow": VPTShallow,
    "vpt-deep": VPTDeep,
    "adapter": AdapterTuning,
    "lora": LoRATuning,
    "gmoe-adapter": GMoEAdapter,
    "knn": KNNClassifier,
}
SEGMENTATION_METHOD_KEYS = ("seg-unet", "seg-prompt-shallow", "seg-prompt-deep", "mask-guided")
USER_METHODS: dict[str, type[Method]] = {}
# Kept for existing imports: the classification table plus the methods a project registered.
METHODS: dict[str, type[Method]] = CLASSIFICATION_METHODS


def segmentation_methods() -> dict[str, type[Method]]:
    """The segmentation table (imported on first use: MONAI is slow to import)."""
    from downstream.segmentation.mask_guided import MaskGuidedClassifier
    from downstream.segmentation.prompt_segmenter import DeepPromptSegmenter, ShallowPromptSegmenter
    from downstream.segmentation.unet import SegUNet

    table = {
        "seg-unet": SegUNet,
        "seg-prompt-shallow": ShallowPromptSegmenter,
        "seg-prompt-deep": DeepPromptSegmenter,
        "mask-guided": MaskGuidedClassifier,
    }
    assert tuple(table) == SEGMENTATION_METHOD_KEYS
    return table


def register_method(key: str, task: str = "classification") -> Callable[[type[Method]], type[Method]]:
    """Class decorator that adds a project's own :class:`~downstream.contract.Method` subclass under ``key``.

    Args:
        key: Method key (``my-probe``); a key ending in ``-k`` is parametrised (``my-k`` → ``my-2``).
        task: ``"classification"`` or ``"segmentation"``.

    Raises:
        ValueError: The key is taken (built-in or registered) or the task is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def deco(cls: type[Method]) -> type[Method]:
        taken = {**CLASSIFICATION_METHODS, **USER_METHODS}
        if (key in taken and taken[key] is not cls) or key in SEGMENTATION_METHOD_KEYS:
            raise ValueError(f"method key {key!r} is already taken")
        cls.registry_key = key
        cls.task = task
        USER_METHODS[key] = cls
        return cls

    return deco


def all_methods(segmentation: bool = True) -> dict[str, type[Method]]:
    """Every key → class: built-in classification, built-in segmentation (when asked) and registered."""
    return {**CLASSIFICATION_METHODS, **(segmentation_methods() if segmentation else {}), **USER_METHODS}


def _known_keys() -> list[str]:
    return sorted({*CLASSIFICATION_METHODS, *SEGMENTATION_METHOD_KEYS, *USER_METHODS})


def resolve_key(key: str) -> tuple[str, str | None]:
    """Maps a concrete key to ``(table_key, argument)``: ``partial-2`` → ``("partial-k", "2")``.

    Needs no import of the segmentation methods (the check runs before any data or model loads).

    Raises:
        KeyError: Unknown key (the message lists the known ones).
    """
    known = _known_keys()
    if key in known:
        return key, None
    match = re.fullmatch(r"(.+)-(\d+)", key)
    if match and f"{match.group(1)}-k" in known:
        return f"{match.group(1)}-k", match.group(2)
    raise KeyError(f"Unknown method {key!r}. Known: {', '.join(known)}")


def method_task(key: str) -> str:
    """``"classification"`` or ``"segmentation"`` for a (possibly parametrised) key, without importing MONAI."""
    table_key = resolve_key(key)[0]
    if table_key in SEGMENTATION_METHOD_KEYS:
        return "segmentation"
    return (USER_METHODS.get(table_key) or CLASSIFICATION_METHODS[table_key]).task


def list_methods(task: str | None = None) -> list[str]:
    """Known keys, optionally only those of one task family."""
    return sorted(k for k in _known_keys() if task is None or method_task(k) == task)


def get_method_class(key: str) -> type[Method]:
    """The class of ``key`` (parametrised keys resolved)."""
    table_key = resolve_key(key)[0]
    return all_methods(segmentation=table_key in SEGMENTATION_METHOD_KEYS)[table_key]


def build_method(key: str, backbone: nn.Module, num_classes: int, cfg: Any) -> Method:
    """Builds method ``key`` around ``backbone`` for ``num_classes`` outputs.

    Args:
        key: A known key or a parametrised form of one (``partial-2``).
        backbone: An lvmmed ``Backbone``; the method takes ownership (it may freeze or wrap it).
        num_classes: Output classes.
        cfg: The run config (``DownstreamConfig`` for classification); methods read their sub-config.
    """
    cls = get_method_class(key)
    variant = getattr(cls, "variant", None)  # a class may pick a variant from the config (gmoe.form=dual)
    cls = variant(cfg) if variant is not None else cls
    return cls(backbone, num_classes, cfg, key=key)


def is_segmentation(method: str = "", task: str = "") -> bool:
    """The one rule for "does this cell run through ``run_segmentation``?".

    True for a segmentation method key (``seg-*``, ``mask-guided`` or a registered segmentation method) or a
    bundled segmentation task (``seg_tissue``, ``mask_guided_tissue``...); a shard-set task (``shards:<dir>``) is
    decided by its method. Unknown method keys count as classification (the classification CLI reports them).
    """
    from downstream.segmentation.tasks import TASKS as SEGMENTATION_TASKS

    if method:
        try:
            if method_task(method) == "segmentation":
                return True
        except KeyError:
            pass
    return task in SEGMENTATION_TASKS
