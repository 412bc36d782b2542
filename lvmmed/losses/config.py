"""Typed configs for the pretraining losses (``lvmmed.config`` schemas: YAML + ``key=value``).

Defaults of ``GraphMatchingConfig`` are our choices where LVM-Med (arXiv:2306.11925) is silent; each is justified
next to the field and measured in ``docs/graph_matching.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from lvmmed.matching.solvers import SOLVERS
from lvmmed.registry import Registry, check_choice

# ``loss.name`` -> ``builder(loss_config, dim) -> nn.Module`` with ``loss, info = module(z0, z1, feats0, feats1)``.
# Each loss module registers itself next to its class (``lvmmed/losses/__init__.py`` imports them all).
LOSSES: Registry[Callable[[LossConfig, int], nn.Module]] = Registry("loss", key="loss.name")
GM_METHODS = ("auto", "ipfp", "rrwm", "sm")
GM_ASSIGNMENT = ("lapjv", "scipy")
GM_AUX = ("none", "infonce")
GM_NODE_NORMS = ("none", "batch")
NONFINITE_POLICIES = ("nan", "raise")


@dataclass
class GraphMatchingConfig:
    """The LVM-Med second-order graph-matching loss (``GraphMatchingLoss``).

    Attributes:
        k: neighbours per node in each view's k-NN graph (clamped to N − 1). 8 is BB-GM-like sparsity and keeps
            Ce at (8N)² entries.
        solver: ``factorized`` (ours, never builds K), ``pygmtools`` (dense Lawler K; N ≤ ~64) or ``hungarian``
            (first-order ablation: Cv only).
        solver_method: ``auto`` (factorized → ipfp, pygmtools → rrwm), or ``ipfp`` / ``rrwm`` (factorized),
            ``rrwm`` / ``ipfp`` / ``sm`` (pygmtools). ``ipfp`` is the fast training default; ``rrwm`` finds better
            optima on hard random QAPs but costs O(N²k²) per walk.
        solver_max_iter: IPFP steps / pygmtools iterations of the forward solve (IPFP stops earlier when a step
            does not improve the objective).
        solver_backward_iter: IPFP steps of the warm-started black-box re-solve (``matching/blackbox.py``). One
            step (one assignment call) is the default: the perturbation moves Cv by λ towards the ground truth,
            so the first linearise-and-project step from X̂ takes most of the change.
        solver_assignment: the exact linear-assignment solver inside the ``factorized`` and ``hungarian`` solvers:
            ``lapjv`` (lapx's Jonker–Volgenant; several times faster, see docs/graph_matching.md) or ``scipy``
            (``linear_sum_assignment``, the earlier default). Both return the optimal assignment, so the matching
            and gradients are the same unless the assignment problem has exactly tied optima (e.g. duplicated
            embeddings), where each breaks the tie its own way (``matching/solvers/hungarian.py``).
        lambda_val: black-box interpolation strength λ (Vlastelica et al. 2020), as the largest per-entry change
            of Cv (cosine units) when ``normalize_perturbation``. Cosines lie in [−1, 1]: at 0.5 the re-solve flips
            only rows whose identity loses by less than about 1 (a local signal); at 5 (the LVM-Med presets) it
            returns the identity on every row, the structured-hinge regime of BB-GM's λ = 80 on O(1) costs. The
            presets' value was chosen on held-out data (docs/graph_matching.md, "Choosing the presets").
        normalize_perturbation: scale λ by 1 / max|∂L/∂X̂| so it does not depend on N or the loss reduction.
        perturb_samples: S, noise samples of the backward pass (``matching/perturbed.py``: I-MLE / perturb-and-MAP
            averaging of the black-box gradient); 1 with ``perturb_noise = 0`` is the plain black-box gradient.
        perturb_noise: σ, scale of the Gumbel noise added to Cv in those samples (cosine units): the temperature of
            the soft matching whose expectation the gradient follows.
        margin: unary margin subtracted from the ground-truth entries of Cv while training (BB-GM adds 1.0 to the
            ground-truth unary costs); keeps a training signal until the true pair wins by ``margin``.
        mp_layers: depth of the residual message-passing network (0 disables it).
        mp_hidden: hidden width of each message-passing MLP.
        mp_residual_scale: scale of each message-passing update (BB-GM: 0.1).
        edge_weight: weight of the pairwise term; Ce = (edge_weight / k)·cos(edge features).
        node_norm: ``batch`` standardises every node-feature dimension over the batch (zero mean, unit variance,
            no affine) before the cosine affinities, ``none`` uses the raw features. See ``matching/affinity.py``.
        local_weight: weight of the local node-affinity term from the backbone's pre-pool feature maps
            (0 = global only). LVM-Med's vertex affinity combines "local and global" similarity; the trainer passes
            the feature maps whenever this is > 0.
        local_grid: the feature maps are pooled to local_grid × local_grid descriptors for the local term.
        hamming_weight: weight of the paper's term, the black-box Hamming loss (0 only for the "InfoNCE alone on
            the same affinity" ablation, which needs ``aux``).
        aux: an optional auxiliary term that is *not* part of LVM-Med: ``none`` (the paper's loss) or
            ``infonce`` (symmetric cross-entropy of Cv/τ against the identity, as in CLIP/InfoNCE). A run with an
            auxiliary term is "GM + InfoNCE", never "graph matching".
        aux_weight: weight of the auxiliary term when ``aux`` is not ``none``.
        aux_temperature: τ of the auxiliary term.
        gather_distributed: gather embeddings over ranks (differentiable all-gather) so one graph spans the
            global batch; otherwise every rank matches its local batch.
        on_nonfinite: ``nan`` returns a NaN loss (the trainer's NaN guard skips the step and reports
            ``loss_hamming``), ``raise`` raises ``FloatingPointError``.
    """

    k: int = 8
    solver: str = "factorized"
    solver_method: str = "auto"
    solver_max_iter: int = 50
    solver_backward_iter: int = 1
    solver_assignment: str = "lapjv"
    lambda_val: float = 0.5
    normalize_perturbation: bool = True
    perturb_samples: int = 1
    perturb_noise: float = 0.0
    margin: float = 0.1
    mp_layers: int = 1
    mp_hidden: int = 256
    mp_residual_scale: float = 0.1
    edge_weight: float = 1.0
    node_norm: str = "none"
    local_weight: float = 0.0
    local_grid: int = 2
    hamming_weight: float = 1.0
    aux: str = "none"
    aux_weight: float = 0.5
    aux_temperature: float = 0.1
    gather_distributed: bool = False
    on_nonfinite: str = "nan"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"graph_matching.k must be >= 1, got {self.k}")
        SOLVERS.check(self.solver, "graph_matching.solver")
        check_choice(self.solver_method, GM_METHODS, "graph_matching.solver_method")
        check_choice(self.solver_assignment, GM_ASSIGNMENT, "graph_matching.solver_assignment")
        if self.solver == "factorized" and self.solver_method == "sm":
            raise ValueError("graph_matching.solver_method 'sm' is only available with solver=pygmtools")
        if self.lambda_val <= 0:
            raise ValueError(f"graph_matching.lambda_val must be > 0, got {self.lambda_val}")
        if min(self.margin, self.aux_weight, self.local_weight, self.edge_weight, self.hamming_weight) < 0:
            raise ValueError("graph_matching weights (margin, aux, local, edge, hamming) must be >= 0")
        if self.perturb_samples < 1 or self.perturb_noise < 0:
            raise ValueError("graph_matching.perturb_samples must be >= 1 and perturb_noise >= 0")
        check_choice(self.aux, GM_AUX, "graph_matching.aux")
        check_choice(self.node_norm, GM_NODE_NORMS, "graph_matching.node_norm")
        if self.hamming_weight == 0 and (self.aux == "none" or self.aux_weight == 0):
            raise ValueError("graph_matching: hamming_weight=0 needs an auxiliary term (aux=infonce, aux_weight > 0)")
        if self.mp_layers < 0 or self.mp_hidden < 1 or self.local_grid < 1 or self.solver_max_iter < 1:
            raise ValueError("graph_matching mp_layers >= 0, mp_hidden/local_grid/solver_max_iter >= 1 required")
        if self.solver_backward_iter < 1:
            raise ValueError(f"graph_matching.solver_backward_iter must be >= 1, got {self.solver_backward_iter}")
        if self.aux_temperature <= 0:
            raise ValueError(f"graph_matching.aux_temperature must be > 0, got {self.aux_temperature}")
        check_choice(self.on_nonfinite, NONFINITE_POLICIES, "graph_matching.on_nonfinite")


@dataclass
class NTXentConfig:
    """SimCLR's NT-Xent (Chen et al., ICML 2020) via ``lightly.loss.NTXentLoss``.

    Attributes:
        temperature: softmax temperature (SimCLR uses 0.1–0.5; lightly's default 0.5).
        gather_distributed: use negatives from all ranks.
    """

    temperature: float = 0.5
    gather_distributed: bool = False

    def __post_init__(self) -> None:
        if self.temperature <= 1e-8:
            raise ValueError(f"ntxent.temperature must be > 1e-8, got {self.temperature}")


@dataclass
class VICRegConfig:
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022) via ``lightly.loss.VICRegLoss``; paper weights 25/25/1."""

    lambda_param: float = 25.0
    mu_param: float = 25.0
    nu_param: float = 1.0
    gather_distributed: bool = False


@dataclass
class BYOLConfig:
    """BYOL-style loss without a momentum encoder (SimSiam form; Grill et al. 2020, Chen & He 2021).

    Attributes:
        predictor_hidden: hidden width of the predictor MLP owned by the loss.
    """

    predictor_hidden: int = 512

    def __post_init__(self) -> None:
        if self.predictor_hidden < 1:
            raise ValueError("byol.predictor_hidden must be >= 1")


@dataclass
class LossConfig:
    """Which pretraining loss and its settings.

    Attributes:
        name: a registered loss (:data:`LOSSES`): ``graph_matching`` | ``ntxent`` | ``vicreg`` | ``byol`` built in.
            A loss registered elsewhere (``LOSSES.register``) takes no sub-config here: its builder receives this
            config and the projector dimension.
    """

    name: str = "graph_matching"
    graph_matching: GraphMatchingConfig = field(default_factory=GraphMatchingConfig)
    ntxent: NTXentConfig = field(default_factory=NTXentConfig)
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)
    byol: BYOLConfig = field(default_factory=BYOLConfig)

    def __post_init__(self) -> None:
        LOSSES.check(self.name)
