"""data_prep throughput: process pool vs single process vs a raw read-and-tar bound, measured in one run.

Input: the bundled real volumes (MNI152 2009a T1; Colin27 when ``mricron-data`` is installed), copied N times
into a temporary NIfTI folder so the run reaches ``--min-slices`` (5,000 at 224 px; ``--quick``: 1,800 at 96 px,
at least 3 files so the pool has work for both processes). Each variant
converts that folder with the real ``nifti`` converter (``read_nifti`` → MR percentile scaling → slices along
3 axes, empty ones skipped → resize → float16 ``.npy`` + ``meta.json`` → atomic tar shards + manifest):

* ``pool``: ``workers=2`` (``multiprocessing`` pool; each worker writes its own samples into the shards at the
  place the main process gives them and hashes full shards; the main process fsyncs, renames, journals);
* ``single``: ``workers=1`` (in-process);
* ``raw``: the bound, single process: ``nibabel`` load + the same slices the converter wrote (the empty ones it
  skipped are skipped here too; the list comes from the ``single`` run's ``meta.json``), raw (original dtype,
  no scaling, no resize) ``.npy`` written with ``webdataset.ShardWriter``.

Targets: ``pool / single >= 1.8`` and ``pool / raw >= 0.5`` (slices per second). The JSON records machine info,
the load average before/after (the machine may be shared), the CPU seconds of the main process and of the
workers (also per slice), the CPU per slice of each stage of the converter and of the raw bound on one volume
(``stages``), the top cProfile entries of a single-process conversion of one volume (where the time goes), and
``ceilings``: the ratios the pool would reach with its 2 cores fully busy against the single process and the raw
bound at 1 busy core each, from CPU per slice alone (of the runs, and of the stage sums); a ceiling under a target
means the work per slice, not the scheduling, is what misses it.

Usage: ``python bench/data_prep.py [--quick] [--size 224] [--out bench/results/data_prep.json]``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib
import numpy as np
import webdataset as wds

from bench._common import BenchRun
from data_prep.convert import convert, resolve_config
from data_prep.encode import apply_channels, make_sample
from data_prep.records_to_samples import normalize_record, resize, slices
from data_prep.writer import tar_members
from lvmmed.config import to_dict
from lvmmed.data import samples
from lvmmed.data.readers import read_nifti


def _volumes() -> list[Path]:
    names = ["mni152_t1"] + (["colin27_t1"] if samples.is_available("colin27_t1") else [])
    return [samples.path(n) for n in names]


def _prepare(folder: Path, min_slices: int) -> tuple[int, int]:
    """Copies the volumes until their total slice count (3 axes) reaches ``min_slices``; returns (files, slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = _volumes()
    per = [sum(nib.load(str(p)).shape[:3]) for p in sources]
    n, total = 0, 0
    while total < min_slices:
        src = sources[n % len(sources)]
        shutil.copy(src, folder / f"vol{n:03d}.nii.gz")
        total += per[n % len(sources)]
        n += 1
    return n, total


def _config(workers: int, size: int):
    return resolve_config(None, None, [
        "format=nifti", "modality=MR", "axes=[0,1,2]", f"image_size={size}", f"workers={workers}", "name=bench",
    ])  # fmt: skip


def _convert(src: Path, out: Path, workers: int, size: int) -> dict:
    cfg = _config(workers, size)
    (main0, kids0), start = _cpu_split(), time.perf_counter()
    result = convert(src, out, cfg, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    main1, kids1 = _cpu_split()
    cpu = (main1 - main0) + (kids1 - kids0)
    n = result.manifest["counts"]["total"]
    return {"seconds": round(seconds, 3), "slices": n, "slices_per_s": round(n / seconds, 1),
            "cpu_seconds": round(cpu, 3), "cpu_main_process": round(main1 - main0, 3),
            "cpu_workers": round(kids1 - kids0, 3), "cores_used": round(cpu / seconds, 2),
            "cpu_ms_per_slice": round(1000 * cpu / n, 4), "cpu_main_ms_per_slice": round(1000 * (main1 - main0) / n, 4),
            "cpu_workers_ms_per_slice": round(1000 * (kids1 - kids0) / n, 4),
            "input_files": result.n_tasks, "bytes": sum(s["bytes"] for s in result.manifest["shards"]),
            "failures": len(result.failures)}  # fmt: skip


def _cpu_split() -> tuple[float, float]:
    """CPU seconds of this process, and of its reaped children (the pool workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu() -> float:
    return sum(_cpu_split())


def _written_slices(shards: Path) -> dict[int, list[tuple[int, int]]]:
    """``{source_index: [(axis, slice_index), ...]}`` of the samples a conversion wrote (from meta.json)."""
    kept: dict[int, list[tuple[int, int]]] = {}
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".meta.json"):
                    meta = json.loads(tar.extractfile(member).read())
                    kept.setdefault(int(meta["source_index"]), []).append((int(meta["axis"]), int(meta["slice_index"])))
    return kept


def _raw(src: Path, out: Path, kept: dict[int, list[tuple[int, int]]]) -> dict:
    """Bound: nibabel read (RAS+, as the converter) + the same slices, raw, into tars; no processing/manifest."""
    out.mkdir(parents=True, exist_ok=True)
    cpu0, start = _cpu(), time.perf_counter()
    n, size = 0, 0
    with wds.ShardWriter(str(out / "raw-%06d.tar"), maxcount=1000, verbose=0, encoder=False) as sink:
        for i, f in enumerate(sorted(src.glob("*.nii.gz"))):
            volume = np.asanyarray(nib.as_closest_canonical(nib.load(str(f))).dataobj)
            for axis, index in kept.get(i, []):
                buf = io.BytesIO()
                plane = volume[(slice(None),) * axis + (index,)]  # basic indexing (np.take is slow on F-order)
                np.save(buf, np.ascontiguousarray(plane), allow_pickle=False)
                data = buf.getvalue()
                sink.write({"__key__": f"{f.name[:6]}_{axis}_{index:04d}", "raw.npy": data})
                n += 1
                size += len(data)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
    return {"seconds": round(seconds, 3), "slices": n, "slices_per_s": round(n / seconds, 1),
            "cpu_seconds": round(cpu, 3), "cores_used": round(cpu / seconds, 2), "bytes": size}  # fmt: skip


def _stages(src: Path, size: int, repeats: int = 3) -> dict:
    """CPU ms per written slice of each stage, one process, the first volume: the converter's stages (the library
    calls ``process_nifti`` makes, shard bytes hashed and written as the writer does) and the raw bound's. Each
    stage's figure is the least of ``repeats`` passes (a shared machine only adds time)."""
    file, cfg = sorted(src.glob("*.nii.gz"))[0], to_dict(_config(1, size))
    passes = [_stage_pass(file, cfg, size) for _ in range(repeats)]
    out: dict = {"slices": passes[0][2], "repeats": repeats}
    for k, key in enumerate(("converter", "raw")):
        best = {stage: round(min(p[k][stage] for p in passes), 4) for stage in passes[0][k]}
        out[f"{key}_ms_per_slice"], out[f"{key}_total"] = best, round(sum(best.values()), 4)
    return out


def _stage_pass(file: Path, cfg: dict, size: int) -> tuple[dict, dict, int]:
    spent: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        start = time.process_time()
        out = fn(*args)
        spent[stage] = spent.get(stage, 0.0) + time.process_time() - start
        return out

    record = timed("read", read_nifti, str(file), None, "MR")
    normalized, window = timed("normalize", normalize_record, record, cfg, "MR")
    items = timed("slice", lambda: list(slices(normalized, cfg)))
    with tempfile.TemporaryFile() as sink:
        for item in items:
            image = timed("resize", lambda it=item: resize(apply_channels(it.image2d, cfg["channels"]), size))
            meta = {"axis": item.axis, "slice_index": item.index, "window": window, "modality": "MR"}
            sample = timed("encode", make_sample, f"i000000_a{item.axis}_s{item.index:05d}", "train", image, meta)
            data = timed("tar", tar_members, sample)
            timed("sha256_and_write", lambda d=data: (hashlib.sha256(d), sink.write(d)))
    converter = {k: 1000 * v / len(items) for k, v in spent.items()}
    spent.clear()
    volume = timed("read", lambda: np.asanyarray(nib.as_closest_canonical(nib.load(str(file))).dataobj))
    with tempfile.TemporaryFile() as sink, tarfile.open(fileobj=sink, mode="w") as tar:
        for item in items:
            plane = timed("slice", lambda it=item: np.ascontiguousarray(volume[(slice(None),) * it.axis + (it.index,)]))
            buf = io.BytesIO()
            timed("npy", np.save, buf, plane)
            info = tarfile.TarInfo(f"k{item.axis}_{item.index}.raw.npy")
            info.size = buf.tell()
            buf.seek(0)
            timed("tar_write", tar.addfile, info, buf)
    return converter, {k: 1000 * v / len(items) for k, v in spent.items()}, len(items)


def _profile(src: Path, out: Path, size: int, top: int = 15) -> list[dict]:
    """cProfile of a single-process conversion of the first volume: the top entries by own time."""
    one = out / "src"
    one.mkdir(parents=True)
    shutil.copy(sorted(src.glob("*.nii.gz"))[0], one / "vol000.nii.gz")
    profiler = cProfile.Profile()
    profiler.enable()
    convert(one, out / "shards", _config(1, size), overwrite=True, progress=False)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(v[2] for v in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1], "own_s": round(v[2], 3),
             "cum_s": round(v[3], 3), "own_share": round(v[2] / total, 3)} for k, v in rows]  # fmt: skip


