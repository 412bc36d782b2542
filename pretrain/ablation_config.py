"""Typed config of a pretraining ablation: loss variants × pretraining seeds, each export evaluated downstream.

Every variant is pretrained with the same base config, steps, batch and data (``pretrain_overrides``) plus its own
``overrides``; ``source: random`` evaluates a randomly initialised backbone of the same architecture instead. Each
(variant, pretraining seed) export is evaluated on every ``evals`` entry by ``python -m downstream``, with the
downstream seed equal to the pretraining seed, so the differences between variants are paired over pretraining
seeds (the replication unit of a pretraining claim).

Example (``configs/ablation/cpu.yaml``)::

    name: cpu
    pretrain_config: configs/pretrain/tiny_cpu.yaml
    pretrain_overrides: [max_steps=100, data.batch_size=32]
    data_root: runs/shards
    variants:
      - {name: paper_gm, label: "paper GM"}
      - {name: no_edges, overrides: [loss.graph_matching.solver=hungarian]}
      - {name: random, source: random}
    evals:
      - {task: region, method: linear, config: configs/downstream/region.yaml}
    seeds: [0, 1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvmmed.config import load_config
from lvmmed.registry import check_choice
from pretrain.config import PretrainConfig

SOURCES = ("pretrain", "random")


@dataclass
class VariantSpec:
    """One row of the ablation.

    Attributes:
        name: Directory-safe name (``paper_gm``).
        label: Name in the report ("" = ``name``).
        source: ``pretrain`` (run ``python -m pretrain`` with ``overrides``) or ``random`` (no pretraining).
        overrides: Pretraining ``key=value`` overrides of this variant (after the shared ones).
        note: One line for the report (what the variant changes).
    """

    name: str = "paper_gm"
    label: str = ""
    source: str = "pretrain"
    overrides: list[str] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name):
            raise ValueError(f"variants[].name must be a non-empty directory-safe name, got {self.name!r}")
        check_choice(self.source, SOURCES, "variants[].source")
        if self.source == "random" and self.overrides:
            raise ValueError(f"variant {self.name!r}: a random-init variant takes no pretraining overrides")
        if not self.label:
            self.label = self.name


@dataclass
class EvalSpec:
    """One held-out evaluation (a column of the report).

    Attributes:
        task: Downstream task key (``region``, ``tissue_ood``, ``modality``...).
        method: Downstream method key (``linear``, ``vpt-deep``, ``vp``...).
        config: Downstream YAML of the task.
        overrides: Extra downstream ``key=value`` overrides of this evaluation.
    """

    task: str = "region"
    method: str = "linear"
    config: str = "configs/downstream/region.yaml"
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method}"


@dataclass
class AblationConfig:
    """A pretraining ablation (``python -m pretrain.ablation --config configs/ablation/cpu.yaml``).

    Attributes:
        name: Name of the ablation (report title).
        output_dir: Run directory: ``pretrain/<variant>/seed<s>``, ``eval/<variant>/seed<s>``, ``cells/*.json``
            (the resume state), ``results.json`` and ``report.md``.
        pretrain_config: Base pretraining YAML shared by every variant.
        pretrain_overrides: Shared pretraining overrides (step budget, batch, data): equal compute and data.
        data_root: Shard root of the pretraining sets and of the downstream tasks.
        bundled_profile: When set (``tiny`` / ``demo``), ``python -m data_prep bundled --out <data_root>
            --profile <p>`` runs first (it skips sets that exist), so a fresh clone needs no other step.
        downstream_overrides: Shared downstream overrides (input size and normalisation of the exports...).
        variants: The rows.
        evals: The columns.
        seeds: Pretraining seeds (≥ 3 for a claim; the downstream seed of a cell equals its pretraining seed).
        reference: Variant that every other variant is compared with (paired over seeds).
        baselines: Variants that the reference is compared with in the headline (target checks).
        headline: The ``task/method`` of the headline comparisons.
        workers: Cells run concurrently (each job gets ``threads_per_worker`` threads).
        threads_per_worker: ``OMP_NUM_THREADS`` of every job.
        report: Markdown file whose ``ablation`` block is rewritten from the results ("" = only ``report.md``).
        report_block: Marker name of that block (``lvmmed.markers``).
        readme: Markdown file (e.g. ``README.md``) whose ``readme_block`` block is rewritten with the command and
            the headline verdicts ("" = none), so the README quotes the ablation from its results.
        readme_block: Marker name of that block.
        command: The command line quoted in the report ("" = reconstructed from the arguments).
        seconds_per_step, seconds_per_eval: Idle 2-core timing assumptions of the start-up estimate.
    """

    name: str = "ablation"
    output_dir: str = "runs/ablation"
    pretrain_config: str = "configs/pretrain/tiny_cpu.yaml"
    pretrain_overrides: list[str] = field(default_factory=list)
    data_root: str = "runs/shards"
    bundled_profile: str = ""
    downstream_overrides: list[str] = field(default_factory=list)
    variants: list[VariantSpec] = field(default_factory=lambda: [VariantSpec()])
    evals: list[EvalSpec] = field(default_factory=lambda: [EvalSpec()])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    reference: str = "paper_gm"
    baselines: list[str] = field(default_factory=list)
    headline: str = "region/linear"
    workers: int = 2
    threads_per_worker: int = 1
    report: str = ""
    report_block: str = "ablation"
    readme: str = ""
    readme_block: str = "ablation-headline"
    command: str = ""
    seconds_per_step: float = 0.6
    seconds_per_eval: float = 20.0

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"ablation variants need unique names, got {names}")
        if self.reference not in names:
            raise ValueError(f"ablation.reference {self.reference!r} is not a variant ({names})")
        unknown = sorted(set(self.baselines) - set(names))
        if unknown:
            raise ValueError(f"ablation.baselines {unknown} are not variants ({names})")
        keys = [e.key for e in self.evals]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"ablation evals need unique task/method pairs, got {keys}")
        if self.headline not in keys:
            raise ValueError(f"ablation.headline {self.headline!r} is not an eval ({keys})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ablation.seeds must be unique and non-empty, got {self.seeds}")
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ValueError("ablation.workers and threads_per_worker must be >= 1")


def resolved_max_steps(cfg: AblationConfig) -> dict[str, int]:
    """Each pretrained variant's step budget (base config + shared overrides + its own).

    Resolving every variant's pretraining config here also rejects a bad variant override at start-up (exit 2),
    before any cell runs.
    """
    return {
        v.name: load_config(PretrainConfig, cfg.pretrain_config, [*cfg.pretrain_overrides, *v.overrides]).max_steps
        for v in cfg.variants
        if v.source != "random"
    }
