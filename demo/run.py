"""``make demo``: the whole lvmmed chain on the bundled real data, on 2 CPU cores in about 10 minutes.

Stages (each prints its wall time; each is skipped when its outputs exist, so a rerun resumes):

1. **prep**: ``data_prep.demo.run_demo(<out>)`` (= ``python -m data_prep demo --out <out>``) converts the real
   images that ship inside installed packages (MNI152 + tissue masks, DICOM samples, fundus/histology tiles;
   Colin27 and AAL when Debian mricron-data is installed) into ``<out>/shards`` and writes ``<out>/summary.md``
   and ``<out>/contact_sheet.png``.
2. **pretrain** (``pretrain_gm_s<seed>`` and ``pretrain_ntxent_s<seed>``, two at a time): ``python -m
   pretrain.demo`` (``python -m pretrain`` on ``configs/pretrain/tiny_cpu.yaml`` + a curves PNG) at an equal step
   budget, with the LVM-Med graph-matching loss and with the SimCLR NT-Xent baseline, once per benchmark seed
   (pretraining seed = downstream seed), on the *train* split only of ``pretrain_sets`` (the downstream test
   split, and Colin27, the OOD set, stay unseen).
3. **benchmark**: ``configs/benchmark/demo.yaml``: tissue classification × {LP, VPT-deep} × {random, ours_gm,
   ours_simclr} × 3 seeds, and brain-tissue segmentation (seg-unet on the frozen encoder, random vs ours_gm;
   ``seg=false`` skips it). Seed s of a pretrained column reads pretraining run s (``{seed}`` in the weight
   source), so the paired differences over seeds include the spread between pretraining runs.
4. **report**: ``<out>/benchmark/report.md``; its first table answers "did our pretraining beat random init and
   SimCLR on held-out data?" with mean ± std, 95% CIs and paired tests.

Usage: ``python -m demo --out runs/demo [key=value ...]`` with keys of :class:`DemoConfig`
(e.g. ``pretrain_steps=100 seeds=[0,1]``). The resolved config is saved as ``<out>/demo_config.yaml``, stage
timings as ``<out>/timings.json``.

Scale, honestly: a handful of subjects (one MNI152 template, two Colin27 volumes when installed, a few DICOM
files), 96-pixel images, a ViT-Tiny pretrained for a few hundred steps. The demo shows that the chain runs end to
end and how results are reported; it is not evidence about LVM-Med at scale.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.demo import run_demo as prep_demo
from downstream.benchmark.api import run_benchmark
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import is_segmentation, seed_source
from lvmmed.config import load_config, save_config
from lvmmed.errors import LvmmedError
from lvmmed.markers import write_block

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "runs/demo"


@dataclass
class DemoConfig:
    """Knobs of the demo (defaults fit 2 CPU cores and ~10 minutes).

    Attributes:
        profile: data_prep bundled profile (``demo``: 96 px, dense; ``tiny``: 64 px, sparse).
        prep_workers: Worker processes of the conversion.
        pretrain_config: Pretraining YAML (tiny ViT for CPU).
        pretrain_steps: Equal step budget of the GM and the NT-Xent run.
        pretrain_sets: Shard sets (under ``<out>/shards``) that pretraining reads (train split only).
        pretrain_overrides: Extra ``key=value`` for both pretraining runs.
        benchmark_config: Benchmark YAML; paths starting with ``runs/demo`` are rebased onto ``--out``.
        benchmark_overrides: Extra ``key=value`` for the benchmark (e.g. ``workers=1``).
        seeds: Seeds of the benchmark (3: mean ± std and a t-interval with 2 degrees of freedom).
        pretrain_per_seed: Pretrain each loss once per seed (seed s of the benchmark reads run s); false: one
            pretraining run per loss (seed ``seeds[0]``) shared by every benchmark seed, about 1.5 min faster.
        parallel_pretrain: Run the GM and the NT-Xent pretraining at the same time, one thread each (on 2 cores
            this beats two 2-thread runs in a row, whose small ops do not scale to 2 threads).
        seg: Keep the segmentation task of the benchmark config (seg-unet with a frozen encoder, random vs ours_gm;
            about 1.5 min of the demo on 2 cores). ``seg=false`` drops it.
        readme: Markdown file whose ``demo-excerpt`` block is rewritten from this run's report
            (``lvmmed.markers.write_block``); ``readme=README.md`` refreshes the README's excerpt, "" leaves it.
    """

    profile: str = "demo"
    prep_workers: int = 2
    pretrain_config: str = "configs/pretrain/tiny_cpu.yaml"
    pretrain_steps: int = 50
    pretrain_sets: list[str] = field(
        default_factory=lambda: ["mni152", "dicom_modality", "color2d", "pretrain_extra"]
    )  # data_prep.bundled.PRETRAIN_POOL: every bundled source but Colin27
    pretrain_overrides: list[str] = field(default_factory=list)
    benchmark_config: str = "configs/benchmark/demo.yaml"
    benchmark_overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    seg: bool = True
    parallel_pretrain: bool = True
    pretrain_per_seed: bool = True
    readme: str = ""

    @property
    def pretrain_seed_list(self) -> list[int]:
        """The pretraining seeds of each loss."""
        return list(self.seeds) if self.pretrain_per_seed else list(self.seeds[:1])

    @property
    def pretrain_seeds(self) -> int:
        """Pretraining runs per loss behind every verdict."""
        return len(self.pretrain_seed_list)

    def pretrain_runs(self) -> list[tuple[str, str, int]]:
        """``(run name, loss, seed)`` of every pretraining run, e.g. ``("pretrain_gm_s0", "graph_matching", 0)``."""
        seeds = self.pretrain_seed_list
        return [(f"{prefix}_s{seed}", loss, seed) for seed in seeds for prefix, loss in PRETRAIN_RUNS.items()]


PRETRAIN_RUNS = {"pretrain_gm": "graph_matching", "pretrain_ntxent": "ntxent"}  # run-name prefix -> loss


def _start(module: str, args: Sequence[str], log: Path, threads: int) -> subprocess.Popen:
    """Starts ``python -m module args`` from the repo root with stdout+stderr going to ``log``."""
    cmd = [sys.executable, "-m", module, *args]
    print("  $ python " + " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _python_all(jobs: Sequence[tuple[str, Sequence[str], Path]], parallel: bool) -> None:
    """Runs ``(module, args, log)`` jobs, concurrently (1 thread each) or one after the other (2 threads).

    Full output goes to each job's log; the console gets one line per finished job. On failure the last 30 log
    lines are shown and an LvmmedError (exit 1 under the error contract) names the log.
    """
    threads = 1 if parallel and len(jobs) > 1 else int(os.environ.get("OMP_NUM_THREADS", "2"))
    width = 2 if parallel else 1  # two single-thread processes at a time fill 2 cores without oversubscribing
    batches = [list(jobs[i : i + width]) for i in range(0, len(jobs), width)]
    for batch in batches:
        procs = [(module, log, _start(module, args, log, threads)) for module, args, log in batch]
        failed = []
        for module, log, proc in procs:
            code = proc.wait()
            print(f"  finished: {log.name} (exit {code})", flush=True)
            if code:
                failed.append((module, log, code))
        for module, log, code in failed:
            tail = log.read_text().splitlines()[-30:]
            print("\n".join("    " + t[-200:] for t in tail), flush=True)
            raise LvmmedError(f"`python -m {module}` failed with exit code {code}", fix=f"see the full log {log}")


def export_dir(run_dir: Path) -> Path:
    """Where a pretraining run exports ``model.safetensors`` + ``config.json``."""
    return run_dir / "export"


def pretrain_done(run_dir: Path, steps: int) -> bool:
    """The run exported weights at exactly ``steps`` (a different budget resumes from its last checkpoint)."""
    config = export_dir(run_dir) / "config.json"
    if not (export_dir(run_dir) / "model.safetensors").is_file() or not config.is_file():
        return False
    exported = json.loads(config.read_text()).get("pretrain", {}).get("steps")
    return exported == steps and (run_dir / "curves.png").is_file()


class Stages:
    """Runs named stages in order, skipping those whose outputs exist, and records wall times."""

    def __init__(self, out: Path):
        self.out = out
        self.timings: dict[str, dict] = {}
        self.path = out / "timings.json"

    def run(self, name: str, done: Callable[[], bool], fn: Callable[[], None]) -> None:
        if done():
            print(f"[{name}] outputs exist: skipped", flush=True)
            self.timings[name] = {"seconds": 0.0, "skipped": True}
        else:
            print(f"[{name}] ...", flush=True)
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            self.timings[name] = {"seconds": round(seconds, 1), "skipped": False}
            print(f"[{name}] done in {seconds:.1f}s", flush=True)
        self.path.write_text(json.dumps(self.timings, indent=1))


def _rebase(text: str, out: Path) -> str:
    """Rewrites ``runs/demo/...`` (the YAML's default location) to ``<out>/...``."""
    return str(out) + text[len(DEFAULT_OUT) :] if text.startswith(DEFAULT_OUT) else text


def benchmark_config(cfg: DemoConfig, out: Path, notes: str):
    """The demo's BenchmarkConfig: the YAML, rebased onto ``out``, with the seeds and the report notes."""
    bench = load_config(BenchmarkConfig, REPO / cfg.benchmark_config, cfg.benchmark_overrides)
    bench.output_dir = _rebase(bench.output_dir, out)
    for weights in bench.weights:
        weights.source = _rebase(weights.source, out)
        if not cfg.pretrain_per_seed:  # every benchmark seed reads the one pretraining run
            weights.source = seed_source(weights.source, cfg.seeds[0])
    for task in bench.tasks:
        task.overrides = [k + "=" + _rebase(v, out) for k, v in (o.split("=", 1) for o in task.overrides)]
    bench.overrides = [k + "=" + _rebase(v, out) for k, v in (o.split("=", 1) for o in bench.overrides)]
    bench.seeds = list(cfg.seeds)
    bench.notes = notes
    if not cfg.seg:
        bench.tasks = [t for t in bench.tasks if not is_segmentation("", t.task or t.name)]
        bench.methods = [m for m in bench.methods if not is_segmentation(m.key, "")]
    return bench


def _pretrain_note(run_dir: Path) -> str:
    """One line about a pretraining run (last logged step, loss, matching accuracy, curve PNG) for the report."""
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return f"no metrics in {run_dir}"
    with open(metrics, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return f"no metrics in {run_dir}"
    last = rows[-1]
    parts = [f"step {last.get('step')}", f"loss {float(last['loss']):.4f}"] if last.get("loss") else []
    if last.get("match_acc"):
        parts.append(f"matching accuracy {float(last['match_acc']):.3f} (batch-level, training views)")
    curves = run_dir / "curves.png"
    if curves.is_file():
        parts.append(f"curves: ![{run_dir.name}](../{run_dir.name}/curves.png)")
    return ", ".join(parts)


def scale_notes(cfg: DemoConfig, out: Path, timings: dict) -> str:
    """The honest-scale paragraph at the top of the demo report."""
    shards = out / "shards"
    counts = []
    for manifest in sorted(shards.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        counts.append(
            f"{manifest.parent.name} {data['counts'].get('train', 0)}/{data['counts'].get('val', 0)}/"
            f"{data['counts'].get('test', 0)}"
        )
    lines = [
        "**Scale, honestly.** This is the `make demo` run: the bundled real data only (one MNI152 template, "
        "Colin27 when Debian mricron-data is installed, a few DICOM files and colour tiles), 96-pixel slices, a "
        f"ViT-Tiny pretrained for {cfg.pretrain_steps} steps per loss on 2 CPU cores, {len(cfg.seeds)} downstream "
        f"seed(s) and {_pretrain_seed_phrase(cfg)} "
        "Splits are by slab/patient group, so no test slab is seen in pretraining or training, but the templates "
        "are few subjects: differences here show that the pipeline measures and reports correctly, not how "
        "LVM-Med behaves at scale.",
        "",
        "Shards (train/val/test images): " + ("; ".join(counts) or "n/a") + ".",
        "",
    ]
    for name, _, _ in cfg.pretrain_runs():
        lines.append(f"- `{name}`: {_pretrain_note(out / name)}")
    stage_times = ", ".join(
        f"{k} {v['seconds']:.0f}s" + (" (resumed)" if v["skipped"] else "") for k, v in timings.items()
    )
    lines += ["", f"Stage wall times: {stage_times}."]
    return "\n".join(lines)


def run_demo(cfg: DemoConfig, out: Path) -> Path:
    """Runs every stage; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    stages = Stages(out)
    shards = out / "shards"
    total = time.perf_counter()

    def prep() -> None:
        built = prep_demo(out, profile=cfg.profile, workers=cfg.prep_workers, progress=False)
        print("  shard sets: " + ", ".join(sorted(built["sets"])) + f"; contact sheet: {built['contact_sheet']}")

    stages.run("prep", lambda: (shards / "mni152" / "manifest.json").is_file() and (out / "summary.md").is_file(), prep)

    sets = [str(shards / s) for s in cfg.pretrain_sets if (shards / s / "manifest.json").is_file()]
    jobs = []
    for name, loss, seed in cfg.pretrain_runs():
        run_dir = out / name
        if pretrain_done(run_dir, cfg.pretrain_steps):
            continue
        args = [
            *("--shards", str(shards), "--out", str(run_dir), "--loss", loss),
            *("--max-steps", str(cfg.pretrain_steps), "--config", cfg.pretrain_config),
            f"data.shards=[{','.join(sets)}]",
            f"seed={seed}",
            *cfg.pretrain_overrides,
        ]
        jobs.append(("pretrain.demo", args, out / "logs" / f"{name}.log"))
    stages.run("pretrain", lambda: not jobs, lambda: _python_all(jobs, cfg.parallel_pretrain))

    bench = benchmark_config(cfg, out, scale_notes(cfg, out, stages.timings))
    outcome: dict = {}

    def benchmark() -> None:
        outcome.update(run_benchmark(bench, progress=lambda line: print("  " + line, flush=True)))

    stages.run("benchmark", lambda: False, benchmark)
    report = Path(outcome.get("report", Path(bench.output_dir) / "report.md"))
    seconds = time.perf_counter() - total
    stages.timings["total"] = {"seconds": round(seconds, 1), "skipped": False}
    stages.path.write_text(json.dumps(stages.timings, indent=1))
    print(f"\nlvmmed demo finished in {seconds / 60:.1f} min. Report: {report}", flush=True)
    print(_first_table(report), flush=True)
    if cfg.readme and report.is_file():
        resumed = [name for name, t in stages.timings.items() if t.get("skipped")]
        readme = Path(cfg.readme) if Path(cfg.readme).is_absolute() else REPO / cfg.readme
        write_excerpt(cfg, report, seconds, readme, resumed)
    return report


def excerpt(cfg: DemoConfig, report: Path, seconds: float, resumed: Sequence[str] = ()) -> str:
    """The README excerpt: how the run was made and on how many seeds it rests, then the report's headline."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    seeds = ",".join(str(seed) for seed in cfg.seeds)
    overrides = f"pretrain_steps={cfg.pretrain_steps} seeds=[{seeds}]"
    head = (
        f"Written by `python -m demo --out DIR {overrides} readme=README.md` from its own report "
        f"(`DIR/benchmark/report.md`): {seconds / 60:.1f} min on this machine (load average {load:.1f} at the end"
        + (f"; stages resumed from an earlier run: {', '.join(resumed)}" if resumed else "")
        + f"). Every verdict below rests on {len(cfg.seeds)} seeds and {_pretrain_seed_phrase(cfg)} "
        "`docs/ablation.md` compares more losses over pretraining seeds. Bundled data use a fixed public salt, so a "
        "fresh clone with the same pins prints the same splits."
    )
    table = _first_table(report).replace("## Did our pretraining help?", "#### Did our pretraining help?")
    return head + "\n\n" + table


def _pretrain_seed_phrase(cfg: DemoConfig) -> str:
    """What the seeds of the verdict cover, in one sentence."""
    if cfg.pretrain_per_seed and len(cfg.seeds) > 1:
        return (
            f"**{cfg.pretrain_seeds} pretraining runs per loss** (seed s of a pretrained column reads pretraining "
            "run s), so the CIs and paired tests cover the spread between pretraining runs and downstream splits."
        )
    return (
        f"**{cfg.pretrain_seeds} pretraining run per loss**: the CIs cover downstream variation only, not the "
        "variation between pretraining runs."
    )


def write_excerpt(cfg: DemoConfig, report: Path, seconds: float, readme: Path, resumed: Sequence[str] = ()) -> None:
    """Rewrites the ``demo-excerpt`` block of ``readme`` from the report (never by hand)."""
    write_block(readme, "demo-excerpt", excerpt(cfg, report, seconds, resumed))
    print(f"README excerpt written: {readme}", flush=True)


def _first_table(report: Path) -> str:
    """The headline section of the report (printed at the end of the demo)."""
    if not report.is_file():
        return ""
    text = report.read_text()
    start = text.find("## Did our pretraining help?")
    if start < 0:
        return ""
    ends = [i for i in (text.find("\n## ", start + 1), text.find("**Weight sources:**", start)) if i > 0]
    return text[start : min(ends, default=len(text))].strip()