def _libraries() -> dict:
    return {"numpy": np.__version__, "pillow": version("pillow"), "nibabel": nib.__version__}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 volumes (~1,800 slices) at 96 px instead of 5,000 slices at 224 px"
    )
    parser.add_argument("--min-slices", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="output side in pixels (default 224 as LVM-Med)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_prep.json")
    args = parser.parse_args(argv)
    min_slices = args.min_slices or (1800 if args.quick else 5000)
    args.size = args.size or (96 if args.quick else 224)
    run = BenchRun("data_prep", quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="bench_data_prep_") as tmp:
        tmp = Path(tmp)
        n_files, n_slices = _prepare(tmp / "src", min_slices)
        single = _convert(tmp / "src", tmp / "single", 1, args.size)
        pool = _convert(tmp / "src", tmp / "pool", 2, args.size)
        raw = _raw(tmp / "src", tmp / "raw", _written_slices(tmp / "single"))
        profile = _profile(tmp / "src", tmp / "profile", args.size)
        stages = _stages(tmp / "src", args.size)
    ratios = {
        "pool_over_single": round(pool["slices_per_s"] / single["slices_per_s"], 3),
        "pool_over_raw": round(pool["slices_per_s"] / raw["slices_per_s"], 3),
        # CPU cost per slice, single / pool: ~1 means the pool adds no overhead, so a wall-clock ratio below 2
        # comes from the machine not granting 2 cores (see cores_used and load_average), not from the converter.
        "cpu_per_slice_single_over_pool": round(
            (single["cpu_seconds"] / single["slices"]) / (pool["cpu_seconds"] / pool["slices"]), 3
        ),
    }
    # Ceilings from CPU time only (robust on a shared machine): the ratios if the pool kept 2 cores busy and the
    # single process and the raw bound kept 1 core busy, each at its measured CPU per slice; and the same from the
    # stage sums of one volume (no pool, process start or I/O wait). A ceiling below a target means that no
    # scheduling can meet it: the work per slice is what misses it.
    raw_cpu_ms = 1000 * raw["cpu_seconds"] / raw["slices"]
    ceilings = {
        "raw_cpu_ms_per_slice": round(raw_cpu_ms, 4),
        "pool_over_single_at_busy_cores": round(2 * single["cpu_ms_per_slice"] / pool["cpu_ms_per_slice"], 3),
        "pool_over_raw_at_busy_cores": round(2 * raw_cpu_ms / pool["cpu_ms_per_slice"], 3),
        "stages_pool_over_raw_at_busy_cores": round(2 * stages["raw_total"] / stages["converter_total"], 3),
    }
    run.target("pool_over_single", ratios["pool_over_single"], ">=", 1.8)
    run.target("pool_over_raw", ratios["pool_over_raw"], ">=", 0.5)
    figures = {
        "input": {
            "files": n_files,
            "volume_slices": n_slices,
            "volumes": [p.name for p in _volumes()],
            "image_size": args.size,
            "axes": [0, 1, 2],
        },
        "pool": pool,
        "single": single,
        "raw": raw,
        "raw_writes_the_same_slices": raw["slices"] == pool["slices"] == single["slices"],
        "ratios": ratios,
        "ceilings": ceilings,
        "note": "wall-clock ratios need 2 idle cores; on a shared machine compare cores_used and load_average",
        "stages": stages,
        "profile_single_one_volume": profile,
        "libraries": _libraries(),
    }
    result = run.finish(figures, args.out)
    print(json.dumps({"ratios": ratios, "ceilings": ceilings, "pool": pool, "single": single, "raw": raw,
                      "load_average": result["load_average"]}, indent=1))  # fmt: skip
    return result


if __name__ == "__main__":
    main()
