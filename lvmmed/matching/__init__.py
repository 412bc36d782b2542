"""Graph matching for LVM-Med: k-NN graphs, message passing, affinities, QAP solvers, black-box gradients."""

from lvmmed.matching.affinity import edge_factors, local_affinity, node_affinity
from lvmmed.matching.blackbox import BlackBoxMatching, blackbox_match
from lvmmed.matching.graph import KnnGraph, edge_features, knn_graph
from lvmmed.matching.message_passing import MessagePassing
from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers import Matching, SolverSpec, solve

__all__ = [
    "QAP",
    "BlackBoxMatching",
    "KnnGraph",
    "Matching",
    "MessagePassing",
    "SolverSpec",
    "blackbox_match",
    "edge_factors",
    "edge_features",
    "knn_graph",
    "local_affinity",
    "node_affinity",
    "solve",
]
