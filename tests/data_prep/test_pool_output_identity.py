"""The process pool changes no output byte: the same shards, journal and manifest as one process, on real volumes.

Three bundled volumes (MNI152 2009a, nibabel's anatomical T1 and 4-D EPI) sliced along three axes at 32 px into
many small shards of every split, converted with ``workers=1`` (in-process) and ``workers=2`` (the pool). Both sets
are compared byte for byte, their manifests' ``sha256``/``bytes`` are checked against the files, and the shards are
checked against what ``webdataset.ShardWriter`` writes for the same samples in the same order.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest
import webdataset as wds

from data_prep.writer import TAR_MTIME, EncodedSample, ShardSetWriter
from lvmmed.data import samples

VOLUMES = ("mni152_t1", "t1_anatomical", "epi_4d")
OPTS = dict(modality="MR", axes=[0, 1, 2], image_size=32, shard_maxcount=23, name="pool")


@pytest.fixture(scope="module")
def volume_src(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("pool_src")
    for name in VOLUMES:
        shutil.copy(samples.path(name), src / Path(samples.path(name)).name)
    return src


def _files(out: Path) -> dict[str, bytes]:
    """Every file of a finished set except the manifest (its ``created`` time and ``workers`` differ)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != "manifest.json"}


def _manifest(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("created")
    manifest["config"].pop("workers")
    return manifest


def _members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


@pytest.mark.multiprocess
def test_pool_and_one_process_write_the_same_bytes(volume_src, tmp_path, convert_folder):
    one = convert_folder(volume_src, tmp_path / "one", "nifti", workers=1, **OPTS)
    two = convert_folder(volume_src, tmp_path / "two", "nifti", workers=2, **OPTS)
    assert one.n_tasks == two.n_tasks == len(VOLUMES)  # input files (each cut into axis tasks: work for both workers)
    files = _files(tmp_path / "one")
    shards = sorted(name for name in files if name.endswith(".tar"))
    assert {name.split("-")[0] for name in shards} == {"train", "val", "test"} and len(shards) >= 15
    assert files == _files(tmp_path / "two")  # shards, progress.json, failures.json
    assert _manifest(tmp_path / "one") == _manifest(tmp_path / "two")
    for record in json.loads((tmp_path / "two" / "manifest.json").read_text())["shards"]:
        data = files[record["name"]]
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted([*files, "manifest.json"])  # no leftovers


@pytest.mark.multiprocess
def test_pool_shards_are_what_webdataset_writes_for_the_same_samples(volume_src, tmp_path, convert_folder):
    out = tmp_path / "set"
    result = convert_folder(volume_src, out, "nifti", workers=2, **OPTS)
    for split in ("train", "val", "test"):
        ours = sorted(out.glob(f"{split}-*.tar"))
        batch: list[dict] = []
        for shard in ours:
            for name, data in _members(shard):
                key, field = name.split(".", 1)
                if not batch or batch[-1]["__key__"] != key:
                    batch.append({"__key__": key})
                batch[-1][field] = data
        assert len(batch) == result.manifest["counts"][split]
        sink = wds.ShardWriter(str(tmp_path / f"ref-{split}-%06d.tar"), maxcount=OPTS["shard_maxcount"],
                               encoder=False, mtime=TAR_MTIME, user="lvmmed", group="lvmmed", verbose=0)  # fmt: skip
        with sink:
            for sample in batch:
                sink.write(sample)
        reference = sorted(tmp_path.glob(f"ref-{split}-*.tar"))
        assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in reference]


@pytest.mark.multiprocess
def test_pool_run_interrupted_after_a_shard_resumes_to_the_same_bytes(volume_src, tmp_path, convert_folder,
                                                                      monkeypatch):  # fmt: skip
    convert_folder(volume_src, tmp_path / "straight", "nifti", workers=2, **OPTS)
    original, calls = ShardSetWriter._finish, {"n": 0}

    def crash_on_fourth(self, split, fname):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash while finishing a shard")
        return original(self, split, fname)

    monkeypatch.setattr(ShardSetWriter, "_finish", crash_on_fourth)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_folder(volume_src, crashed, "nifti", workers=2, **OPTS)
    monkeypatch.setattr(ShardSetWriter, "_finish", original)
    assert not (crashed / "manifest.json").exists() and len(list(crashed.glob("*.tar"))) == 3
    resumed = convert_folder(volume_src, crashed, "nifti", workers=2, **OPTS)
    assert resumed.resumed == 3 * OPTS["shard_maxcount"]  # three full shards kept, not rewritten
    assert _files(crashed) == _files(tmp_path / "straight")
    assert _manifest(crashed) == _manifest(tmp_path / "straight")


