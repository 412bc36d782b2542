"""Architecture tables (no heavy imports, so layout detection and the weights CLI stay light)."""

from __future__ import annotations

from dataclasses import dataclass

TIMM_NAMES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
TIMM_DIMS = {"vit_tiny": (192, 12), "vit_small": (384, 12), "vit_base": (768, 12)}  # (width, depth)


@dataclass(frozen=True)
class SamViTSpec:
    """Hyper-parameters of one SAM image-encoder size (``ImageEncoderViT`` arguments)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    out_chans: int = 256
    patch_size: int = 16
    use_abs_pos: bool = False


SAM_SPECS: dict[str, SamViTSpec] = {
    # LVM-Med's ViT-B: SAM ViT-B minus the absolute position embedding (github.com/duyhominhnguyen/LVM-Med).
    "sam_vit_b": SamViTSpec(768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": SamViTSpec(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": SamViTSpec(1280, 32, 16, (7, 15, 23, 31)),
    # Test-sized variant: same structure (windows, global blocks, rel-pos, neck), CPU-fast.
    "sam_vit_tiny": SamViTSpec(96, 4, 3, (1, 3), window_size=7, out_chans=32),
}
