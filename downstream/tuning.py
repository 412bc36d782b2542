"""A tuning protocol fair to every method: a per-method grid chosen on val, early stopping, one test evaluation.

Protocol (VPT, Jia et al. ECCV 2022, ``tune_vtab.py``: an lr × wd grid per method, chosen on val, then one test
evaluation), with the choices the paper leaves open stated and configurable in :class:`TuningConfig`:

* **Search space per method family** (:class:`SearchSpace`): lr × weight decay × head lr × method variants (e.g.
  MoVL's discrepancy weight and coupling schedule). Learning rates are given at batch 256 and scaled by
  ``optim.batch_size / 256`` (VPT's convention). Defaults follow the papers: prompt lrs in VPT's range (VPT's grid is
  {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05}; we search a subset of it), Bahng et al.'s lr 40 for pixel prompts,
  the ViT paper's SGD fine-tuning lrs for full fine-tuning, and VPT's full lr grid for head-only methods (cheap on
  cached features).
* **Schedule by steps**: every candidate runs the same schedule of ``max_steps`` steps (linear warmup over
  ``optim.warmup_frac``, then cosine), whatever the dataset size, so small tasks get as many updates as large ones.
* **Early stopping with best-state restore**: val is scored every ``eval_every`` steps; a candidate stops after
  ``patience`` evaluations without improvement and keeps its best state.
* **The initial state is a candidate**: the untrained model is scored at step 0 and replaced only by a strictly
  better val score, so an LP-initialised method (MoVL, LP-FT, VPT with ``init_head=lp``) can never be selected
  below the probe it starts from on val (nor replaced by a gain within ``min_delta``, which is val noise).
* **Replacement only on a real gain**: the best trained state must also beat the initial state by more than val
  noise (one-sided paired bootstrap over val samples at ``replace_confidence``), since the maximum over many
  candidates and checkpoints is optimistically biased; otherwise the initial state is kept and the test says why.
* **Successive halving** (Jamieson & Talwalkar, AISTATS 2016): all candidates run ``rung_steps`` steps, then only
  the ``keep`` best (by best val so far) continue to ``max_steps``. This is our budget choice; ``keep`` at least the
  number of candidates turns it off.
* **Conditioned heads**: pooled features are standardised with fixed train statistics before a one-layer head
  (MAE's linear-probe normalisation, He et al. CVPR 2022), re-expressing the head so the initial logits are
  unchanged (``standardize_features``).
* **Diagnostics**: per-candidate curves (train loss, val metric), and flags: val at chance level (the best
  constant prediction's score + ``chance_margin``), non-finite loss, and collapse to chance after being above it.

Test data never enters this module: ``run_experiment`` evaluates the returned model on test once.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import yaml

from downstream.features import frozen_features
from downstream.head_standardizer import fold_standardizer, standardize_head
from downstream.metrics import classification_metrics
from downstream.stats import paired_bootstrap
from downstream.train_loop import NonFiniteLossError, Trainer, flip_variants, predict_probs

log = logging.getLogger(__name__)

FAMILIES = {
    "linear": "head", "mlp": "head", "vp-pad": "vp", "vp-fixed": "vp", "vp-random": "vp", "movl": "movl",
    "vpt-shallow": "vpt", "vpt-deep": "vpt", "finetune": "finetune", "partial-k": "finetune", "adapter": "adapter",
    "lora": "lora", "gmoe-adapter": "gmoe",
}  # fmt: skip
PRIMARY_LR = {
    "head": "optim.head_lr", "vp": "vp.lr", "movl": "vp.lr", "vpt": "vpt.lr", "finetune": "optim.backbone_lr",
    "adapter": "adapter.lr", "lora": "lora.lr", "gmoe": "gmoe.lr",
}  # fmt: skip
VPT_LRS = [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05]


@dataclass
class SearchSpace:
    """One method family's grid: every combination of the lists is a candidate.

    Attributes:
        lr: Base lrs (at batch 256) of the family's main parameters (``PRIMARY_LR``: the prompt for VP/MoVL/VPT, the
            backbone for fine-tuning, the head for head-only methods).
        wd: Weight decays (applied to every trainable group).
        head_lr: Base lrs of the head group (empty: ``optim.head_lr``, unscaled); ignored by head-only methods.
        variants: Extra settings per candidate, each ``"key=value;key=value"`` ("" = none), e.g.
            ``"movl.weight=0.1"``. Only keys that do not change the architecture (read at training time).
    """

    lr: list[float] = field(default_factory=lambda: [1.0])
    wd: list[float] = field(default_factory=lambda: [0.0])
    head_lr: list[float] = field(default_factory=list)
    variants: list[str] = field(default_factory=lambda: [""])


@dataclass
class SearchSpaces:
    """Per-family search spaces (family of a method key: :data:`FAMILIES`)."""

    head: SearchSpace = field(default_factory=lambda: SearchSpace(lr=list(VPT_LRS), wd=[0.01, 0.001, 0.0001, 0.0]))
    vp: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[40.0, 4.0], head_lr=[0.8]))
    movl: SearchSpace = field(
        default_factory=lambda: SearchSpace(
            lr=[4.0], head_lr=[0.08], variants=["movl.weight=1.0", "movl.weight=0.1", "movl.schedule=vp_then_lp"]
        )
    )
    vpt: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[10.0, 1.0], head_lr=[0.08]))
    finetune: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[0.03, 0.01], head_lr=[0.08]))
    adapter: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[1.0, 0.25], head_lr=[0.08]))
    lora: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[0.5, 0.1], head_lr=[0.08]))
    gmoe: SearchSpace = field(default_factory=lambda: SearchSpace(lr=[1.0, 0.25], head_lr=[0.08]))


@dataclass
class TuningConfig:
    """The search of every SGD-trained method (see the module docstring).

    Attributes:
        enabled: Use this protocol (off: the fixed ``optim.lr_scale_grid`` × ``optim.wd_grid`` of full runs).
        max_steps: Schedule length of every candidate, in steps of ``optim.batch_size``.
        eval_every: Steps between val evaluations (early stopping, curves).
        patience: Evaluations without val improvement before a candidate stops.
        min_delta: A val score must exceed the best so far (the initial state's at first) by more than this to count
            as an improvement (Keras' ``min_delta``): on a few hundred val samples smaller gains are noise.
        rung_steps: Steps every candidate runs before successive halving.
        keep: Candidates that continue after the rung.
        lr_batch_scale: Scale grid lrs by ``optim.batch_size / 256`` (VPT).
        chance_margin: A val score within this margin of chance counts as "at chance".
        replace_confidence: The best trained state replaces the initial one only when its val gain is positive
            with this one-sided confidence (paired bootstrap over val samples, :func:`replacement_test`); 0 keeps
            only ``min_delta``.
        standardize_features: Standardise pooled features with fixed train statistics before a one-layer head
            (:class:`FeatureStandardizer`, MAE's linear-probe normalisation); the initial logits are unchanged.
        spaces: Per-family search spaces, overridable from YAML (``tuning.spaces.vpt.lr=[5,1]``).
    """

    enabled: bool = True
    max_steps: int = 100
    eval_every: int = 20
    patience: int = 2
    min_delta: float = 0.01
    rung_steps: int = 20
    keep: int = 1
    lr_batch_scale: bool = True
    chance_margin: float = 0.02
    replace_confidence: float = 0.9
    standardize_features: bool = True
    spaces: SearchSpaces = field(default_factory=SearchSpaces)

    def __post_init__(self) -> None:
        if not 0 <= self.replace_confidence < 1:
            raise ValueError(f"tuning.replace_confidence must be in [0, 1), got {self.replace_confidence}")
        if self.max_steps < 1 or self.eval_every < 1 or self.patience < 1 or self.keep < 1:
            raise ValueError("tuning.max_steps, eval_every, patience and keep must be >= 1")
        if not 0 < self.rung_steps <= self.max_steps:
            raise ValueError("tuning.rung_steps must be in (0, max_steps]")


def family_of(method_key: str) -> str:
    """Search-space family of a method key (parametrised keys such as ``partial-2`` map through ``partial-k``)."""
    base = method_key if method_key in FAMILIES else method_key.rsplit("-", 1)[0] + "-k"
    if base not in FAMILIES:
        raise KeyError(f"no search space for method {method_key!r}; families: {sorted(set(FAMILIES.values()))}")
    return FAMILIES[base]


def with_values(cfg: Any, values: dict[str, Any]) -> Any:
    """``cfg`` with dotted keys replaced (nested dataclasses are copied, ``__post_init__`` validates)."""
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if not hasattr(cfg, head):
            raise KeyError(f"unknown config key {key!r}")
        new = with_values(getattr(cfg, head), {rest: value}) if rest else value
        cfg = dataclasses.replace(cfg, **{head: new})
    return cfg


def parse_variant(text: str) -> dict[str, Any]:
    """``"movl.weight=0.1;movl.schedule=joint"`` → ``{"movl.weight": 0.1, "movl.schedule": "joint"}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"tuning variant part {part!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


@dataclass
class Candidate:
    """One grid point: its settings and the run config that applies them."""

    name: str
    hparams: dict[str, Any]
    cfg: Any


def candidates(cfg: Any) -> list[Candidate]:
    """The grid of ``cfg.method`` (lrs scaled by batch/256 when ``lr_batch_scale``)."""
    tc = cfg.tuning
    family = family_of(cfg.method)
    space: SearchSpace = getattr(tc.spaces, family)
    scale = cfg.optim.batch_size / 256.0 if tc.lr_batch_scale else 1.0
    head_lrs = [None] if family == "head" or not space.head_lr else list(space.head_lr)
    out = []
    for i, (lr, wd, head_lr, variant) in enumerate(itertools.product(space.lr, space.wd, head_lrs, space.variants)):
        values: dict[str, Any] = {PRIMARY_LR[family]: float(lr) * scale, "optim.weight_decay": float(wd),
                                  "optim.lr_scale": 1.0, **parse_variant(variant)}  # fmt: skip
        if head_lr is not None:
            values["optim.head_lr"] = float(head_lr) * scale
        hparams = {"lr_base": float(lr), "lr": float(lr) * scale, "weight_decay": float(wd)}
        if head_lr is not None:
            hparams.update(head_lr_base=float(head_lr), head_lr=float(head_lr) * scale)
        hparams.update(parse_variant(variant))
        out.append(Candidate(f"c{i}", hparams, with_values(cfg, values)))
    return out


def score(y: np.ndarray, probs: np.ndarray, metric: str) -> float:
    """Val metric (higher is better; NaN, e.g. AUROC with one class present, counts as −1)."""
    value = classification_metrics(y, probs, with_confusion=False)[metric]
    return -1.0 if np.isnan(value) else float(value)


def replacement_test(y: np.ndarray, probs_new: np.ndarray, probs_init: np.ndarray, metric: str, confidence: float,
                     seed: int, n_boot: int = 1000) -> dict[str, Any]:  # fmt: skip
    """Is the trained state's val gain over the initial state more than val noise?

    Paired bootstrap over the val samples (both states scored on the same resamples, ``stats.paired_bootstrap``):
    the gain is significant when the lower bound of its two-sided ``2·confidence − 1`` interval, i.e. its one-sided
    ``confidence`` bound, is above zero. The best of many candidates and checkpoints on a few hundred val samples is
    optimistic (its val gain does not transfer to test); this is our guard against it, not a papers' rule.
    """
    res = paired_bootstrap(y, probs_new, probs_init, metric, n_boot=n_boot, seed=seed, level=2 * confidence - 1)
    return {**res, "confidence": confidence, "significant": bool(res["ci_low"] > 0)}


def chance_score(y: np.ndarray, num_classes: int, metric: str) -> float:
    """Score of the best constant prediction (majority class for accuracy, 1/C for balanced accuracy...)."""
    best = -1.0
    for c in range(num_classes):
        probs = np.full((len(y), num_classes), 0.0)
        probs[:, c] = 1.0
        best = max(best, score(y, probs, metric))
    return best


class _Run:
    """One candidate in training: model copy, trainer, best state, curve."""

    def __init__(self, cand: Candidate, model: Any, trainer: Any, init_score: float, init_state: dict) -> None:
        self.cand, self.model, self.trainer = cand, model, trainer
        self.best_score, self.best_step, self.best_state = init_score, 0, init_state
        self.curve: list[dict[str, Any]] = [{"step": 0, "train_loss": None, "val": init_score}]
        self.bad_evals, self.stopped, self.error = 0, False, ""
        self.peak = init_score

    def record(self) -> dict[str, Any]:
        return {"name": self.cand.name, "hparams": self.cand.hparams, "best_val": self.best_score,
                "best_step": self.best_step, "steps_run": self.trainer.step, "stopped_early": self.stopped and
                not self.error and self.trainer.step < self.trainer.steps, "error": self.error,
                "seconds": self.trainer.seconds, "curve": self.curve}  # fmt: skip


def tune(method: Any, cfg: Any, xs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor],
         out: dict[str, Any]) -> Any:  # fmt: skip
    """Searches ``cfg.method``'s grid on train/val from ``method``'s current (initial) state.

    Args:
        method: The initialised method (probe already loaded when LP-initialised); it receives the chosen state.
        cfg: Run config (``tuning``, ``optim``, ``augment``, ``seed``).
        xs / ys: ``train`` and ``val`` inputs and targets (no test: it is evaluated once, by the caller).
        out: Filled with ``tuning`` (candidates, curves, chosen), ``best_hparams``, ``flags``.

    Returns:
        ``method`` holding the best state on val (the initial state unless a candidate beat it strictly).
    """
    tc, metric = cfg.tuning, cfg.optim.select_metric
    y_val = ys["val"].cpu().numpy()
    if len(y_val) == 0:
        raise ValueError("the tuning protocol selects on val: the task has an empty val split")
    t0 = time.perf_counter()

    val_feats = None
    if method.head_only:  # head-only methods: train and score on cached frozen features
        val_feats = torch.as_tensor(frozen_features(method, xs["val"], cfg.optim.eval_batch_size))

    def val_probs(model: Any) -> np.ndarray:
        if val_feats is None:
            return predict_probs(model, xs["val"], cfg.optim.eval_batch_size)
        model.eval()
        with torch.no_grad():
            logits = model(xs["val"][:0], plain=val_feats.to(xs["val"].device))
        return torch.softmax(logits.float(), -1).cpu().numpy()

    def evaluate(model: Any) -> float:
        return score(y_val, val_probs(model), metric)

    if tc.standardize_features and not method.head_only:
        train_feats = torch.as_tensor(frozen_features(method, xs["train"], cfg.optim.eval_batch_size))
        out["standardized_head"] = standardize_head(method, train_feats.to(xs["train"].device))
    init_probs = val_probs(method)
    init_score = score(y_val, init_probs, metric)
    init_state = method.delta_state_dict()
    plain = None
    if method.accepts_plain_features:  # MoVL's plain stream, head-only methods' inputs
        variants = flip_variants(xs["train"]) if cfg.augment else [xs["train"]]
        bs = cfg.optim.eval_batch_size
        plain = torch.stack([torch.as_tensor(frozen_features(method, v, bs)) for v in variants])
    chance = chance_score(y_val, method.num_classes, metric)
    runs = []
    for cand in candidates(cfg):
        model = copy.deepcopy(method)
        model.cfg = cand.cfg
        trainer = Trainer(model, xs["train"], ys["train"], cand.cfg, seed=cfg.seed, steps=tc.max_steps,
                          plain_features=plain)  # fmt: skip
        runs.append(_Run(cand, model, trainer, init_score, init_state))

    def advance(run: _Run, until: int) -> None:
        while not run.stopped and run.trainer.step < min(until, run.trainer.steps):
            try:
                terms = run.trainer.advance(min(tc.eval_every, until - run.trainer.step))
            except NonFiniteLossError as err:
                run.stopped, run.error = True, str(err)
                run.curve.append({"step": run.trainer.step, "train_loss": float("nan"), "val": None})
                return
            value = evaluate(run.model)
            run.curve.append({"step": run.trainer.step, "train_loss": float(sum(terms.values())), "val": value})
            run.peak = max(run.peak, value)
            if value > run.best_score + tc.min_delta:
                run.best_score, run.best_step, run.best_state = value, run.trainer.step, run.model.delta_state_dict()
                run.bad_evals = 0
            else:
                run.bad_evals += 1
                run.stopped = run.bad_evals >= tc.patience

    for run in runs:
        advance(run, tc.rung_steps)
    survivors = sorted(runs, key=lambda r: -r.best_score)[: tc.keep]
    for run in survivors:  # a survivor that already stopped early (or diverged) stays stopped
        advance(run, tc.max_steps)
    chosen = max(runs, key=lambda r: (r.best_score, -runs.index(r)))
    method.load_delta_state_dict(chosen.best_state)
    replacement = None
    chose_initial = chosen.best_step == 0
    if not chose_initial and tc.replace_confidence > 0:
        replacement = replacement_test(y_val, val_probs(method), init_probs, metric, tc.replace_confidence, cfg.seed)
        chose_initial = not replacement["significant"]
        if chose_initial:
            method.load_delta_state_dict(init_state)
    method.cfg = cfg if chose_initial else chosen.cand.cfg
    for run in runs:
        del run.model
    best_hparams = {"initial": True} if chose_initial else {**chosen.cand.hparams, "step": chosen.best_step}
    collapsed = [r.cand.name for r in runs if r.peak > chance + tc.chance_margin
                 and r.curve[-1]["val"] is not None and r.curve[-1]["val"] <= chance + tc.chance_margin]  # fmt: skip
    out["best_hparams"] = best_hparams
    out["tuning"] = {
        "metric": metric, "initial_val": init_score, "chosen": "initial" if chose_initial else chosen.cand.name,
        "best_candidate": chosen.cand.name, "replacement_test": replacement, "chance_val": chance,
        "chosen_val": init_score if chose_initial else chosen.best_score, "max_steps": tc.max_steps,
        "rung_steps": tc.rung_steps, "keep": tc.keep, "candidates": [r.record() for r in runs],
    }  # fmt: skip
    out["flags"] = {
        "val_at_chance": out["tuning"]["chosen_val"] <= chance + tc.chance_margin,
        "diverged": [r.cand.name for r in runs if r.error],
        "collapsed": collapsed,
    }
    out["train_seconds"] = time.perf_counter() - t0 + out.get("feature_seconds", 0.0) + out.get("probe_seconds", 0.0)
    log.info("%s: chose %s (val %s %.4f; initial %.4f)", cfg.method, out["tuning"]["chosen"], metric,
             out["tuning"]["chosen_val"], init_score)  # fmt: skip
    fold_standardizer(method)  # the saved delta then matches a fresh method's parameters
    return method