def test_the_shard_bytes_are_the_sha256_the_journal_records(tmp_path):
    """Hash while written (one process) and hash in the assembling worker must both be the hash of the file."""
    writer = ShardSetWriter(tmp_path, "fp", maxcount=3)
    for i in range(7):
        writer.write(EncodedSample(f"k{i}", "train", {"image.npy": bytes([i]) * (300 + 511 * i), "meta.json": b"{}"}))
    for record in writer.close():
        data = (tmp_path / record["name"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        assert len(data) % tarfile.RECORDSIZE == 0
        assert [n for n, _ in _members(tmp_path / record["name"])][-1].endswith(".meta.json")


def _kill_this_process(task, cfg):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.multiprocess
def test_a_worker_that_dies_stops_the_run_instead_of_hanging(volume_src, tmp_path, monkeypatch):
    """A worker killed mid-run (the OOM killer's way) loses its task: a clear error, no manifest, no hang."""
    from data_prep.engine import run_tasks
    from data_prep.plan_files import plan_nifti
    from data_prep.pool_writer import WorkerDied
    from lvmmed.errors import classify

    module = types.ModuleType("lvmmed_test_dying_processor")
    module.die = _kill_this_process
    monkeypatch.setitem(sys.modules, module.__name__, module)  # forked workers inherit it
    cfg = _cfg(workers=2)
    tasks, _, _ = plan_nifti(volume_src, cfg)
    tasks[4].processor = f"{module.__name__}:die"
    started = time.monotonic()
    with pytest.raises(WorkerDied, match=r"worker process died \(killed by signal 9 \(SIGKILL") as died:
        run_tasks(tasks, cfg, tmp_path / "out", name="pool", source="t", modality="MR", workers=2, progress=False)
    assert time.monotonic() - started < 120
    code, _, fix = classify(died.value)  # the CLI's contract: one line, exit 1, how to go on
    assert code == 1 and "resume" in fix
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.multiprocess
def test_a_full_disk_in_a_worker_stops_the_run_and_the_rerun_resumes(volume_src, tmp_path, monkeypatch,
                                                                     convert_folder):  # fmt: skip
    import data_prep.pool_writer as pool_writer

    real, calls = pool_writer.write_runs, {"n": 0}

    def full_after_a_while(tars, runs):
        calls["n"] += 1  # counted per worker (each has its own copy after the fork)
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), runs[0][0])
        return real(tars, runs)

    monkeypatch.setattr(pool_writer, "write_runs", full_after_a_while)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device"):
        convert_folder(volume_src, out, "nifti", workers=2, **OPTS)
    assert not (out / "manifest.json").exists()
    kept = [s["name"] for s in json.loads((out / "progress.json").read_text())["shards"]]
    assert all((out / name).is_file() for name in kept)  # what the journal lists is complete, the rest is redone
    monkeypatch.setattr(pool_writer, "write_runs", real)
    convert_folder(volume_src, out, "nifti", workers=2, **OPTS)
    convert_folder(volume_src, tmp_path / "straight", "nifti", workers=1, **OPTS)
    assert _files(out) == _files(tmp_path / "straight")


def _cfg(**overrides) -> dict:
    from data_prep.convert import _yaml_value, resolve_config
    from lvmmed.config import to_dict

    items = [f"{k}={_yaml_value(v)}" for k, v in {"format": "nifti", **OPTS, **overrides}.items()]
    return to_dict(resolve_config(None, None, items))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_9_of_a_pool_run_then_resume_gives_the_same_bytes(volume_src, tmp_path, convert_folder):
    """The main process SIGKILLed while workers write shards: its workers go too, and a re-run resumes exactly."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "data_prep", "convert", "--format", "nifti", "--src", str(volume_src), "--out",
            str(out), "--workers", "2", "--quiet", "modality=MR", "axes=[0,1,2]", "image_size=96", "shard_maxcount=40",
            "name=pool"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress, deadline = out / "progress.json", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(progress.read_text()).get("shards"):
                break  # a shard is complete: kill while the workers write the next ones
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the conversion finished before it could be killed"
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers), "orphaned workers kept running"
    assert not (out / "manifest.json").exists()
    done = subprocess.run(argv, env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed: kept" in done.stdout
    straight = convert_folder(volume_src, tmp_path / "straight", "nifti", workers=1, modality="MR", axes=[0, 1, 2],
                              image_size=96, shard_maxcount=40, name="pool")  # fmt: skip
    assert straight.manifest["counts"]["total"] > 3 * 40
    assert _files(out) == _files(tmp_path / "straight")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
