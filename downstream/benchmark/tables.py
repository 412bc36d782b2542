"""The Markdown tables of the benchmark report: the headline comparison, per-task tables, OOD gaps, paired tests,
and the old/new-center forgetting table of segmentation prompts.

The first table answers the project's question: did our pretraining (``reference_weights``) beat each other weight
source (random init, SimCLR/NT-Xent, general) on held-out data, per task and method.
"""

from __future__ import annotations

from collections import defaultdict

from downstream.benchmark.aggregate import Aggregate, column_rank, display_name, fmt, fmt_count
from lvmmed import stats as st


def _cell_text(agg: Aggregate, key: tuple) -> str:
    summary = agg.summary(key)
    if summary is None:
        return "failed" if any(f["method"] == key[2] and f["weights"] == key[3] for f in agg.failures) else ""
    text = f"{summary.mean:.3f} ± {fmt(summary.std)}"
    if summary.n > 1:
        text += f"<br>[{summary.ci_low:.3f}, {summary.ci_high:.3f}]"
    elif key in agg.sample_ci:
        lo, hi = agg.sample_ci[key]
        text += f"<br>[{lo:.3f}, {hi:.3f}]*"
    trainable, total = agg.params.get(key, (None, None))
    text += f"<br><sub>{fmt_count(trainable)} / {fmt_count(total)} params</sub>"
    if key in agg.random_general:
        text += " †"
    return text


def _verdict(result: st.PairedResult, alpha: float, ours: str, ci_a=None, ci_b=None) -> str:
    """Verdict of a paired comparison; for seed-deterministic pairs, from the runs' test-set bootstrap CIs."""
    if result.degenerate:
        if ci_a is None or ci_b is None:
            return "n/a: identical on every seed (no seed variance), no test-set CIs"
        if ci_a[0] > ci_b[1] or ci_a[1] < ci_b[0]:
            word = "better" if result.mean_diff > 0 else "worse"
            return f"**{ours} {word}** (same on every seed; test-set 95% CIs disjoint)"
        return "no significant difference (same on every seed; test-set 95% CIs overlap)"
    if result.n < 2 or result.p_value is None:
        return "n/a: 1 seed (see the test-set CIs below)"
    if result.p_value < alpha:
        return f"**{ours} better**" if result.mean_diff > 0 else f"**{ours} worse**"
    return "no significant difference"


