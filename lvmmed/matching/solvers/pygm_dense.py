"""The reference: pygmtools' classic solvers (RRWM, IPFP, SM) on the dense Lawler matrix K.

K is built by ``pygmtools.utils.build_aff_mat`` from the same Cv and Ce (affinity functions that return the given
matrices), so the vectorisation convention (column-major, ``index(i, a) = a·N + i``) is pygmtools' own. K has
(N²)² entries: 67 MB at N = 64, 1 GB at N = 128, 17 GB at N = 256, so this path is for small N only;
``max_elements`` guards against accidental allocation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lvmmed.matching.graph import KnnGraph
from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.result import Matching

PYGM_METHODS = ("rrwm", "ipfp", "sm")


def dense_lawler(qap: QAP, max_elements: int = 300_000_000) -> Tensor:
    """The (N², N²) Lawler affinity matrix of ``qap`` built by pygmtools (fp32).

    Raises:
        MemoryError: if K would exceed ``max_elements`` entries.
    """
    import pygmtools as pygm

    n = qap.n
    if n**4 > max_elements:
        raise MemoryError(f"dense K for N={n} needs {n**4:,} entries (> {max_elements:,}); use the factorized solver")
    cv = qap.cv[None]
    ce = qap.dense_ce()[None]
    conn1 = KnnGraph(qap.nbr1).connectivity()[None]
    conn2 = KnnGraph(qap.nbr2).connectivity()[None]
    dummy_nodes = torch.zeros(1, n, 1)
    dummy1 = torch.zeros(1, conn1.shape[1], 1)
    dummy2 = torch.zeros(1, conn2.shape[1], 1)
    return pygm.utils.build_aff_mat(
        dummy_nodes,
        dummy1,
        conn1,
        dummy_nodes,
        dummy2,
        conn2,
        node_aff_fn=lambda a, b: cv,
        edge_aff_fn=lambda a, b: ce,
        backend="pytorch",
    )[0]


@torch.no_grad()
def solve_pygmtools(qap: QAP, method: str = "rrwm", max_iter: int = 50) -> Matching:
    """Dense pygmtools solve followed by Hungarian (``pygmtools.hungarian``).

    Args:
        qap: the instance.
        method: ``"rrwm"``, ``"ipfp"`` or ``"sm"``.
        max_iter: solver iterations (pygmtools' default 50).
    """
    if method not in PYGM_METHODS:
        raise ValueError(f"unknown pygmtools method '{method}' (expected one of {PYGM_METHODS})")
    import pygmtools as pygm

    k = dense_lawler(qap)[None]
    n = torch.tensor([qap.n])
    solver = getattr(pygm, method)
    soft = solver(k, n, n, max_iter=max_iter, backend="pytorch")
    discrete = pygm.hungarian(soft, n, n, backend="pytorch")[0]
    perm = discrete.argmax(dim=1)
    return Matching(perm=perm, objective=qap.objective(perm), iterations=max_iter)
