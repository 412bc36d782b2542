"""Graph-matching solvers behind one interface: ``solve(qap, spec) -> Matching``.

* ``"factorized"``: our solvers on the factorised operator (``factorized.py``), never materialising K.
* ``"pygmtools"``: pygmtools' RRWM / IPFP / SM on the dense Lawler K, then Hungarian (the reference; small N).
* ``"hungarian"``: Hungarian on Cv only (first-order ablation baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.factorized import ipfp, rrwm, solve_factorized
from lvmmed.matching.solvers.hungarian import ASSIGNMENT_BACKENDS, hungarian, solve_first_order
from lvmmed.matching.solvers.pygm_dense import dense_lawler, solve_pygmtools
from lvmmed.matching.solvers.result import Matching
from lvmmed.registry import Registry, check_choice

# ``SolverSpec.name`` (``loss.graph_matching.solver``) -> ``solve(qap, spec) -> Matching``.
SOLVERS: Registry[Callable[[QAP, SolverSpec], Matching]] = Registry("solver")


@dataclass(frozen=True)
class SolverSpec:
    """Which solver and how.

    Attributes:
        name: ``"factorized"`` | ``"pygmtools"`` | ``"hungarian"``.
        method: for ``factorized``: ``"ipfp"`` | ``"rrwm"``; for ``pygmtools``: ``"rrwm"`` | ``"ipfp"`` | ``"sm"``.
        max_iter: IPFP steps (factorized) or solver iterations (pygmtools).
        warm_start: the black-box backward re-solve of a ``factorized`` spec starts IPFP from the forward
            solution X̂ instead of solving from scratch (``lvmmed.matching.blackbox``).
        backward_max_iter: IPFP steps of that warm-started re-solve (each one assignment call).
        assignment: the exact linear-assignment solver of the ``factorized`` and ``hungarian`` solvers:
            ``"lapjv"`` (lapx's Jonker–Volgenant, the default) or ``"scipy"`` (``linear_sum_assignment``). Both
            return the same matching unless the assignment problem has tied optima (``solvers/hungarian.py``).
    """

    name: str = "factorized"
    method: str = "ipfp"
    max_iter: int = 50
    warm_start: bool = True
    backward_max_iter: int = 1
    assignment: str = "lapjv"

    def __post_init__(self) -> None:
        SOLVERS.check(self.name)
        check_choice(self.assignment, ASSIGNMENT_BACKENDS, "assignment backend")
        if self.max_iter < 1 or self.backward_max_iter < 1:
            raise ValueError(f"max_iter, backward_max_iter must be >= 1: {self.max_iter}, {self.backward_max_iter}")


SOLVERS.register("factorized", lambda qap, spec: solve_factorized(qap, spec.method, spec.max_iter, spec.assignment))
SOLVERS.register("pygmtools", lambda qap, spec: solve_pygmtools(qap, spec.method, spec.max_iter))
SOLVERS.register("hungarian", lambda qap, spec: solve_first_order(qap, spec.assignment))


def solve(qap: QAP, spec: SolverSpec) -> Matching:
    """Solves ``qap`` with the solver named in ``spec`` (maximisation)."""
    return SOLVERS.build(spec.name, qap, spec)


__all__ = [
    "ASSIGNMENT_BACKENDS",
    "SOLVERS",
    "Matching",
    "SolverSpec",
    "dense_lawler",
    "hungarian",
    "ipfp",
    "rrwm",
    "solve",
    "solve_factorized",
    "solve_first_order",
    "solve_pygmtools",
]
