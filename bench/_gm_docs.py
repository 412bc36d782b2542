"""The ``gm-loss-speed`` block of docs/graph_matching.md, written by ``bench/docs.py`` from ``bench/gm_loss.py``'s
result file: the GM / NT-Xent ratios (wall and process-CPU) of the default loss, of the earlier scipy assignment
solver and of a one-step IPFP cap, the assignment-solver and linearisation timings, and what the cap costs in QAP
objective (kept here so that ``bench/docs.py`` stays small)."""

from __future__ import annotations

from bench._result import Result
from bench.summary import fmt

VARIANTS = (
    ("factorized", "default (`lapjv`)"),
    ("factorized_scipy_assignment", "`solver_assignment=scipy`"),
    ("factorized_ipfp_cap1", "`solver_max_iter=1`"),
)


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def gm_loss_speed_block(res: Result) -> str:
    """Ratios to NT-Xent per variant, solver timings per assignment backend, and the IPFP cap's objective cost."""
    sizes = sorted(res.get("results.factorized_ipfp_cap1"), key=int)
    lines = [
        f"Source: `bench/results/gm_loss.json`, {res.conditions()}; torch threads "
        f"{res.get('machine').get('torch_threads', '?')}. Forward+backward medians, each variant timed in turn with "
        "NT-Xent in every repeat; wall time, with the process-CPU time (all threads) in brackets. "
        "`solver_assignment=scipy` gives the same matchings and gradients as the default; `solver_max_iter=1` "
        "does not (see the last table).",
        *res.caveat(),
        "",
        "| N | variant | fwd+bwd | / NT-Xent (wall) | / NT-Xent (CPU) |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        ntx = res.get(f"results.ntxent.{n}")
        for key, label in VARIANTS:
            row = res.get(f"results.{key}.{n}")
            lines.append(
                f"| {n} | {label} | {_ms(row['median_ms'])} ({_ms(row['cpu_median_ms'])}) "
                f"| {row['median_ms'] / ntx['median_ms']:.2f}× | {row['cpu_median_ms'] / ntx['cpu_median_ms']:.2f}× |"
            )
        lines.append(f"| {n} | NT-Xent (lightly) | {_ms(ntx['median_ms'])} ({_ms(ntx['cpu_median_ms'])}) | 1× | 1× |")
    lines += [
        "",
        "The same with one torch thread (`single_thread`; process-CPU medians, the figures a loaded machine distorts "
        "least):",
        "",
        "| N | default (`lapjv`) | `solver_assignment=scipy` | `solver_max_iter=1` | first order | NT-Xent |",
        "|---|---|---|---|---|---|",
    ]
    for n, timed in sorted(res.get("single_thread").items(), key=lambda item: int(item[0])):
        ntx = timed["ntxent"]["cpu_median_ms"]
        cells = [
            f"{_ms(timed[key]['cpu_median_ms'])} ({timed[key]['cpu_median_ms'] / ntx:.2f}×)"
            for key in ("factorized", "factorized_scipy_assignment", "factorized_ipfp_cap1", "hungarian_first_order")
        ]
        lines.append(f"| {n} | {' | '.join(cells)} | {_ms(ntx)} |")
    lines += [
        "",
        "One call of each solver part (`solver_breakdown`; wall time, fastest of 7 calls):",
        "",
        "| N | Hungarian `lapjv` | Hungarian `scipy` | linearisation | replayed linearisation | IPFP solve "
        "`lapjv` | IPFP solve `scipy` |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sorted(res.get("solver_breakdown"), key=int):
        b = res.get(f"solver_breakdown.{n}")
        lines.append(
            f"| {n} | {_ms(b['hungarian_lapjv_ms'])} | {_ms(b['hungarian_scipy_ms'])} | {_ms(b['linearize_ms'])} "
            f"| {_ms(b['linearize_replay_ms'])} | {_ms(b['solve_ipfp_lapjv_ms'])} | {_ms(b['solve_ipfp_scipy_ms'])} |"
        )
    lines += [
        "",
        "What capping the forward IPFP costs (`ipfp_cap`): the part of the uncapped solver's second-order objective "
        "gain over the first-order matching that the capped solver keeps (mean, min), and on how many instances "
        "it returns the uncapped matching:",
        "",
        "| N | `solver_max_iter` | gain kept (mean, min) | same matching | fastest solve (uncapped) |",
        "|---|---|---|---|---|",
    ]
    for n, per_cap in sorted(res.get("ipfp_cap").items(), key=lambda item: int(item[0])):
        caps = sorted((c for c in per_cap if c.isdigit()), key=int)
        for cap in caps:
            row = per_cap[cap]
            lines.append(
                f"| {n} | {cap} | {row['gain_fraction_mean']:.0%}, {row['gain_fraction_min']:.0%} "
                f"| {fmt(row['same_matching'])}/{fmt(per_cap['instances'])} | {_ms(row['solve_ms'])} "
                f"({_ms(per_cap['uncapped_solve_ms'])}) |"
            )
    return "\n".join(lines)
