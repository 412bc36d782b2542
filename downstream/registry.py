"""Which class runs which method key: one :class:`lvmmed.registry.Registry`, ``METHODS``, for both task families.

Classification keys: ``linear``, ``mlp``, ``finetune``, ``partial-k``, ``vp-pad``, ``vp-fixed``, ``vp-random``,
``movl``, ``vpt-shallow``, ``vpt-deep``, ``adapter``, ``lora``, ``gmoe-adapter``, ``knn``. Segmentation keys:
``seg-unet``, ``seg-prompt-shallow``, ``seg-prompt-deep``, ``mask-guided``; they are lazy ``"module:attribute"``
entries (their modules import MONAI, which is slow), with their task recorded at registration so that
:func:`method_task` needs no import. The contract every class implements, and the capabilities it declares (``task``,
``head_only``, ``accepts_plain_features``...), are in :mod:`downstream.contract`. A project adds its own method with
:func:`register_method`, for either task; the run configs check ``method`` with :func:`check_method`, one check.

Parametrised keys: a key ending in ``-k`` (``partial-k``) also accepts ``partial-2``, ``partial-4``...;
:func:`resolve_key` maps the concrete key to its family key before the lookup, and the method receives the
concrete key and parses its argument.

Example:
    >>> from lvmmed.models import create_backbone
    >>> from downstream.config import DownstreamConfig
    >>> bb = create_backbone("vit_tiny", in_chans=1, img_size=32)
    >>> m = build_method("linear", bb, num_classes=3, cfg=DownstreamConfig())
    >>> m.parameter_report()["trainable"]
    579
    >>> method_task("partial-2"), method_task("seg-unet")
    ('classification', 'segmentation')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

from downstream.contract import TASKS, Method
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
from downstream.segmentation.tasks import TASKS as SEGMENTATION_TASKS
from lvmmed.config import check_choice
from lvmmed.registry import Registry

__all__ = ["METHODS", "TASKS", "Method", "build_method", "check_method", "get_method_class", "is_segmentation",
           "list_methods", "method_task", "register_method", "resolve_key"]  # fmt: skip


class MethodRegistry(Registry[type[Method]]):
    """The downstream methods: key → class (or lazy ``"module:attribute"``), plus each key's task family."""

    def __init__(self) -> None:
        super().__init__("downstream method", key="method")
        self._tasks: dict[str, str] = {}

    def register(self, name: str, obj: Any = None, *, overwrite: bool = False, task: str | None = None) -> Any:
        """Adds a method class (its declared ``task``) or a lazy path (``task`` required) under ``name``."""
        if obj is None:
            return lambda cls: self.register(name, cls, overwrite=overwrite, task=task)
        family = task or (None if isinstance(obj, str) else obj.task)
        if family is None:
            raise ValueError(f"lazy method entry {name!r} needs its task (one of {TASKS})")
        check_choice(family, TASKS, "task")
        super().register(name, obj, overwrite=overwrite)
        self._tasks[name] = family
        return obj

    def unregister(self, name: str) -> None:
        super().unregister(name)
        self._tasks.pop(name, None)

    def task_of(self, name: str) -> str:
        """The task family of a registered (family) key, without importing a lazy entry."""
        self.check(name)
        return self._tasks[name]

    def get(self, name: str) -> type[Method]:
        cls = super().get(name)
        if cls.task != self._tasks[name]:
            raise TypeError(f"{cls.__name__} declares task={cls.task!r} but is registered as {self._tasks[name]!r}")
        return cls


METHODS = MethodRegistry()
for _key, _cls in (
    ("linear", LinearProbe), ("mlp", MLPProbe), ("finetune", FullFinetune), ("partial-k", PartialFinetune),
    ("vp-pad", VPPad), ("vp-fixed", VPFixed), ("vp-random", VPRandom), ("movl", MoVL),
    ("vpt-shallow", VPTShallow), ("vpt-deep", VPTDeep), ("adapter", AdapterTuning), ("lora", LoRATuning),
    ("gmoe-adapter", GMoEAdapter),
    ("knn", KNNClassifier),
):  # fmt: skip
    METHODS.register(_key, _cls)
