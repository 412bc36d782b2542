"""Solver-level measurements of ``bench/gm_loss.py`` (the QAP instances of the loss, without autograd).

* ``views`` / ``qap``: the benchmark's noisy views and the loss's own QAP on them (message passing off, margin off);
* ``solver_breakdown``: one Hungarian call per assignment backend, one fresh and one replayed (cached) sparse
  linearisation, one objective, one whole IPFP solve;
* ``objective_comparison``: the objectives of every solver at small N against pygmtools' dense RRWM;
* ``ipfp_cap``: what capping the forward IPFP (``solver_max_iter``) costs in objective, against the uncapped
  default, on the benchmark's instances;
* ``warm_start``: the black-box backward re-solve warm-started from X̂ vs solved from scratch.
"""

from __future__ import annotations

import statistics
import time

import torch

from lvmmed.matching import QAP, SolverSpec, knn_graph, solve
from lvmmed.matching.affinity import edge_factors, node_affinity
from lvmmed.matching.blackbox import BlackBoxMatching
from lvmmed.matching.solvers import ASSIGNMENT_BACKENDS as BACKENDS
from lvmmed.matching.solvers import hungarian

DIM, K = 128, 8
NOISE = 1.5  # view noise for timing
HARD_NOISE = 2.5  # view noise for the objective comparison: most nodes are ambiguous, solvers disagree


def views(n: int, seed: int, noise: float = NOISE) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy views of N random embeddings; at NOISE = 1.5 nearest-neighbour matching is ~75% right at N=256."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, DIM, generator=gen)
    return base + noise * torch.randn(n, DIM, generator=gen), base + noise * torch.randn(n, DIM, generator=gen)


def qap(n: int, seed: int, noise: float = NOISE) -> QAP:
    """The loss's own QAP for two noisy views (message passing off, margin off)."""
    z0, z1 = views(n, seed, noise)
    hs, ht = torch.nn.functional.normalize(z0, dim=1), torch.nn.functional.normalize(z1, dim=1)
    gs, gt = knn_graph(hs, K), knn_graph(ht, K)
    f1, f2 = edge_factors(hs, ht, gs, gt)
    return QAP(node_affinity(hs, ht), f1, f2, gs.neighbors, gt.neighbors)


def _fastest_ms(fn, repeats: int) -> float:
    """Wall ms of the fastest of ``repeats`` calls ``fn(i)``: on a shared machine the least disturbed one."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def solver_breakdown(n: int, repeats: int = 7) -> dict:
    """Where one factorised solve spends its time: Hungarian (per backend) vs the sparse linearisation (wall ms,
    fastest of ``repeats``)."""
    problem = qap(n, 7)
    perm = hungarian(problem.cv)
    result = solve(problem, SolverSpec("factorized", "ipfp"))
    gen = torch.Generator().manual_seed(0)
    fresh = [torch.randperm(n, generator=gen) for _ in range(repeats)]  # never seen before: not in the cache
    out = {f"hungarian_{b}_ms": _fastest_ms(lambda i, b=b: hungarian(problem.cv, b), repeats) for b in BACKENDS}
    out["hungarian_ms"] = out["hungarian_lapjv_ms"]
    out["linearize_ms"] = _fastest_ms(lambda i: problem.linearize(fresh[i]), repeats)
    problem.linearize(perm)
    out["linearize_replay_ms"] = _fastest_ms(lambda i: problem.with_cv(problem.cv).linearize(perm), repeats)
    out["objective_ms"] = _fastest_ms(lambda i: problem.objective(fresh[i]), repeats)
    for backend in BACKENDS:
        spec = SolverSpec("factorized", "ipfp", assignment=backend)
        problems = [qap(n, 7) for _ in range(repeats)]  # fresh instances: nothing cached from earlier solves
        out[f"solve_ipfp_{backend}_ms"] = _fastest_ms(lambda i, s=spec, ps=problems: solve(ps[i], s), repeats)
    out["solve_ipfp_ms"] = out["solve_ipfp_lapjv_ms"]
    out["ipfp_hungarian_calls"] = result.iterations
    return out


def objective_comparison(n: int, instances: int) -> dict:
    """Objectives of every solver on the loss's own QAPs (message passing off, margin off)."""
    rows = []
    for seed in range(instances):
        problem = qap(n, 1000 + seed, HARD_NOISE)
        row = {}
        for name, spec in {
            "factorized_ipfp": SolverSpec("factorized", "ipfp"),
            "factorized_rrwm": SolverSpec("factorized", "rrwm"),
            "pygmtools_rrwm": SolverSpec("pygmtools", "rrwm"),
            "hungarian_first_order": SolverSpec("hungarian"),
        }.items():
            start = time.perf_counter()
            row[name] = solve(problem, spec).objective
            row[name + "_ms"] = 1000 * (time.perf_counter() - start)
        rows.append(row)
    ref = [r["pygmtools_rrwm"] for r in rows]
    summary = {"instances": rows}
    for name in ("factorized_ipfp", "factorized_rrwm", "hungarian_first_order"):
        wins = sum(r[name] >= p - 1e-4 * abs(p) for r, p in zip(rows, ref))
        summary[f"{name}_ge_pygmtools_fraction"] = wins / len(rows)
    return summary


