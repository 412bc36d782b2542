"""Benchmark of the LVM-Med graph-matching loss: factorised solver vs pygmtools dense vs lightly NT-Xent.

``python bench/gm_loss.py [--quick]`` writes ``bench/results/gm_loss.json``. For N ∈ {32, …, 1024} (k = 8, d = 128)
it measures the forward+backward time (median over repeats) and the peak resident-memory increase of
``GraphMatchingLoss`` with the factorised solver (the default config), with pygmtools' dense RRWM (only where the
dense Lawler K is practical), with the first-order Hungarian baseline, and of lightly's NT-Xent at the same N.
At N = 64 it also compares the QAP objectives reached by the factorised and dense solvers on the same instances.
GM and NT-Xent are timed alternately (one repeat of each in turn), so that a changing load hits both; wall and
process-CPU times are both recorded.

Also measured in the same run:

* ``factorized_scipy_assignment``: the default loss with ``solver_assignment=scipy`` (the earlier default
  assignment solver; same matchings and gradients), and ``factorized_ipfp_cap1``: the default loss with the forward
  IPFP capped at one step (``solver_max_iter=1``; *different* matchings), both timed in turn with the default at
  N = 256 and 1024; ``ipfp_cap`` (``bench/_gm_solver.py``): what the cap costs in QAP objective;
* ``single_thread``: the same interleaved timing at N = 256 and 1024 with one torch thread (process-CPU ratios
  that a loaded machine distorts least);
* ``stages``: where one factorised fwd+bwd spends its time at N = 256 and 1024 (k-NN graphs, message passing,
  affinities, forward solve, the backward re-solve (the black-box backward alone, on leaf inputs: re-solve and
  edge gradients), and the rest: the network's autograd and the loss), as process-CPU milliseconds;
* ``backward_warm_start``: the black-box backward re-solve warm-started from X̂ vs solved from scratch, at several
  matching accuracies (assignment calls and time of the backward pass);
* ``global_vs_rank``: one graph over the global batch (``gather_distributed=true``: every rank solves the N-node
  graph) vs per-rank graphs (``world`` graphs of N/world nodes; each rank solves one) at global N = 256 … 4096,
  written to docs/graph_matching.md (block ``gm-global-vs-rank``) by ``bench/docs.py``.

Targets: N=256 fwd+bwd ≤ 100 ms; ≥ 30× faster than dense at N=64 with an equal or better objective;
N=1024 under 2 GB peak; factorised GM fwd+bwd ≤ 2.5× NT-Xent at N = 256 and 1024 (wall-time medians, one run;
the process-CPU ratios are recorded next to them). The machine is shared, so its load average is recorded with
the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import _gm_solver as gms
from bench._common import BenchRun
from bench._gm_solver import DIM, HARD_NOISE, NOISE, K
from lvmmed.losses import GraphMatchingLoss, NTXentLoss
from lvmmed.matching import QAP, knn_graph, solve
from lvmmed.matching.affinity import edge_factors
from lvmmed.matching.blackbox import BlackBoxMatching
from lvmmed.matching.solvers import hungarian

_views = gms.views
RESULTS = Path(__file__).parent / "results" / "gm_loss.json"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the process RSS every millisecond while active; ``peak_increase`` is relative to the start."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_increase(self) -> int:
        return self.peak - self.start


def _time_loss(loss_fn: torch.nn.Module, n: int, repeats: int) -> dict:
    times, peaks, info = [], [], {}
    for r in range(repeats):
        z0, z1 = _views(n, r)
        z0.requires_grad_()
        z1.requires_grad_()
        with PeakRss() as mem:
            start = time.perf_counter()
            loss, info = loss_fn(z0, z1)
            loss.backward()
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak_increase)
    return {
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "repeats": repeats,
        "peak_rss_increase_mb": max(peaks) / 2**20,
        "match_acc": info.get("match_acc"),
        "solver_iters": info.get("solver_iters"),
    }


def _fwd_bwd(loss_fn: torch.nn.Module, n: int, seed: int, noise: float = NOISE) -> tuple[float, float, dict]:
    """(wall s, process-CPU s, info) of one forward+backward pass on two noisy views."""
    z0, z1 = _views(n, seed, noise)
    z0.requires_grad_()
    z1.requires_grad_()
    wall, cpu = time.perf_counter(), time.process_time()
    loss, info = loss_fn(z0, z1)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu, info


def _interleaved(losses: dict[str, torch.nn.Module], n: int, repeats: int) -> dict[str, dict]:
    """Median wall and CPU ms of each loss, the losses timed in turn within every repeat (after one warm-up)."""
    for fn in losses.values():
        _fwd_bwd(fn, n, 999)
    wall: dict[str, list[float]] = {k: [] for k in losses}
    cpu: dict[str, list[float]] = {k: [] for k in losses}
    for r in range(repeats):
        for name, fn in losses.items():
            w, c, _ = _fwd_bwd(fn, n, r)
            wall[name].append(1000 * w)
            cpu[name].append(1000 * c)
    return {
        k: {"median_ms": statistics.median(wall[k]), "min_ms": min(wall[k]), "cpu_median_ms": statistics.median(cpu[k])}
        for k in losses
    }


def _single_thread(sizes: list[int], variants: dict[str, dict], repeats: int) -> dict:
    """The same interleaved timing with one torch thread: process-CPU time is then the work itself, without the
    spin-waiting of idle worker threads that inflates it (and the wall time) on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for n in sizes:
            losses = {
                "factorized": GraphMatchingLoss(DIM, k=K),
                "ntxent": NTXentLoss(),
                "hungarian_first_order": GraphMatchingLoss(DIM, k=K, solver="hungarian"),
                **{name: GraphMatchingLoss(DIM, k=K, **kw) for name, kw in variants.items()},
            }
            out[n] = _interleaved(losses, n, repeats if n < 1024 else max(3, repeats // 2))
    finally:
        torch.set_num_threads(threads)
    return out


def _stages(n: int, repeats: int = 3) -> dict:
    """Process-CPU ms of each stage of one factorised fwd+bwd (the loss's own steps, re-run one by one)."""
    loss = GraphMatchingLoss(DIM, k=K)
    z0, z1 = _views(n, 3)

    def cpu_ms(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return 1000 * min(times)

    zs, zt = F.normalize(z0, dim=1).requires_grad_(), F.normalize(z1, dim=1).requires_grad_()
    gs, gt = knn_graph(zs, K), knn_graph(zt, K)
    hs, ht = loss.message_passing(zs, gs), loss.message_passing(zt, gt)
    cv = F.normalize(hs, dim=1) @ F.normalize(ht, dim=1).T
    f1, f2 = edge_factors(F.normalize(hs, dim=1), F.normalize(ht, dim=1), gs, gt)
    stats: dict[str, float] = {}

    def fresh() -> QAP:  # a new instance per timed call, as the loss builds one: nothing cached from earlier calls
        return QAP(cv, f1, f2, gs.neighbors, gt.neighbors)

    # Leaves: the black-box backward alone (its re-solve and edge gradients), not the network's autograd behind it.
    cv_leaf, f1_leaf, f2_leaf = (t.detach().requires_grad_() for t in (cv, f1, f2))

    def backward_only() -> None:
        x = BlackBoxMatching.apply(cv_leaf, f1_leaf, f2_leaf, gs.neighbors, gt.neighbors, loss.spec, 0.5, True, stats)
        eye = torch.eye(n)
        ((x * (1 - eye) + (1 - x) * eye).sum() / (2 * n)).backward()

    total = cpu_ms(lambda: _fwd_bwd(loss, n, 3))
    solve_ms = cpu_ms(lambda: solve(fresh(), loss.spec))
    out = {
        "total": total,
        "knn_graphs": cpu_ms(lambda: (knn_graph(zs, K), knn_graph(zt, K))),
        "message_passing_fwd": cpu_ms(lambda: (loss.message_passing(zs, gs), loss.message_passing(zt, gt))),
        "affinities_fwd": cpu_ms(lambda: edge_factors(F.normalize(hs, dim=1), F.normalize(ht, dim=1), gs, gt)),
        "forward_solve": solve_ms,
        "forward_solve_hungarian_calls": float(solve(fresh(), loss.spec).iterations),
        "blackbox_fwd_and_bwd": cpu_ms(backward_only),
        "one_hungarian": cpu_ms(lambda: hungarian(cv.detach())),
        "one_linearize": cpu_ms(lambda: fresh().linearize(hungarian(cv.detach()))),
    }
    out["backward_resolve"] = max(0.0, out["blackbox_fwd_and_bwd"] - solve_ms)
    out["rest_of_autograd_and_loss"] = max(
        0.0,
        total - out["knn_graphs"] - out["message_passing_fwd"] - out["affinities_fwd"] - out["blackbox_fwd_and_bwd"],
    )
    return out


def _global_vs_rank(sizes: list[int], world: int) -> dict:
    """fwd+bwd ms of one global N-node graph vs one rank's N/world-node graph (what each rank computes)."""
    loss = GraphMatchingLoss(DIM, k=K)
    out = {}
    for n in sizes:
        reps = 3 if n <= 512 else 1
        per_rank = n // world
        timed = {"global": [], "per_rank": []}
        cpu = {"global": [], "per_rank": []}
        _fwd_bwd(loss, per_rank, 999)
        for r in range(reps):
            for name, size in (("global", n), ("per_rank", per_rank)):
                w, c, _ = _fwd_bwd(loss, size, r)
                timed[name].append(1000 * w)
                cpu[name].append(1000 * c)
        g, p = statistics.median(cpu["global"]), statistics.median(cpu["per_rank"])
        out[n] = {
            "world": world,
            "per_rank_nodes": per_rank,
            "global_ms": statistics.median(timed["global"]),
            "per_rank_ms": statistics.median(timed["per_rank"]),
            "global_cpu_ms": g,
            "per_rank_cpu_ms": p,
            "global_over_per_rank_cpu": g / p,
            "all_ranks_per_rank_cpu_ms": p * world,
            "repeats": reps,
        }
        print("global vs rank", n, out[n], flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ∈ {32, 64, 256}, dense at N=32 only (< 2 min)")
    parser.add_argument("--world", type=int, default=8, help="ranks for the global-vs-per-rank table")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [32, 64, 256] if args.quick else [32, 64, 128, 256, 512, 1024]
    dense_sizes = [32] if args.quick else [32, 64]
    repeats = 3 if args.quick else 5
    target_sizes = [n for n in (256, 1024) if n in sizes]
    run = BenchRun("gm_loss", quick=args.quick)
    results: dict = {"factorized": {}, "pygmtools_dense": {}, "hungarian_first_order": {}, "ntxent": {}}
    variants = {  # timed in turn with the default at the target sizes
        "factorized_scipy_assignment": {"solver_assignment": "scipy"},
        "factorized_ipfp_cap1": {"solver_max_iter": 1},
    }
    results.update({name: {} for name in variants})
    breakdown: dict = {}
    torch.manual_seed(0)
    for n in sizes:
        reps = repeats if n < 512 else 3
        losses = {
            "factorized": GraphMatchingLoss(DIM, k=K),
            "ntxent": NTXentLoss(),
            "hungarian_first_order": GraphMatchingLoss(DIM, k=K, solver="hungarian"),
        }
        if n in target_sizes:
            reps = reps if args.quick else {256: 15, 1024: 7}[n]
            losses.update({name: GraphMatchingLoss(DIM, k=K, **kw) for name, kw in variants.items()})
        timed = _interleaved(losses, n, reps)
        results["factorized"][n] = {**_time_loss(GraphMatchingLoss(DIM, k=K), n, 1), **timed["factorized"]}
        results["factorized"][n]["repeats"] = reps
        for name in losses:
            if name != "factorized":
                results[name][n] = timed[name]
        breakdown[n] = gms.solver_breakdown(n)
        if n in dense_sizes:
            results["pygmtools_dense"][n] = _time_loss(
                GraphMatchingLoss(DIM, k=K, solver="pygmtools"), n, 1 if n >= 64 else repeats
            )
        else:
            gb = (n * n) ** 2 * 4 / 2**30
            results["pygmtools_dense"][n] = {"skipped": f"dense K would take {gb:.1f} GB and minutes per solve"}
        print(n, {k: v[n].get("median_ms") for k, v in results.items() if n in v}, flush=True)
    compare_n = 32 if args.quick else 64
    objectives = gms.objective_comparison(compare_n, 3 if args.quick else 5)
    fact, dense, ntx = results["factorized"], results["pygmtools_dense"], results["ntxent"]
    ratios = {f"dense_over_factorized_time_N{n}": dense[n]["median_ms"] / fact[n]["median_ms"] for n in dense_sizes}
    for n in sizes:
        ratios[f"factorized_over_ntxent_time_N{n}"] = fact[n]["median_ms"] / ntx[n]["median_ms"]
        ratios[f"factorized_over_ntxent_cpu_N{n}"] = fact[n]["cpu_median_ms"] / ntx[n]["cpu_median_ms"]
    for n in target_sizes:
        for name in variants:
            ratios[f"{name}_over_ntxent_time_N{n}"] = results[name][n]["median_ms"] / ntx[n]["median_ms"]
            ratios[f"{name}_over_ntxent_cpu_N{n}"] = results[name][n]["cpu_median_ms"] / ntx[n]["cpu_median_ms"]
    single_thread = _single_thread(target_sizes, variants, 3 if args.quick else 9)
    for n, timed in single_thread.items():
        ntx_cpu = timed["ntxent"]["cpu_median_ms"]
        for name in ("factorized", "hungarian_first_order", *variants):
            ratios[f"{name}_over_ntxent_cpu_1thread_N{n}"] = timed[name]["cpu_median_ms"] / ntx_cpu
    run.target("N256_fwd_bwd_ms", fact[256]["median_ms"], "<=", 100.0)
    for n in target_sizes:
        run.target(f"factorized_over_ntxent_N{n}", ratios[f"factorized_over_ntxent_time_N{n}"], "<=", 2.5)
    if 64 in dense_sizes:
        run.target("speedup_vs_dense_N64", ratios["dense_over_factorized_time_N64"], ">=", 30.0)
        frac = objectives["factorized_ipfp_ge_pygmtools_fraction"]
        run.target("objective_ge_dense_N64_fraction", frac, ">=", 1.0)
    if 1024 in sizes:
        run.target("N1024_peak_mb", fact[1024]["peak_rss_increase_mb"], "<", 2048.0)
    stage_sizes = [256] if args.quick else [256, 1024]
    stages = {n: _stages(n) for n in stage_sizes}
    warm = {n: gms.warm_start(n, [0.5, 1.5, 2.5]) for n in stage_sizes}
    cap = gms.ipfp_cap(stage_sizes, [1, 2, 3], seeds=2 if args.quick else 5)
    global_sizes = [256, 512] if args.quick else [256, 512, 1024, 2048, 4096]
    global_vs_rank = _global_vs_rank(global_sizes, args.world)
    payload = {
        "config": {
            "dim": DIM,
            "k": K,
            "noise": NOISE,
            "hard_noise": HARD_NOISE,
            "loss": "GraphMatchingLoss defaults (lvmmed.losses.config.GraphMatchingConfig)",
            "world": args.world,
        },
        "results": results,
        "single_thread": single_thread,
        "solver_breakdown": breakdown,
        "objective_comparison": {f"N{compare_n}": objectives},
        "ratios": ratios,
        "stages": stages,
        "backward_warm_start": warm,
        "ipfp_cap": cap,
        "global_vs_rank": global_vs_rank,
    }
    result = run.finish(payload, args.out)
    print(json.dumps({"ratios": ratios, "met": result["met"], "load_average": result["load_average"]}, indent=2))
    return result


if __name__ == "__main__":
    main()
