"""Statistics and the Markdown report of a pretraining ablation (``pretrain.ablation``).

Per evaluation (task/method) and variant: mean ± sample std over pretraining seeds and the Student-t 95% CI of
the mean (honest at 3–5 seeds). Every variant is compared with the reference on the *same* seeds: the mean paired
difference, its t 95% CI and the two-sided paired t-test p-value (``scipy.stats.ttest_rel``), all from
:mod:`lvmmed.stats`, the seed-level statistics the downstream benchmark report uses too. Cells that failed or
have not run yet are left out and counted; a report with missing cells says "partial" in its first line.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed import stats
from lvmmed.config import load_config
from lvmmed.markers import write_block
from pretrain.ablation_config import AblationConfig, resolved_max_steps
from pretrain.config import PretrainConfig

METRIC = "accuracy"


def seed_stats(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, std, ci_low, ci_high) over pretraining seeds (:func:`lvmmed.stats.summarize`, Student-t 95% CI);
    NaN std and bounds below 2 values, all NaN for none."""
    if not values:
        return (math.nan,) * 4
    summary = stats.summarize(values)
    return summary.mean, summary.std, summary.ci_low, summary.ci_high


def versus_reference(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Paired difference (variant − reference) over the seeds both have (:func:`lvmmed.stats.paired`, t-test).

    ``p`` is NaN when fewer than 2 seeds pair up or when the difference is the same on every seed (zero
    included): with no spread across seeds a t-test has nothing to test, and the table shows no p.
    """
    seeds = sorted(set(values) & set(reference))
    diffs = [values[s] - reference[s] for s in seeds]
    result = stats.paired([values[s] for s in seeds], [reference[s] for s in seeds], test="ttest")
    p = result.p_value if result.p_value is not None and np.ptp(diffs) > 0 else math.nan
    return {"n": result.n, "diff": result.mean_diff, "ci": [result.ci_low, result.ci_high], "p": p}


def collect(cfg: AblationConfig, harness: Any) -> dict[str, Any]:
    """Gathers the cell records into ``{evals: {key: {variant: {seed: acc}}}, pretrain: {variant: [...]}}``."""
    evals: dict[str, dict[str, dict[int, float]]] = {e.key: {} for e in cfg.evals}
    pretrain: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for cell in harness.cells:
        pre = harness.done(cell, "pretrain")
        if pre and cell.variant.source != "random":
            pretrain.setdefault(cell.variant.name, []).append({"seed": cell.seed, **pre})
        for spec in cfg.evals:
            rec = harness.done(cell, spec.key)
            if rec and rec.get("metrics") and rec["metrics"].get(METRIC) is not None:
                evals[spec.key].setdefault(cell.variant.name, {})[cell.seed] = float(rec["metrics"][METRIC])
            else:
                missing.append(f"{cell.id} {spec.key}")
    return {"evals": evals, "pretrain": pretrain, "missing": missing}


def summarize(cfg: AblationConfig, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, by_variant in data["evals"].items():
        ref = by_variant.get(cfg.reference, {})
        rows = {}
        for v in cfg.variants:
            vals = by_variant.get(v.name, {})
            mean, std, low, high = seed_stats(list(vals.values()))
            rows[v.name] = {"n": len(vals), "values": vals, "mean": mean, "std": std, "ci": [low, high]}
            if v.name != cfg.reference:
                rows[v.name]["vs_reference"] = versus_reference(vals, ref)
        out[key] = rows
    return out


def _f(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.3f}"


def headline_lines(cfg: AblationConfig, summary: dict[str, Any]) -> list[str]:
    """Plain-language checks of the reference against the baselines on the headline evaluation."""
    rows = summary[cfg.headline]
    ref_label = next(v.label for v in cfg.variants if v.name == cfg.reference)
    steps = variant_steps(cfg)
    lines = []
    for name in cfg.baselines:
        label = next(v.label for v in cfg.variants if v.name == name)
        cmp = rows[name]["vs_reference"]
        d = -cmp["diff"]  # reference − baseline
        lo, hi = (-cmp["ci"][1], -cmp["ci"][0])
        if cmp["n"] == 0:
            lines.append(f"- {ref_label} vs {label}: no paired seeds yet.")
            continue
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"
        seeds = f"{cmp['n']} pretraining seed" + ("s" if cmp["n"] != 1 else "")
        lines.append(
            f"- {ref_label} − {label} on {cfg.headline}: {_signed(d)} (95% CI {_signed(lo)} … {_signed(hi)}, "
            f"p = {_f(cmp['p'])}, {seeds}): **{verdict}** {_budget(steps, cfg.reference, name)}."
        )
    return lines


def variant_steps(cfg: AblationConfig) -> dict[str, int]:
    """Each pretrained variant's step budget; ``{}`` when the pretraining config cannot be resolved here."""
    try:
        return resolved_max_steps(cfg)
    except Exception:  # the report must still be written; the phrase then omits the budgets
        return {}


def _budget(steps: dict[str, int], a: str, b: str) -> str:
    """ "at equal steps, batch and data", the two budgets when they differ, or the one budget against random init."""
    if steps and (a in steps) != (b in steps):  # one side is random init (no pretraining)
        return f"at {steps.get(a, steps.get(b))} pretraining steps vs none (random init)"
    if a in steps and b in steps and steps[a] != steps[b]:
        return f"at {steps[a]} vs {steps[b]} steps (same batch and data)"
    return "at equal steps, batch and data"


def pool_line(cfg: AblationConfig) -> str:
    """The pretraining pool read from the shard manifests: ``set train-count`` per set and the total."""
    try:
        pre = load_config(PretrainConfig, cfg.pretrain_config, cfg.pretrain_overrides)
    except Exception as err:  # the report must still be written; say why the pool is unknown
        return f"Pretraining pool: unknown ({err})."
    parts, total = [], 0
    for root in pre.data.shards:
        manifests = [Path(root) / "manifest.json"] if (Path(root) / "manifest.json").is_file() else []
        manifests = manifests or sorted(Path(root).glob("*/manifest.json"))
        for manifest in manifests:
            counts = json.loads(manifest.read_text()).get("counts", {})
            n = sum(int(counts.get(split, 0)) for split in pre.data.splits)
            parts.append(f"{manifest.parent.name} {n}")
            total += n
    sets = ", ".join(parts) or "no manifests found"
    return f"Pretraining pool ({'+'.join(pre.data.splits)} splits): {sets}; {total} images."


def markdown(cfg: AblationConfig, data: dict[str, Any], summary: dict[str, Any], command: str) -> str:
    total = len(cfg.variants) * len(cfg.seeds) * len(cfg.evals)
    done = total - len(data["missing"])
    status = "complete" if not data["missing"] else f"**partial: {done} of {total} evaluations finished**"
    lines = [
        f"Ablation `{cfg.name}`: {len(cfg.variants)} variants × pretraining seeds {cfg.seeds} ({status}). "
        f"Metric: test {METRIC}, mean ± std over pretraining seeds, Student-t 95% CI; Δ = variant − "
        f"`{cfg.reference}` paired over the same seeds (paired t-test p).",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Pretraining: `{cfg.pretrain_config}` + `{' '.join(cfg.pretrain_overrides) or '(no overrides)'}`.",
        "",
        pool_line(cfg),
        "",
    ]
    lines += [*headline_lines(cfg, summary), ""]
    for key, rows in summary.items():
        lines += [
            f"**{key}**",
            "",
            "| variant | n | mean ± std | 95% CI | Δ vs ref | Δ 95% CI | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in cfg.variants:
            r = rows[v.name]
            cmp = r.get("vs_reference")
            delta = (
                (_signed(cmp["diff"]), f"{_signed(cmp['ci'][0])} … {_signed(cmp['ci'][1])}", _f(cmp["p"]))
                if cmp
                else ("ref", "", "")
            )
            lines.append(
                f"| {v.label} | {r['n']} | {_f(r['mean'])} ± {_f(r['std'])} | {_f(r['ci'][0])} … {_f(r['ci'][1])} | "
                + " | ".join(delta)
                + " |"
            )
        lines.append("")
    lines += [
        "**Pretraining** (last logged row; mean over seeds)",
        "",
        "| variant | what | seeds | final loss | final match_acc | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for v in cfg.variants:
        runs = data["pretrain"].get(v.name, [])
        if v.source == "random":
            lines.append(f"| {v.label} | {v.note or 'random init'} | – | – | – | – |")
            continue
        loss = [r["train"].get("loss", math.nan) for r in runs if r.get("train")]
        acc = [r["train"].get("match_acc", math.nan) for r in runs if r.get("train")]
        minutes = [r.get("seconds", math.nan) / 60 for r in runs]
        means = [float(np.nanmean(x)) if any(math.isfinite(v) for v in x) else math.nan for x in (loss, acc, minutes)]
        lines.append(
            f"| {v.label} | {v.note or ' '.join(v.overrides) or 'base config'} | {len(runs)} | "
            f"{_f(means[0])} | {_f(means[1])} | {_f(means[2], 1)} |"
        )
    lines += ["", f"Machine: {platform.machine()}, {platform.system()}; timings are wall times on a shared machine."]
    if data["missing"]:
        lines += [
            "",
            f"Missing ({len(data['missing'])}): "
            + ", ".join(data["missing"][:20])
            + (" …" if len(data["missing"]) > 20 else ""),
        ]
    return "\n".join(lines)


def write_reports(cfg: AblationConfig, harness: Any, command: str) -> dict[str, Path]:
    """Writes ``results.json`` and ``report.md`` under ``output_dir`` and the ``report`` block, if configured."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = collect(cfg, harness)
    summary = summarize(cfg, data)
    body = markdown(cfg, data, summary, command)
    (out / "results.json").write_text(
        json.dumps({"summary": summary, "missing": data["missing"]}, indent=1, default=float)
    )
    report = out / "report.md"
    report.write_text(f"# Ablation {cfg.name}\n\n{body}\n")
    if cfg.report:
        write_block(cfg.report, cfg.report_block, body)
    if cfg.readme:
        write_block(cfg.readme, cfg.readme_block, readme_quote(cfg, summary, command))
    return {"report": report, "results": out / "results.json"}


def readme_quote(cfg: AblationConfig, summary: dict[str, Any], command: str) -> str:
    """The README's quote of the ablation: the command, the seeds and the headline verdicts."""
    rows = summary[cfg.headline]
    best = max(cfg.variants, key=lambda v: rows[v.name]["mean"] if rows[v.name]["n"] else -math.inf)
    return "\n".join([
        f"Quoted from `{command}` ({len(cfg.variants)} variants × pretraining seeds {list(cfg.seeds)}; the full "
        f"tables are in {cfg.report or 'the run report'}). Headline: {cfg.headline}, mean over pretraining seeds; "
        f"highest mean: {best.label} ({_f(rows[best.name]['mean'])}).",
        "",
        *headline_lines(cfg, summary),
    ])  # fmt: skip
