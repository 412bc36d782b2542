"""GMoE-Adapter: a gated mixture of bottleneck experts over a medical and a general frozen backbone.

Mo, Luo, Wang, Li, "A Large-scale Medical Visual Task Adaptation Benchmark" (Med-VTAB, arXiv 2404.12876). Verified
from the abstract: GMoE-Adapter combines medical and general pretraining weights through a gated mixture-of-experts
adapter; third-party digests report 1.35× total parameters relative to one ViT. The gate formula, expert
placement/count and bottleneck size are **unverified** (no code). Our formulation,
with every choice a ``gmoe.*`` field:

* two frozen backbones of the same depth run block by block: the medical stream h^m (``weights``) and the
  general stream h^g (``gmoe.general_weights``, any architecture of the same depth and token grid);
* after block l, a gate g_l = softmax(W_l [pool(h_l^m); pool(h_l^g)] + b_l) ∈ Δ^K (pool = mean over tokens or
  pixels), optionally top-k with renormalisation (``top_k``; 0 = dense);
* h_l^m ← h_l^m + Σ_k g_{l,k} E_{l,k}(u), E = zero-initialised bottleneck (``adapter.Bottleneck``), u = h_l^m
  (``expert_input=medical``) or h_l^m + h_l^g (``sum``);
* the fused head: linear on the medical stream's pooled output (``finalize``), which carries the fused updates;
* load balancing (Switch Transformer, Fedus et al. 2022): K · Σ_k f_k · P_k per layer, f_k = share of samples
  whose top expert is k, P_k = mean gate probability, averaged over layers and weighted by ``balance_weight``.

``parameter_report()["param_multiple"]`` is the total over one backbone (compare 1.35×). With one expert (or a
top-1 gate forced onto one expert) the method reduces exactly to :class:`adapter.AdapterTuning`.

``gmoe.form=dual`` (:class:`DualStreamGMoE`) is the other reading of "medical and general weights combined": each
expert family sits on its own stream (``num_experts`` medical experts read h^m, ``num_experts`` general experts
read h^g), and the same gate mixes the outputs of all 2K experts into the fused (medical) stream; a general
expert's output is projected to the medical width by a zero-initialised linear map when the widths differ. The
general stream sees the input in its own weights' normalisation (ImageNet statistics for ``timm:``/``torchvision:``
files), re-normalised from the medical stream's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head
from downstream.inputs import input_spec, weight_settings
from downstream.methods.adapter import Bottleneck, block_widths, hidden_layout, pool_hidden
from lvmmed import create_backbone


def _expand(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return g.view(g.shape[0], *([1] * (like.ndim - 1)))


def build_general_backbone(cfg: Any) -> nn.Module:
    """The general stream from ``cfg.gmoe`` (architecture defaults to the medical one)."""
    name = cfg.gmoe.general_backbone or cfg.backbone
    weights = cfg.gmoe.general_weights
    return create_backbone(
        name, in_chans=cfg.in_chans, pretrained=None if weights == "random" else weights, img_size=cfg.img_size
    )


class GMoEAdapter(HeadMethod):
    """Per-block gated experts fusing a general backbone into a medical one (see module docstring).

    Args:
        general_backbone: Optional prebuilt general stream; built from ``cfg.gmoe`` when None.
    """

    @classmethod
    def variant(cls, cfg: Any) -> type[HeadMethod]:
        """The class for ``cfg``: :class:`DualStreamGMoE` when ``gmoe.form=dual``."""
        return DualStreamGMoE if cfg.gmoe.form == "dual" else cls

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        cfg: Any,
        key: str | None = None,
        general_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        gc = cfg.gmoe
        self.gc = gc
        self.general = general_backbone if general_backbone is not None else build_general_backbone(cfg)
        self.general.requires_grad_(False)
        if self.general.num_blocks != backbone.num_blocks:
            raise ValueError(
                f"gmoe-adapter needs backbones of equal depth: medical {backbone.num_blocks} blocks, "
                f"general {self.general.num_blocks}"
            )
        med_w, gen_w = block_widths(backbone), block_widths(self.general)
        if gc.expert_input == "sum" and med_w != gen_w:
            raise ValueError("gmoe.expert_input=sum needs equal widths in both streams; use expert_input=medical")
        self.layout = hidden_layout(backbone)
        if hidden_layout(self.general) != self.layout:
            raise ValueError("gmoe-adapter needs both streams to share a hidden layout (e.g. two ViTs)")
        conv = self.layout == "map"
        self.experts = nn.ModuleList(
            nn.ModuleList(Bottleneck(w, gc.reduction, conv) for _ in range(gc.num_experts)) for w in med_w
        )
        self.gates = nn.ModuleList(nn.Linear(m + g, gc.num_experts) for m, g in zip(med_w, gen_w))
        for gate in self.gates:
            nn.init.zeros_(gate.weight)  # uniform routing at start
            nn.init.zeros_(gate.bias)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        moe = list(self.experts.parameters()) + list(self.gates.parameters())
        return self._groups(
            cfg, [("experts", moe, cfg.gmoe.lr), ("head", list(self.head.parameters()), cfg.optim.head_lr)]
        )

    def gate(self, layer: int, hm: torch.Tensor, hg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probs, weights): dense softmax probabilities and the (top-k renormalised) mixing weights, (B, K)."""
        probs = torch.softmax(
            self.gates[layer](torch.cat([pool_hidden(hm, self.layout), pool_hidden(hg, self.layout)], dim=-1)), dim=-1
        )
        k = int(self.gc.top_k)
        if k == 0 or k >= probs.shape[-1]:
            return probs, probs
        top, idx = probs.topk(k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, idx, top)
        return probs, weights / weights.sum(-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hm = self.backbone.prepare(x)
        with torch.no_grad():
            hg = self.general.prepare(x)
        gate_probs = []
        for layer, (bm, bg) in enumerate(zip(self.backbone.blocks, self.general.blocks)):
            hm = bm(hm)
            with torch.no_grad():
                hg = bg(hg)
            probs, weights = self.gate(layer, hm, hg)
            u = hm + hg if self.gc.expert_input == "sum" else hm
            update = sum(_expand(weights[:, k], hm) * expert(u) for k, expert in enumerate(self.experts[layer]))
            hm = hm + update
            gate_probs.append(probs)
        return {"logits": self.head(self.backbone.finalize(hm)), "gate_probs": torch.stack(gate_probs)}

    def extra_loss(self, out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(out, dict) or self.gc.balance_weight <= 0 or self.gc.num_experts < 2:
            return {}
        return {"balance": self.gc.balance_weight * load_balance_loss(out["gate_probs"])}


def load_balance_loss(gate_probs: torch.Tensor) -> torch.Tensor:
    """Switch-style balance K·Σ_k f_k·P_k averaged over layers; ``gate_probs`` is (L, B, K). Equals 1 when uniform."""
    k = gate_probs.shape[-1]
    top = torch.nn.functional.one_hot(gate_probs.argmax(-1), k).float()
    f = top.mean(dim=1)
    p = gate_probs.mean(dim=1)
    return (k * (f * p).sum(-1)).mean()


def _renormaliser(cfg: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) mapping medical-stream inputs to the general weights' normalisation, or None if equal."""
    general = weight_settings(cfg.gmoe.general_weights)
    if general is None or general.mean is None:
        return None
    med = input_spec(cfg)
    m_med, s_med = torch.tensor(med.mean).view(1, -1, 1, 1), torch.tensor(med.std).view(1, -1, 1, 1)
    m_gen, s_gen = torch.tensor(general.mean).view(1, -1, 1, 1), torch.tensor(general.std).view(1, -1, 1, 1)
    if cfg.in_chans == 1:
        m_gen, s_gen = m_gen.mean(1, keepdim=True), s_gen.mean(1, keepdim=True)
    # raw = x·s_med + m_med; general input = (raw − m_gen) / s_gen = x·(s_med/s_gen) + (m_med − m_gen)/s_gen
    return s_med / s_gen, (m_med - m_gen) / s_gen


class DualStreamGMoE(GMoEAdapter):
    """``gmoe.form=dual``: medical experts on the medical stream, general experts on the general stream, one gate
    over both families mixing their outputs into the fused stream (see the module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        cfg: Any,
        key: str | None = None,
        general_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(backbone, num_classes, cfg, key, general_backbone)
        gc = self.gc
        conv = self.layout == "map"
        med_w, gen_w = block_widths(backbone), block_widths(self.general)
        self.general_experts = nn.ModuleList(
            nn.ModuleList(Bottleneck(w, gc.reduction, conv) for _ in range(gc.num_experts)) for w in gen_w
        )
        self.projections = nn.ModuleList(
            nn.Identity() if g == m else (nn.Conv2d(g, m, 1) if conv else nn.Linear(g, m)) for m, g in zip(med_w, gen_w)
        )
        for proj in self.projections:
            if not isinstance(proj, nn.Identity):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.gates = nn.ModuleList(nn.Linear(m + g, 2 * gc.num_experts) for m, g in zip(med_w, gen_w))
        for gate in self.gates:
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
        affine = _renormaliser(cfg)
        self.register_buffer("general_scale", affine[0] if affine else torch.ones(1, 1, 1, 1), persistent=False)
        self.register_buffer("general_shift", affine[1] if affine else torch.zeros(1, 1, 1, 1), persistent=False)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        moe = [*self.experts.parameters(), *self.general_experts.parameters(), *self.gates.parameters(),
               *self.projections.parameters()]  # fmt: skip
        return self._groups(
            cfg, [("experts", moe, cfg.gmoe.lr), ("head", list(self.head.parameters()), cfg.optim.head_lr)]
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hm = self.backbone.prepare(x)
        with torch.no_grad():
            hg = self.general.prepare(x * self.general_scale + self.general_shift)
        gate_probs = []
        for layer, (bm, bg) in enumerate(zip(self.backbone.blocks, self.general.blocks)):
            hm = bm(hm)
            with torch.no_grad():
                hg = bg(hg)
            probs, weights = self.gate(layer, hm, hg)
            project = self.projections[layer]
            outputs = [expert(hm) for expert in self.experts[layer]]
            outputs += [project(expert(hg)) for expert in self.general_experts[layer]]
            hm = hm + sum(_expand(weights[:, i], hm) * out for i, out in enumerate(outputs))
            gate_probs.append(probs)
        return {"logits": self.head(self.backbone.finalize(hm)), "gate_probs": torch.stack(gate_probs)}
