"""Writes the benchmark figures quoted in ``docs/`` from ``bench/results/*.json`` (``make bench`` runs it last).

Figures in docs are never typed by hand: each page holds a generated block between ``<!-- name:start -->`` and
``<!-- name:end -->`` that :func:`lvmmed.markers.write_block` replaces. One function per block reads one result file
and returns its Markdown; it reads whatever rows the file has (e.g. every N of the GM-loss sweep) and raises
:class:`FigureError` naming the file, the missing key and the bench to re-run when a figure it quotes is absent.
Every block states the run's mode (a ``--quick`` run backs no claim), its load average at start and end, and the
met flag of each target, read by the same schema-tolerant readers as ``bench/summary.py``.

Usage: ``python bench/docs.py [--results bench/results] [--root .] [--check]`` (``--check``: exit 1 when a block
is stale, write nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bench._gm_docs import gm_loss_speed_block
from bench._result import FigureError, Result
from bench.summary import describe_targets, find_met, fmt
from lvmmed.markers import MarkerError, read_block, write_block

REPO = Path(__file__).resolve().parents[1]


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def gm_loss_block(res: Result) -> str:
    """Timings per N, solver breakdown, targets and the N=64 objective comparison of ``bench/gm_loss.py``."""
    factorized = res.get("results.factorized")
    sizes = sorted(factorized, key=int)
    lines = [
        f"Source: `bench/results/gm_loss.json`, {res.conditions()}; torch threads "
        f"{res.get('machine').get('torch_threads', '?')}; d = {fmt(res.num('config.dim'))}, "
        f"k = {fmt(res.num('config.k'))}, view noise {fmt(res.num('config.noise'))}. Median of the repeats "
        '(min in brackets) of one forward+backward pass. "dense" is pygmtools RRWM + Hungarian on the full K; '
        '"first order" is the same loss with `solver=hungarian`; peak is the peak RSS increase of the factorised run.',
        *res.caveat(),
        "",
        "| N | factorised (default) | dense | first order | NT-Xent | peak |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        dense = res.get(f"results.pygmtools_dense.{n}")
        if "skipped" in dense:
            dense_text = f"not run ({dense['skipped']})"
        else:
            dense_text = _ms(res.num(f"results.pygmtools_dense.{n}.median_ms"))
        lines.append(
            f"| {n} | {_ms(res.num(f'results.factorized.{n}.median_ms'))} "
            f"(min {_ms(res.num(f'results.factorized.{n}.min_ms'))}) | {dense_text} "
            f"| {_ms(res.num(f'results.hungarian_first_order.{n}.median_ms'))} "
            f"| {_ms(res.num(f'results.ntxent.{n}.median_ms'))} "
            f"| {res.num(f'results.factorized.{n}.peak_rss_increase_mb'):.0f} MB |"
        )
    lines += [
        "",
        "Where one factorised solve spends its time (`solver_breakdown`):",
        "",
        '| N | one Hungarian | one linearisation ("matvec") | whole IPFP solve | Hungarian calls per solve |',
        "|---|---|---|---|---|",
    ]
    for n in sorted(res.get("solver_breakdown"), key=int):
        key = f"solver_breakdown.{n}"
        lines.append(
            f"| {n} | {_ms(res.num(key + '.hungarian_ms'))} | {_ms(res.num(key + '.linearize_ms'))} "
            f"| {_ms(res.num(key + '.solve_ipfp_ms'))} | {fmt(res.num(key + '.ipfp_hungarian_calls'))} |"
        )
    instances = res.get("objective_comparison.N64.instances")
    if not instances:
        raise FigureError(f"{res.path}: 'objective_comparison.N64.instances' is empty")

    def span(key: str) -> str:
        values = [float(i[key]) for i in instances if key in i]
        if not values:
            raise FigureError(f"{res.path}: no '{key}' in objective_comparison.N64.instances")
        return f"{min(values):.2f}–{max(values):.2f}"

    def at_least_dense(key: str) -> str:
        wins = sum(float(i[key]) >= float(i["pygmtools_rrwm"]) - 1e-6 for i in instances)
        return f"{wins}/{len(instances)}"

    lines += [
        "",
        *res.targets_table(),
        "",
        f"QAP objectives on the {len(instances)} N = 64 instances (higher is better): factorised IPFP "
        f"{span('factorized_ipfp')}, factorised RRWM {span('factorized_rrwm')}, pygmtools RRWM + Hungarian (dense) "
        f"{span('pygmtools_rrwm')}, first-order Hungarian {span('hungarian_first_order')}. At least dense on: "
        f"factorised IPFP {at_least_dense('factorized_ipfp')}, factorised RRWM {at_least_dense('factorized_rrwm')}, "
        f"first-order Hungarian {at_least_dense('hungarian_first_order')} instances.",
    ]
    return "\n".join(lines)


def pretrain_block(res: Result) -> str:
    """Images/s of the four pretraining variants, their ratios and the two targets (``bench/pretrain.py``)."""
    rate = {k: res.num(f"results.{k}.images_per_s") for k in ("full_gm", "full_ntxent", "lightly_simclr", "backbone")}
    setup = res.get("setup")
    lines = [
        f"Source: `bench/results/pretrain.json`, {res.conditions()}; {setup.get('backbone', 'resnet18')} at "
        f"{setup.get('size', '?')} px, batch {setup.get('batch', '?')}, {setup.get('threads', '?')} threads, median "
        f"over {setup.get('steps', '?')} timed steps after {setup.get('warmup', '?')} warm-up steps.",
        *res.caveat(),
        "",
        "| variant | images/s |",
        "|---|---|",
        f"| (a) full loop, GM loss | {rate['full_gm']:.2f} |",
        f"| full loop, NT-Xent | {rate['full_ntxent']:.2f} |",
        f"| (c) lightly's SimCLR loop | {rate['lightly_simclr']:.2f} |",
        f"| (b) bare backbone (mean of before {res.num('results.backbone.before'):.2f} and after "
        f"{res.num('results.backbone.after'):.2f}; drift {res.num('results.backbone.drift'):.0%}) "
        f"| {rate['backbone']:.2f} |",
        "",
        *res.targets_table(),
        "",
        f"GM loop / NT-Xent loop = {res.num('ratios.full_gm_over_full_ntxent'):.2f}. A drift above ~10% means the "
        "load changed during the run and the ratios measure it, not the code.",
    ]
    return "\n".join(lines)


def data_prep_block(res: Result) -> str:
    """Slices/s of the pool, single-process and raw-bound conversions and the two targets (``bench/data_prep.py``)."""
    lines = [
        f"Source: `bench/results/data_prep.json`, {res.conditions()}; {fmt(res.num('pool.slices'))} slices written at "
        f"{fmt(res.num('input.image_size'))} px from {fmt(res.num('input.files'))} files.",
        *res.caveat(),
        "",
        "| variant | slices | slices/s | cores used |",
        "|---|---|---|---|",
    ]
    for name, label in (("pool", "pool (2 workers)"), ("single", "single process"), ("raw", "raw read-and-tar bound")):
        lines.append(
            f"| {label} | {fmt(res.num(name + '.slices'))} | {res.num(name + '.slices_per_s'):.0f} "
            f"| {res.num(name + '.cores_used'):.2f} |"
        )
    cpu = res.num("ratios.cpu_per_slice_single_over_pool")
    lines += [
        "",
        *res.targets_table(),
        "",
        f"CPU per slice, single / pool = {cpu:.2f} (1 = the pool adds no CPU overhead"
        + (f"; here the pool spends {1 / cpu - 1:.0%} more CPU per slice than one process)." if cpu < 1 else ")."),
    ]
    if "cpu_main_process" in res.get("pool"):
        lines += [
            "",
            f"Pool CPU seconds: main process {res.num('pool.cpu_main_process'):.2f}, workers "
            f"{res.num('pool.cpu_workers'):.2f}; single process {res.num('single.cpu_seconds'):.2f}.",
        ]
    if "cpu_main_ms_per_slice" in res.get("pool"):
        lines[-1] += (
            f" Per slice: pool main {res.num('pool.cpu_main_ms_per_slice'):.3f} ms + workers "
            f"{res.num('pool.cpu_workers_ms_per_slice'):.3f} ms; single {res.num('single.cpu_ms_per_slice'):.3f} ms."
        )
    stages = res.data.get("stages")
    if stages:
        for key, label in (("converter", "converter"), ("raw", "raw bound")):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in stages[f"{key}_ms_per_slice"].items())
            lines += ["", f"CPU ms per slice by stage, {label} (one volume, one process): {parts}; total "
                      f"{stages[f'{key}_total']:.3f}."]  # fmt: skip
    profile = res.data.get("profile_single_one_volume") or []
    if profile:
        lines += ["", "Top own-time entries of a single-process conversion of one volume (cProfile):", "",
                  "| function | calls | own s | share |", "|---|---|---|---|"]  # fmt: skip
        row = "| `{function}` | {calls} | {own_s:.3f} | {own_share:.0%} |"
        lines += [row.format(**p) for p in profile[:8]]
    return "\n".join(lines)


def gm_global_vs_rank_block(res: Result) -> str:
    """One graph over the global batch vs per-rank graphs (``bench/gm_loss.py``, ``global_vs_rank``)."""
    rows = res.get("global_vs_rank")
    sizes = sorted(rows, key=int)
    if not sizes:
        raise FigureError(f"{res.path}: 'global_vs_rank' is empty: re-run `python bench/gm_loss.py`")
    world = fmt(res.num(f"global_vs_rank.{sizes[0]}.world"))
    lines = [
        f"Source: `bench/results/gm_loss.json` (`global_vs_rank`), {res.conditions()}. Forward+backward of the "
        f"default loss for a global batch of N over {world} ranks: `gather_distributed=true` (every rank solves the "
        f"N-node graph) vs per-rank graphs (each rank solves its own N/{world}-node graph). Process-CPU medians "
        "(less sensitive to a shared machine than wall time), and wall time in brackets.",
        *res.caveat(),
        "",
        "| global N | global graph, per rank | per-rank graph (N/world nodes) | global / per-rank |",
        "|---|---|---|---|",
    ]
    for n in sizes:
        key = f"global_vs_rank.{n}"
        lines.append(
            f"| {n} | {_ms(res.num(key + '.global_cpu_ms'))} ({_ms(res.num(key + '.global_ms'))}) "
            f"| {_ms(res.num(key + '.per_rank_cpu_ms'))} ({_ms(res.num(key + '.per_rank_ms'))}) "
            f"| {res.num(key + '.global_over_per_rank_cpu'):.1f}× |"
        )
    lines += ["", "Warm-started backward re-solve (`backward_warm_start`; assignment calls and backward CPU time):", ""]
    lines += ["| N | match accuracy | warm: calls, ms | from scratch: calls, ms |", "|---|---|---|---|"]
    for n, warm_rows in sorted(res.get("backward_warm_start").items(), key=lambda kv: int(kv[0])):
        for row in warm_rows:
            lines.append(
                f"| {n} | {row['match_acc']:.2f} | {row['warm_assignment_calls']:.1f}, "
                f"{_ms(row['warm_backward_cpu_ms'])} | {row['cold_assignment_calls']:.1f}, "
                f"{_ms(row['cold_backward_cpu_ms'])} |"
            )
    stages = res.get("stages")
    lines += [
        "",
        "Where one forward+backward spends its process-CPU time (`stages`; each stage re-run alone, minimum of 3; "
        "under load the parts need not add up to the total):",
        "",
    ]
    names = ["knn_graphs", "message_passing_fwd", "affinities_fwd", "forward_solve", "backward_resolve"]
    lines += ["| N | total | " + " | ".join(names) + " | rest (autograd, loss) |", "|---" * (len(names) + 3) + "|"]
    for n in sorted(stages, key=int):
        st = stages[n]
        cells = " | ".join(_ms(float(st[k])) for k in names)
        lines.append(f"| {n} | {_ms(float(st['total']))} | {cells} | {_ms(float(st['rest_of_autograd_and_loss']))} |")
    ratio_keys = [k for k in ("factorized_over_ntxent_N256", "factorized_over_ntxent_N1024") if k in find_met(res.data)]
    if ratio_keys:
        described = describe_targets(res.data)
        lines += [
            "",
            "GM / NT-Xent forward+backward (wall, same run): "
            + "; ".join(
                f"`{k}` {described.get(k, '?')} ({'met' if find_met(res.data)[k] else '**not met**'})"
                for k in ratio_keys
            )
            + ".",
        ]
    return "\n".join(lines)


def storage_block(res: Result) -> str:
    """PNG vs float16 npy storage on the bundled CT and MR data (``bench/storage.py``)."""
    lines = [
        f"Source: `bench/results/storage.json`, {res.conditions()}; images at "
        f"{fmt(res.num('image_size'))} px. Bytes per sample as stored in the tar (all members, headers included); "
        "pipeline = two-view training stream (decode + augmentations), decode = read path alone, both per CPU "
        "second, PNG / npy; the CT row is timed on the whole `dicom_modality` set that holds the CT series.",
        *res.caveat(),
        "",
        "| samples | n | bytes/sample npy → png | ratio | pipeline ratio | decode ratio | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, group in res.get("groups").items():
        pipeline = f"{group['pipeline_ratio']:.2f}" if "pipeline_ratio" in group else "–"
        decode = f"{group['decode_ratio']:.2f}" if "decode_ratio" in group else "–"
        lines.append(
            f"| {label} | {group['samples']} | {group['npy_bytes_per_sample'] / 1e3:.1f} kB → "
            f"{group['png_bytes_per_sample'] / 1e3:.1f} kB | {group['bytes_ratio']:.3f} | {pipeline} | {decode} "
            f"| {group['max_abs_diff']:.2e} |"
        )
    lines += ["", *res.targets_table()]
    return "\n".join(lines)


def monitor_block(res: Result) -> str:
    """Seconds per monitor evaluation vs per training step, and the overhead at the default interval
    (``bench/monitor.py``)."""
    ev, tr = res.get("eval_set"), res.get("training")
    every = fmt(res.num("training.default_eval_every"))
    lines = [
        f"Source: `bench/results/monitor.json`, {res.conditions()}; `tiny_cpu` preset "
        f"({fmt(res.num('setup.max_steps'))} steps, an evaluation every {fmt(res.num('setup.eval_every'))} to time "
        f"{len(tr.get('eval_steps', []))} of them), eval set `{ev.get('eval_set', '?')}` ({ev.get('labels', '?')} "
        f"labels, {fmt(res.num('eval_set.train_samples'))} memory / {fmt(res.num('eval_set.test_samples'))} scored "
        f"samples, {fmt(res.num('eval_set.classes'))} classes).",
        *res.caveat(),
        "",
        "| figure | seconds |",
        "|---|---|",
        f"| training step (median over log windows) | {res.num('training.step_seconds'):.3f} |",
        f"| one evaluation (median, after the first) | {res.num('training.eval_seconds'):.3f} |",
        f"| first evaluation (before step 1) | {res.num('training.first_eval_seconds'):.3f} |",
        f"| eval-set set-up, once per run (read + cache) | {res.num('eval_set.setup_seconds'):.3f} |",
        f"| of one evaluation (fresh backbone): features / k-NN vote | {res.num('eval_set.feature_seconds'):.3f} / "
        f"{res.num('eval_set.knn_seconds'):.3f} |",
        f"| linear probe fit, if `monitor.linear_probe=true` | {res.num('eval_set.linear_probe_seconds'):.3f} |",
        "",
        *res.targets_table(),
        "",
        f"Overhead at the default `eval_every={every}`: one evaluation / ({every} steps) = "
        f"{res.num('ratios.overhead_at_default'):.1%} of training time.",
    ]
    return "\n".join(lines)


# (result file stem, doc page, block name, generator)
BLOCKS: list[tuple[str, str, str, Callable[[Result], str]]] = [
    ("gm_loss", "docs/graph_matching.md", "bench-gm-loss", gm_loss_block),
    ("pretrain", "docs/pretrain.md", "bench-pretrain", pretrain_block),
    ("data_prep", "docs/data_prep.md", "bench-data-prep", data_prep_block),
    ("gm_loss", "docs/graph_matching.md", "gm-global-vs-rank", gm_global_vs_rank_block),
    ("gm_loss", "docs/graph_matching.md", "gm-loss-speed", gm_loss_speed_block),
    ("storage", "docs/pretrain.md", "bench-storage", storage_block),
    ("monitor", "docs/pretrain.md", "bench-monitor", monitor_block),
]


def render_all(results: Path) -> list[tuple[str, str, str]]:
    """``(page, block, body)`` of every block; raises FigureError before anything is written."""
    return [(page, block, fn(Result(results / f"{stem}.json"))) for stem, page, block, fn in BLOCKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root holding docs/")
    parser.add_argument("--check", action="store_true", help="exit 1 when a block is stale; write nothing")
    args = parser.parse_args(argv)
    try:
        rendered = render_all(args.results)
        stale = []
        for page, block, body in rendered:
            if args.check:
                if read_block(args.root / page, block) != body.strip("\n"):
                    stale.append(f"{page} [{block}]")
            elif write_block(args.root / page, block, body):
                print(f"bench docs: rewrote {page} [{block}]")
    except (FigureError, MarkerError, OSError) as err:
        print(f"bench/docs.py: {err}", file=sys.stderr)
        return 1
    if stale:
        print("bench/docs.py: stale blocks (run `python bench/docs.py`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