for _key, _path in (
    ("seg-unet", "downstream.segmentation.unet:SegUNet"),
    ("seg-prompt-shallow", "downstream.segmentation.prompt_segmenter:ShallowPromptSegmenter"),
    ("seg-prompt-deep", "downstream.segmentation.prompt_segmenter:DeepPromptSegmenter"),
    ("mask-guided", "downstream.segmentation.mask_guided:MaskGuidedClassifier"),
):
    METHODS.register(_key, _path, task="segmentation")


def register_method(key: str, task: str | None = None) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that adds a project's own :class:`~downstream.contract.Method` subclass under ``key``.

    Args:
        key: Method key (``my-probe``); a key ending in ``-k`` is parametrised (``my-k`` → ``my-2``).
        task: ``"classification"`` or ``"segmentation"``; sets the class's ``task`` (default: the ``task`` the class
            declares, ``"classification"`` unless it says otherwise).

    Raises:
        ValueError: The key is taken (built-in or registered) or the task is unknown.
    """

    def deco(cls: type[Method]) -> type[Method]:
        METHODS.register(key, cls, task=task or cls.task)  # raises when another class has the key
        cls.task, cls.registry_key = task or cls.task, key
        return cls

    return deco


def resolve_key(key: str) -> tuple[str, str | None]:
    """Maps a concrete key to ``(registry_key, argument)``: ``partial-2`` → ``("partial-k", "2")``.

    Raises:
        lvmmed.registry.UnknownNameError: Unknown key (a ``KeyError`` and ``ValueError``; the message names the
            closest key and lists every one).
    """
    if key in METHODS:
        return key, None
    match = re.fullmatch(r"(.+)-(\d+)", key)
    if match and f"{match.group(1)}-k" in METHODS:
        return f"{match.group(1)}-k", match.group(2)
    raise METHODS.unknown(key)


def method_task(key: str) -> str:
    """``"classification"`` or ``"segmentation"`` for a (possibly parametrised) key, without importing MONAI."""
    return METHODS.task_of(resolve_key(key)[0])


def check_method(key: str, task: str) -> None:
    """The config check of ``method``: a registered key (or a parametrised form of one) of the ``task`` family.

    Raises:
        ValueError: Unknown key, or a method of the other task family (the message says which config takes it).
    """
    family = method_task(key)
    if family != task:
        raise ValueError(f"method {key!r} is a {family} method, not a {task} one: run it with python -m downstream "
                         f"(which picks the {family} config from the method)")  # fmt: skip


def list_methods(task: str | None = None) -> list[str]:
    """Known keys, optionally only those of one task family."""
    return sorted(k for k in METHODS if task is None or METHODS.task_of(k) == task)


def get_method_class(key: str) -> type[Method]:
    """The class of ``key`` (parametrised keys resolved)."""
    return METHODS.get(resolve_key(key)[0])


def build_method(key: str, backbone: nn.Module, num_classes: int, cfg: Any) -> Method:
    """Builds method ``key`` around ``backbone`` for ``num_classes`` outputs.

    Args:
        key: A known key or a parametrised form of one (``partial-2``).
        backbone: An lvmmed ``Backbone``; the method takes ownership (it may freeze or wrap it).
        num_classes: Output classes.
        cfg: The run config of the method's task family; methods read their sub-config.
    """
    cls = get_method_class(key).variant(cfg)  # a class may pick a variant from the config (gmoe.form=dual)
    return cls(backbone, num_classes, cfg, key=key)


def is_segmentation(method: str = "", task: str = "") -> bool:
    """The one rule for "does this cell run through ``run_segmentation``?".

    True for a segmentation method key (``seg-*``, ``mask-guided`` or a registered segmentation method) or a
    bundled segmentation task (``seg_tissue``, ``mask_guided_tissue``...); a shard-set task (``shards:<dir>``) is
    decided by its method. Unknown method keys count as classification (the CLI and the configs report them).
    """
    if method:
        try:
            if method_task(method) == "segmentation":
                return True
        except KeyError:
            pass
    return task in SEGMENTATION_TASKS