def ipfp_cap(sizes: list[int], caps: list[int], seeds: int, noises: tuple[float, ...] = (NOISE, HARD_NOISE)) -> dict:
    """Objective of the forward IPFP capped at ``cap`` steps vs uncapped (``solver_max_iter`` 50, the default).

    ``gain_fraction`` is the part of the uncapped solver's second-order gain over the first-order matching
    (Hungarian on Cv) that the capped solver keeps, ``(f_cap − f_first) / (f_full − f_first)`` (1 where the
    uncapped solver gains nothing); ``same_matching`` counts the instances whose capped matching is the uncapped one.
    """
    out: dict = {}
    for n in sizes:
        per_cap: dict = {str(c): {"gain_fraction": [], "same_matching": 0, "solve_ms": []} for c in caps}
        full_ms, instances = [], 0
        for noise in noises:
            for seed in range(seeds):
                problem = qap(n, 2000 + seed, noise)
                first = problem.objective(hungarian(problem.cv))
                start = time.perf_counter()
                full = solve(problem, SolverSpec("factorized", "ipfp"))
                full_ms.append(1000 * (time.perf_counter() - start))
                instances += 1
                for cap in caps:
                    fresh = qap(n, 2000 + seed, noise)
                    start = time.perf_counter()
                    capped = solve(fresh, SolverSpec("factorized", "ipfp", max_iter=cap))
                    row = per_cap[str(cap)]
                    row["solve_ms"].append(1000 * (time.perf_counter() - start))
                    gain = full.objective - first
                    row["gain_fraction"].append((capped.objective - first) / gain if gain > 1e-9 else 1.0)
                    row["same_matching"] += int(torch.equal(capped.perm, full.perm))
        out[n] = {"instances": instances, "noises": list(noises), "uncapped_solve_ms": min(full_ms)}
        for cap, row in per_cap.items():
            out[n][cap] = {
                "gain_fraction_mean": statistics.mean(row["gain_fraction"]),
                "gain_fraction_min": min(row["gain_fraction"]),
                "same_matching": row["same_matching"],
                "solve_ms": min(row["solve_ms"]),
            }
    return out


def warm_start(n: int, noises: list[float], seeds: int = 3) -> list[dict]:
    """Backward re-solve warm-started from X̂ vs from scratch: assignment calls and backward CPU ms."""
    rows = []
    for noise in noises:
        row: dict = {"noise": noise}
        for warm in (True, False):
            calls, times, acc = [], [], []
            for seed in range(seeds):
                z0, z1 = views(n, 100 + seed, noise)
                hs = torch.nn.functional.normalize(z0, dim=1).requires_grad_()
                ht = torch.nn.functional.normalize(z1, dim=1).requires_grad_()
                gs, gt = knn_graph(hs, K), knn_graph(ht, K)
                f1, f2 = edge_factors(hs, ht, gs, gt)
                stats: dict[str, float] = {}
                spec = SolverSpec(warm_start=warm)
                x = BlackBoxMatching.apply(hs @ ht.T, f1, f2, gs.neighbors, gt.neighbors, spec, 0.5, True, stats)
                eye = torch.eye(n)
                loss = (x * (1 - eye) + (1 - x) * eye).sum() / (2 * n)
                start = time.process_time()
                loss.backward()
                times.append(1000 * (time.process_time() - start))
                calls.append(stats["backward_solver_iters"])
                acc.append(float(torch.diagonal(x.detach()).mean()))
            key = "warm" if warm else "cold"
            row[f"{key}_assignment_calls"] = statistics.mean(calls)
            row[f"{key}_backward_cpu_ms"] = statistics.median(times)
            row["match_acc"] = statistics.mean(acc)
        rows.append(row)
    return rows
