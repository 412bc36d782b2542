"""Graph-matching solvers behind one interface: ``solve(qap, spec) -> Matching``.

* ``"factorized"``: our solvers on the factorised operator (``factorized.py``), never materialising K.
* ``"pygmtools"``: pygmtools' RRWM / IPFP / SM on the dense Lawler K, then Hungarian (the reference; small N).
* ``"hungarian"``: Hungarian on Cv only (first-order ablation baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.factorized import ipfp, rrwm, solve_factorized
from lvmmed.matching.solvers.hungarian import ASSIGNMENT_BACKENDS, hungarian, solve_first_order
from lvmmed.matching.solvers.pygm_dense import dense_lawler, solve_pygmtools
from lvmmed.matching.solvers.result import Matching

SOLVERS = ("factorized", "pygmtools", "hungarian")


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
        if self.name not in SOLVERS:
            raise ValueError(f"unknown solver '{self.name}' (expected one of {SOLVERS})")
        if self.assignment not in ASSIGNMENT_BACKENDS:
            raise ValueError(f"unknown assignment backend '{self.assignment}' (expected one of {ASSIGNMENT_BACKENDS})")
        if self.max_iter < 1 or self.backward_max_iter < 1:
            raise ValueError(f"max_iter, backward_max_iter must be >= 1: {self.max_iter}, {self.backward_max_iter}")


def solve(qap: QAP, spec: SolverSpec) -> Matching:
    """Solves ``qap`` with the solver named in ``spec`` (maximisation)."""
    if spec.name == "hungarian":
        return solve_first_order(qap, spec.assignment)
    if spec.name == "pygmtools":
        return solve_pygmtools(qap, spec.method, spec.max_iter)
    return solve_factorized(qap, spec.method, max_iter=spec.max_iter, backend=spec.assignment)


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