def headline_section(agg: Aggregate) -> tuple[list[str], list[dict]]:
    """The first table: reference weights vs every other source, per task × method (full setting)."""
    cfg, ours = agg.cfg, agg.cfg.reference
    lines = [
        f"## Did our pretraining help? ({ours} vs the other weight sources, held-out test split)",
        "",
        f"Paired over seeds ({cfg.paired_test}, α = {cfg.alpha}); Δ = {ours} − other, with its 95% CI. A difference "
        "that is identical on every seed (a deterministic method on fixed weights and splits) is judged from the "
        "runs' test-set bootstrap CIs instead.",
        "",
        f"| task | metric | method | {ours} | other source | other | Δ [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    findings: list[dict] = []
    methods = [m for m in cfg.methods]
    for task in cfg.tasks:
        for method in sorted(methods, key=lambda m: column_rank(m.label, m.key)):
            ref_key = (task.name, "full", method.label, ours)
            ref = agg.summary(ref_key)
            if ref is None:
                continue
            for spec in cfg.weights:
                if spec.name == ours:
                    continue
                other_key = (task.name, "full", method.label, spec.name)
                other = agg.summary(other_key)
                comparison = agg.compare(ref_key, other_key)
                if other is None or comparison is None:
                    continue
                verdict = _verdict(
                    comparison, cfg.alpha, ours, agg.sample_ci.get(ref_key), agg.sample_ci.get(other_key)
                )
                findings.append(
                    {
                        "task": task.name,
                        "method": method.label,
                        "other": spec.name,
                        "diff": comparison.mean_diff,
                        "p": comparison.p_value,
                        "verdict": verdict,
                    }
                )
                lines.append(
                    f"| {task.name} | {agg.metric(task.name)} | {display_name(method.label, method.key)} "
                    f"| {ref.mean:.3f} ± {fmt(ref.std)} "
                    f"| {spec.name} | {other.mean:.3f} ± {fmt(other.std)} | {comparison.mean_diff:+.3f} "
                    f"[{fmt(comparison.ci_low)}, {fmt(comparison.ci_high)}] | {fmt(comparison.p_value)} "
                    f"| {verdict} |"
                )
    if not findings:
        lines.append("| – | – | – | – | – | – | – | – | no paired results yet |")
    lines.append("")
    for spec in cfg.weights:
        mine = [f for f in findings if f["other"] == spec.name]
        if not mine:
            continue
        better = sum(f["diff"] > 0 for f in mine)
        significant = sum("better" in f["verdict"] for f in mine)
        worse = sum("worse" in f["verdict"] for f in mine)
        lines.append(
            f"- **{ours} vs {spec.name}:** higher mean in {better}/{len(mine)} task×method pairs; significantly "
            f"better in {significant}, significantly worse in {worse}."
        )
    lines.append("")
    return lines, findings


def task_tables(agg: Aggregate) -> list[str]:
    """Per task and setting: methods as columns, weight sources as rows."""
    cfg = agg.cfg
    lines = ["## Results per task", ""]
    lines.append(
        "Each cell: the task's metric, mean ± std over seeds, [95% CI of the mean from the per-seed numbers "
        "(* = test-set bootstrap of a single run)], trainable / total parameters."
    )
    lines.append("")
    settings = sorted({k[1] for k in agg.values} | {k[1] for k in agg.params}, key=lambda s: (s != "full", s))
    for task in cfg.tasks:
        for setting in settings:
            columns = sorted(
                {k[2] for k in agg.params if k[0] == task.name and k[1] == setting and k not in agg.sweeps},
                key=lambda label: column_rank(label, agg.keys.get(label, label)),
            )
            if not columns:
                continue
            heads = [display_name(c, agg.keys.get(c, c)) for c in columns]
            lines += [
                f"### {task.name} ({setting}; {agg.metric(task.name)})",
                "",
                "| weights | " + " | ".join(heads) + " |",
            ]
            lines.append("|---" * (len(columns) + 1) + "|")
            for spec in cfg.weights:
                cells = [_cell_text(agg, (task.name, setting, c, spec.name)) for c in columns]
                if any(cells):
                    lines.append(f"| {spec.name} | " + " | ".join(cells) + " |")
            lines.append("")
            if any(k in agg.random_general for k in agg.params if k[0] == task.name and k[1] == setting):
                lines += ["† GMoE-Adapter with a randomly initialised general stream (no general weights file): "
                          "it measures extra capacity, not medical + general weights combined.", ""]  # fmt: skip
            if any(k[0] == task.name and k[1] == setting for k in agg.ood):
                lines += _ood_table(agg, task.name, setting, columns)
            lines += per_class_table(agg, task.name, setting)
    return lines


def per_class_table(agg: Aggregate, task: str, setting: str) -> list[str]:
    """Multi-label tasks: AUROC per label; segmentation: Dice per class (mean ± std over seeds), one row per
    weights × method."""
    keys = sorted(k for k in agg.per_class if k[0] == task and k[1] == setting and k not in agg.sweeps)
    if not keys:
        return []
    names: list[str] = []
    for key in keys:
        names += [n for n in agg.per_class[key] if n not in names]
    lines = [f"#### {task} ({setting}): {agg.per_class_kind.get(task, 'per class')}", "",
             "| weights | method | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for key in keys:
        cells = []
        for name in names:
            per_seed = agg.per_class[key].get(name, {})
            mean, std = st.mean_std(list(per_seed.values())) if per_seed else (float("nan"), float("nan"))
            cells.append(f"{fmt(mean)} ± {fmt(std)}" if per_seed else "–")
        method = display_name(key[2], agg.keys.get(key[2], key[2]))
        lines.append(f"| {key[3]} | {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _ood_table(agg: Aggregate, task: str, setting: str, columns: list[str]) -> list[str]:
    lines = [
        f"#### {task} ({setting}): in-distribution vs OOD",
        "",
        "| weights | method | ID | OOD | gap |",
        "|---|---|---|---|---|",
    ]
    for spec in agg.cfg.weights:
        for column in columns:
            key = (task, setting, column, spec.name)
            id_sum, ood_sum = agg.summary(key), agg.summary(key, "ood")
            if id_sum is None or ood_sum is None:
                continue
            lines.append(
                f"| {spec.name} | {display_name(column, agg.keys.get(column, column))} | "
                f"{id_sum.mean:.3f} ± {fmt(id_sum.std)} | "
                f"{ood_sum.mean:.3f} ± {fmt(ood_sum.std)} | {id_sum.mean - ood_sum.mean:+.3f} |"
            )
    return [*lines, ""]


def paired_section(agg: Aggregate) -> list[str]:
    """Every method pair under the same weights, and every weights pair under the same method."""
    lines = [
        "## Paired comparisons",
        "",
        "| task | setting | A | B | n | Δ (A − B) [95% CI] | p | significant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(k for k in agg.values if k not in agg.sweeps)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            same_method = a[2] == b[2]
            same_weights = a[3] == b[3]
            if a[:2] != b[:2] or same_method == same_weights:
                continue
            result = agg.compare(a, b)
            if result is None or result.n < 2:
                continue
            if result.degenerate:
                flag = "n/a (same Δ on every seed)"
            else:
                flag = "yes" if result.p_value is not None and result.p_value < agg.cfg.alpha else "no"
            lines.append(
                f"| {a[0]} | {a[1]} | {a[2]}/{a[3]} | {b[2]}/{b[3]} | {result.n} | {result.mean_diff:+.3f} "
                f"[{fmt(result.ci_low)}, {fmt(result.ci_high)}] | {fmt(result.p_value)} | {flag} |"
            )
    if len(lines) == 4:
        return ["## Paired comparisons", "", "None: paired tests need at least 2 seeds that both columns finished.", ""]
    tests = len(lines) - 4
    expected = tests * agg.cfg.alpha
    lines += [
        "",
        f"{tests} comparisons at α = {agg.cfg.alpha} each, uncorrected: about {expected:.1f} would be flagged by "
        "chance if no difference were real.",
        "",
    ]
    return lines


def forgetting_rows(result: dict) -> list[dict]:
    """Old/new-center Dice per adaptation mode from a ``protocol=new_center`` result (its ``table``).

    Old-center values are averaged over the old centers. Returns ``[{mode, old_before, old_after, new_before,
    new_after, trainable_params}]``.
    """
    old = result.get("old_centers") or []
    rows = []
    for row in result.get("table") or []:
        befores = [row.get(f"{c}_dice_before") for c in old]
        afters = [row.get(f"{c}_dice_after") for c in old]
        if not afters or any(v is None for v in afters) or row.get("new_center_dice") is None:
            continue
        rows.append({
            "mode": row["mode"],
            "old_before": sum(b for b in befores if b is not None) / max(1, sum(b is not None for b in befores)),
            "old_after": sum(afters) / len(afters),
            "new_before": row.get("new_center_dice_before", float("nan")),
            "new_after": row["new_center_dice"],
            "trainable_params": row.get("trainable_params"),
        })  # fmt: skip
    return rows


def forgetting_section(records: list[dict]) -> tuple[list[str], list[dict]]:
    """Old/new-center retention of segmentation prompts (Saeed et al. 2023), averaged over seeds.

    Returns the Markdown lines and the averaged rows ``{label, old_before, old_after, new_before, new_after}``.
    """
    by_label: dict[str, list[dict]] = defaultdict(list)
    params: dict[str, int | None] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        for row in forgetting_rows(record.get("result") or {}):
            label = f"{row['mode']} ({record['cell']['weights']})"
            by_label[label].append(row)
            params[label] = row["trainable_params"]
    if not by_label:
        return [], []
    keys = ("old_before", "old_after", "new_before", "new_after")
    rows: list[dict] = []
    lines = [
        "## Segmentation: old-center retention after adapting to a new center",
        "",
        "Dice averaged over seeds; old = mean over the old centers; forgetting = old before − old after.",
        "",
        "| adaptation (weights) | old before | old after | forgetting | new before | new after | trainable | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, items in sorted(by_label.items()):
        mean = {k: sum(float(i[k]) for i in items) / len(items) for k in keys}
        rows.append({"label": label, **mean})
        lines.append(
            f"| {label} | {fmt(mean['old_before'])} | {fmt(mean['old_after'])} | "
            f"{fmt(mean['old_before'] - mean['old_after'])} | {fmt(mean['new_before'])} | "
            f"{fmt(mean['new_after'])} | {fmt_count(params[label])} | {len(items)} |"
        )
    return [*lines, ""], rows
