"""Classification methods; importing this package registers them in :mod:`downstream.registry`."""

from downstream.methods import (  # noqa: F401
    adapter,
    finetune,
    gmoe,
    linear,
    lora,
    mlp,
    movl,
    partial,
    visual_prompt,
    vpt,
)
