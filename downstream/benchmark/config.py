"""Typed config of a benchmark matrix: tasks × methods × weight sources × seeds (× k-shot / fractions).

Med-VTAB (Mo et al. 2024, "Towards Foundation Models and Benchmarks for Medical Visual Task Adaptation") measures
many datasets × adaptation approaches, a scaling law of accuracy against tunable parameters, medical vs general
weights and patient-ID OOD. :class:`BenchmarkConfig` describes one such matrix for lvmmed; every cell of it is one
call of ``downstream.run.run_experiment`` on a ``DownstreamConfig`` built from ``base_config`` + ``overrides`` +
the cell's own keys.

Example (``configs/benchmark/demo.yaml``)::

    name: demo
    output_dir: runs/demo/benchmark
    tasks: [{name: tissue}]
    methods:
      - {key: linear}
      - {key: vpt-deep, overrides: [vpt.num_tokens=4]}
    weights:
      - {name: random, source: random}
      - {name: ours_gm, source: runs/demo/pretrain_gm/export}
    seeds: [0, 1, 2]

Choices the papers leave open, made explicit here:
    * ``ci_method``: the 95% CI of a cell mean over seeds. ``t`` (default) is the Student-t interval
      mean ± t_{0.975, n-1}·s/√n, which is honest at 3-5 seeds; ``bootstrap`` resamples the seeds.
    * ``paired_test``: differences between two methods / weight sources are tested on the *same* seeds and splits
      (paired t-test over seeds, ``ttest``; Wilcoxon, ``wilcoxon``; or exact sign flips, ``permutation``), at ``alpha``.
    * ``reference_weights``: the weight source that the headline table compares against the others (ours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvmmed.config import check_choice
from lvmmed.stats import CI_METHODS, PAIRED_TESTS


@dataclass
class MethodSpec:
    """One column of the results table.

    Attributes:
        key: Registry key of the method (table in docs/downstream.md), e.g. ``linear``, ``vpt-deep``, ``seg-unet``.
        label: Column name in the report; defaults to ``key`` (a suffix keeps variants apart, e.g. ``vpt-deep@8``).
        overrides: Extra ``key=value`` overrides for this method's cells (e.g. ``vpt.num_tokens=8``).
        tasks: Restrict this method to these tasks (empty: every task), e.g. seg methods only on seg tasks.
        weights: Restrict this method to these weight sources (empty: every source), to bound costly columns.
    """

    key: str = "linear"
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("methods[].key must be a registry key such as 'linear' or 'vpt-deep'")
        if not self.label:
            self.label = self.key


@dataclass
class TaskSpec:
    """One task (a row block of the report).

    Attributes:
        name: Task name known to ``downstream`` (``tissue``...) or to ``downstream.segmentation`` (``seg_tissue``...).
        overrides: ``key=value`` overrides for this task's cells (e.g. where its shards live).
        base_config: Base YAML of this task's cells ("" = the benchmark's ``base_config``). Segmentation tasks
            need a ``SegmentationConfig`` YAML (e.g. ``configs/downstream/seg_tissue.yaml``).
        task: The downstream task key passed to the run ("" = ``name``); lets one task appear twice under two
            names (e.g. ``seg_tissue`` as a plain task and under the new-center protocol).
    """

    name: str = "tissue"
    overrides: list[str] = field(default_factory=list)
    base_config: str = ""
    task: str = ""


@dataclass
class WeightSpec:
    """A named weight source.

    Attributes:
        name: Alias used in the report (``random``, ``general``, ``ours_gm``, ``ours_simclr``, ``lvmmed_published``).
        source: ``random``, an export dir holding ``model.safetensors`` + ``config.json``, or a weight file.
            A path that does not exist makes the source *skipped with a note* rather than an error. ``{seed}`` in
            the path is replaced by each cell's seed (one pretraining run per seed, e.g.
            ``runs/demo/pretrain_gm_s{seed}/export``), so seeds pair pretraining runs with downstream splits.
        note: Free text shown in the report (e.g. "GM loss, 300 steps on the bundled data").
        overrides: ``key=value`` the source needs in every cell (e.g. ``backbone=sam_vit_b`` for the published
            LVM-Med ViT), applied after the task and method overrides.
    """

    name: str = "random"
    source: str = "random"
    note: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class ScalingSweep:
    """The Med-VTAB scaling law: accuracy against log(#tunable parameters).

    Each value of ``values`` becomes an extra method column ``<label>@<value>`` run on ``weights`` only, with
    ``<param>=<value>`` added to the overrides. Several sweeps (VPT tokens, adapter width) can be listed.

    Attributes:
        method: Registry key, e.g. ``vpt-deep`` or ``adapter``.
        param: The dotted config key swept, e.g. ``vpt.num_tokens`` or ``adapter.reduction``.
        values: The values of ``param``.
        weights: Weight-source alias used for the sweep (empty: the reference weights).
        label: Series name in the plot (default: ``method``).
        overrides: Extra overrides shared by the sweep's cells.
        tasks: Tasks the sweep runs on (empty: every task).
    """

    method: str = "vpt-deep"
    param: str = "vpt.num_tokens"
    values: list[str] = field(default_factory=list)
    weights: str = ""
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.method


@dataclass
class BenchmarkConfig:
    """A benchmark matrix and how to run and report it.

    Attributes:
        name: Name shown in the report title.
        output_dir: Where ``cells/<cell_id>/``, ``results.csv``, ``report.md`` and the PNGs go.
        base_config: Optional DownstreamConfig YAML that every cell starts from.
        overrides: ``key=value`` overrides applied to every cell (e.g. tiny epochs for a smoke run).
        tasks: The tasks, each with its own overrides.
        methods: The method columns.
        weights: Named weight sources (alias -> source). A source path that does not exist is skipped with a
            note in the report (e.g. published LVM-Med when the user has not downloaded it). A list of
            :class:`WeightSpec` rather than a mapping, because lvmmed.config keeps mappings closed to new keys.
        reference_weights: The alias the headline comparison is about (default: first non-random alias).
        seeds: Seeds; the same seeds (and thus splits) are used by every method, so comparisons are paired.
        shots: Optional k-shot settings (per class); each adds a dimension to the matrix.
        fractions: Optional training-data fractions in (0, 1]; each adds a dimension to the matrix.
        scaling: Scaling-law sweeps (extra cells on one weight source).
        metric: Headline metric name in the cell metrics (``auto``: accuracy for classification, dice for seg).
        workers: Parallel worker processes (1: run cells in this process).
        threads_per_worker: torch intra-op threads per worker (0: cpu_count // workers, at least 1).
        retry_failed: Re-run cells recorded as failed when resuming.
        ci_method: ``t`` or ``bootstrap`` (CI of the mean over seeds, :func:`lvmmed.stats.summarize`).
        paired_test: ``ttest``, ``wilcoxon`` or ``permutation`` (:func:`lvmmed.stats.paired_test`).
        alpha: Significance level of the paired tests.
        bootstrap_samples: Resamples for ``ci_method=bootstrap``.
        cell_timeout_s: A cell running longer is recorded as failed (0: no limit; enforced with workers > 1).
        notes: Free text copied under the report title (e.g. the honest scale statement).
    """

    name: str = "benchmark"
    output_dir: str = "runs/benchmark"
    base_config: str = ""
    overrides: list[str] = field(default_factory=list)
    tasks: list[TaskSpec] = field(default_factory=lambda: [TaskSpec()])
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec(key="linear")])
    weights: list[WeightSpec] = field(default_factory=lambda: [WeightSpec()])
    reference_weights: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    shots: list[int] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    scaling: list[ScalingSweep] = field(default_factory=list)
    metric: str = "auto"
    workers: int = 1
    threads_per_worker: int = 0
    retry_failed: bool = True
    ci_method: str = "t"
    paired_test: str = "ttest"
    alpha: float = 0.05
    bootstrap_samples: int = 2000
    cell_timeout_s: float = 0.0
    notes: str = ""

    def __post_init__(self) -> None:
        check_choice(self.ci_method, CI_METHODS, "ci_method")
        check_choice(self.paired_test, PAIRED_TESTS, "paired_test")
        if not self.tasks or not self.methods or not self.weights or not self.seeds:
            raise ValueError("tasks, methods, weights and seeds must each have at least one entry")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        aliases = [w.name for w in self.weights]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"weight names must be unique, got {aliases}")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"method labels must be unique, got {labels}; set methods[].label for variants")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        for frac in self.fractions:
            if not 0 < frac <= 1:
                raise ValueError(f"fractions must be in (0, 1], got {frac}")
        for shot in self.shots:
            if shot < 1:
                raise ValueError(f"shots must be >= 1, got {shot}")
        if self.reference_weights and self.reference_weights not in aliases:
            raise ValueError(f"reference_weights {self.reference_weights!r} is not a key of weights")
        for sweep in self.scaling:
            if sweep.weights and sweep.weights not in aliases:
                raise ValueError(f"scaling weights {sweep.weights!r} is not a key of weights")

    @property
    def reference(self) -> str:
        """The weight alias the headline comparison is about."""
        if self.reference_weights:
            return self.reference_weights
        non_random = [w.name for w in self.weights if w.source != "random"]
        return non_random[0] if non_random else self.weights[0].name
