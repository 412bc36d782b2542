"""Shard storage: PNG vs float16 ``.npy`` image encoding on the bundled real CT and MR data, measured in one run.

Both encodings are produced by the real converter (``data_prep`` bundled sets, ``encoding: npy | png``) from the
same sources, at 224 px (``--quick``: 96 px). Reported per group of samples:

* ``CT``: the CT series among the bundled DICOM files (``dicom_modality``, modality CT);
* ``MR``: the MNI152 2009a T1 slices (``mni152``); also, for information, every sample of ``dicom_modality``
  (CT, MR, CR, NM, US; grey) and, when ``mricron-data`` is installed, Colin27 (``colin27``).

Figures:

* ``bytes_ratio``: bytes per sample as stored in the tar (every member's 512-byte header and padding, image,
  ``meta.json``, mask), PNG / npy. ``image_bytes_ratio``: the image members alone.
* ``pipeline_ratio``: samples per CPU second (``*_wall``: per wall second), PNG / npy, of the training data
  pipeline (``TwoViewStream``: tar stream, decode, two augmented views, batches of 16; one process), i.e. what
  pretraining sees. ``decode_ratio`` (information): the read path alone (tar stream → ``decode_sample`` → float32
  image): Pillow's 16-bit PNG decode (inflate + unfilter) costs several times an ``.npy`` copy, which matters only
  without augmentations, and is repaid many times over where bytes are the bottleneck (object stores, networks).
* ``max_abs_diff``: largest |PNG − float16| over every pixel of every sample (float32 decodes).

Targets: ``bytes_ratio <= 0.35``, ``pipeline_ratio >= 0.8`` and ``max_abs_diff <= 2^-11`` (the float16
rounding step on [0.5, 1)) for CT and MR. The JSON records the machine, the load average at start and end and the
quick flag; timings on a shared machine are noisy, so npy and PNG are timed alternately in the same run, the best
of the repeats is kept, and the met flags use process-CPU time (what the code costs; wall time also measures
the other processes on a shared machine).

Usage: ``python bench/storage.py [--quick] [--out bench/results/storage.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import webdataset as wds

from bench._common import BenchRun
from data_prep import bundled
from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.pipeline import DataConfig, TwoViewStream, build_loader, resolve_shard_sets
from lvmmed.data.shards import decode_sample, load_manifest

TARGETS = {"bytes_ratio": 0.35, "pipeline_ratio": 0.8, "max_abs_diff": 2.0**-11}
SETS = ["mni152", "dicom_modality", "colin27"]


def _build(root: Path, size: int, encoding: str) -> dict[str, Path]:
    bundled.PROFILES["storage_bench"] = {**bundled.PROFILES["demo"], "image_size": size}
    names = [n for n in SETS if n != "colin27" or bundled.samples.source_available("mricron-data")]
    return bundled.build_bundled(root / encoding, profile="storage_bench", names=names, encoding=encoding)


def _tar_bytes(size: int) -> int:
    return 512 + -(-size // 512) * 512


def _samples(root: Path) -> dict[str, dict]:
    """``{key: {"raw": members, "bytes": tar bytes, "image_bytes": ..., "modality": ...}}`` of one set."""
    out = {}
    for shard in load_manifest(root).shards:
        with tarfile.open(root / shard["name"]) as tar:
            members: dict[str, dict[str, bytes]] = defaultdict(dict)
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members[key][ext] = tar.extractfile(m).read()
        for key, raw in members.items():
            meta = json.loads(raw["meta.json"])
            image = raw.get("image.png", raw.get("image.npy"))
            out[key] = {
                "raw": {"__key__": key, **raw},
                "bytes": sum(_tar_bytes(len(v)) for v in raw.values()),
                "image_bytes": len(image),
                "modality": meta.get("modality"),
            }
    return out


def _read_rate(root: Path, repeats: int) -> tuple[float, float]:
    """Samples per wall second and per CPU second of tar streaming + decoding to float32 (the read path)."""
    urls = load_manifest(root).urls()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for raw in wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False):
            image = np.asarray(decode_sample(raw)["image"], dtype=np.float32)
            n += image.ndim > 0
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def _views_rate(root: Path, batches: int) -> tuple[float, float]:
    """Samples per wall second and per CPU second of the two-view stream (decode + augmentations), one process."""
    data = load_config(DataConfig, overrides=[f"shards=[{root}]", "batch_size=16", "num_workers=0", "splits=[train]"])
    stream = TwoViewStream(resolve_shard_sets(data), data, load_config(AugmentConfig, overrides=["size=96"]), 1, 0)
    it = iter(build_loader(stream, 0))
    next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    return batches * 16 / (time.perf_counter() - start), batches * 16 / (time.process_time() - cpu)


def _group(npy: dict, png: dict, keys: list[str]) -> dict:
    diff = 0.0
    for k in keys:
        a = np.asarray(decode_sample(npy[k]["raw"])["image"], dtype=np.float32)
        b = np.asarray(decode_sample(png[k]["raw"])["image"], dtype=np.float32)
        diff = max(diff, float(np.abs(a - b).max()))
    total = lambda d, field: sum(d[k][field] for k in keys)  # noqa: E731
    return {
        "samples": len(keys),
        "npy_bytes_per_sample": round(total(npy, "bytes") / len(keys)),
        "png_bytes_per_sample": round(total(png, "bytes") / len(keys)),
        "bytes_ratio": round(total(png, "bytes") / total(npy, "bytes"), 3),
        "image_bytes_ratio": round(total(png, "image_bytes") / total(npy, "image_bytes"), 3),
        "png_members": sum("image.png" in png[k]["raw"] for k in keys),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="96 px instead of 224 px, fewer timing repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "storage.json")
    args = parser.parse_args(argv)
    size, repeats, batches = (96, 2, 8) if args.quick else (224, 5, 16)
    run = BenchRun("storage", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        roots = {enc: _build(Path(tmp), size, enc) for enc in ("npy", "png")}
        groups: dict[str, dict] = {}
        timing_sets = {"CT": "dicom_modality", "MR": "mni152"}
        for name in roots["npy"]:
            npy, png = _samples(roots["npy"][name]), _samples(roots["png"][name])
            groups[name] = _group(npy, png, sorted(npy))
            if name == "dicom_modality":
                groups["CT"] = _group(npy, png, sorted(k for k in npy if npy[k]["modality"] == "CT"))
            if name == "mni152":
                groups["MR"] = groups[name]
        for label, name in timing_sets.items():
            rates: dict[str, list[float]] = defaultdict(list)
            for _ in range(repeats):  # alternate the encodings so load changes hit both
                for enc in ("npy", "png"):
                    for kind, rate in (
                        ("read", _read_rate(roots[enc][name], 1)),
                        ("views", _views_rate(roots[enc][name], batches)),
                    ):
                        rates[f"{kind}_{enc}"].append(rate[0])
                        rates[f"{kind}_{enc}_cpu"].append(rate[1])
            best = {k: max(v) for k, v in rates.items()}
            groups[label].update(
                {f"{k}_per_s": round(v, 1) for k, v in best.items()},
                decode_ratio=round(best["read_png_cpu"] / best["read_npy_cpu"], 3),
                pipeline_ratio=round(best["views_png_cpu"] / best["views_npy_cpu"], 3),
                decode_ratio_wall=round(best["read_png"] / best["read_npy"], 3),
                pipeline_ratio_wall=round(best["views_png"] / best["views_npy"], 3),
                timing_set=name,
            )
    for label in ("CT", "MR"):
        g = groups[label]
        run.target(f"{label}_bytes_ratio", g["bytes_ratio"], "<=", TARGETS["bytes_ratio"])
        run.target(f"{label}_pipeline_ratio", g["pipeline_ratio"], ">=", TARGETS["pipeline_ratio"])
        run.target(f"{label}_max_abs_diff", g["max_abs_diff"], "<=", TARGETS["max_abs_diff"])
    result = run.finish({"image_size": size, "groups": groups}, args.out)
    print(json.dumps({k: result[k] for k in ("groups", "met", "load_average")}, indent=1))
    return result


if __name__ == "__main__":
    main()
