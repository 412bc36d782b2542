"""Probes that need a real process: a decompression bomb under a memory cap, and kill -9 in the middle of a
conversion followed by a resume that must give byte-identical shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvmmed.data import samples

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_rle_dicom_declaring_60000_squared_is_refused_before_allocating(tmp_path):
    """A ~8 KB RLE file declaring 60000 x 60000 pixels (6.7 GiB) must fail by name, under a 1.5 GiB memory cap."""
    import pydicom
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(samples.path("ct_small"))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.Rows = ds.Columns = 60000
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb)
    assert bomb.stat().st_size < 64_000
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from lvmmed.data.readers.dicom_file import decode_file\n"
        "from lvmmed.data.readers.record import ReaderError\n"
        "try:\n"
        "    decode_file(sys.argv[1])\n"
        "except ReaderError as err:\n"
        "    print(err)\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, env=ENV,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max_pixels_per_frame" in proc.stdout and "refused before decoding" in proc.stdout


def _shard_hashes(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return {s["name"]: s["sha256"] for s in manifest["shards"]}


def _convert_argv(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "data_prep", "convert", "--format", "nifti", "--src", str(src), "--out", str(out),
            "--workers", "1", "--quiet", "shard_maxcount=4", "image_size=32", "modality=MR"]  # fmt: skip


def test_kill_9_mid_conversion_then_resume_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("t1_anatomical", "mni152_t1", "epi_4d"):
        shutil.copy(samples.path(name), src / Path(samples.path(name)).name)
    straight = subprocess.run(_convert_argv(src, tmp_path / "straight"), env=ENV, cwd=REPO, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_convert_argv(src, out), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    progress, deadline = out / "progress.json", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(progress.read_text()).get("shards"):
                break  # at least one shard is complete: kill in the middle of the rest
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the conversion finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "manifest.json").exists()  # an interrupted set never looks complete
    assert json.loads(progress.read_text())["shards"]  # completed shards were kept for the resume
    done = subprocess.run(_convert_argv(src, out), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _shard_hashes(out) == _shard_hashes(tmp_path / "straight")
    assert len(_shard_hashes(out)) > 2


def _can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {tmp_path} {tmp_path}"],
                           capture_output=True, timeout=30)  # fmt: skip
    return probe.returncode == 0


def test_output_on_a_real_read_only_mount(tmp_path):
    """``--out`` on a read-only bind mount (root ignores chmod, a mount does not): one line, exit 1."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _can_mount_read_only(ro):
        pytest.skip("no mount namespace here (unshare -m); the in-process probe simulates EROFS instead")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(samples.path("ct_small"), src / "ct.dcm")
    python = f"{sys.executable} -m data_prep convert --format dicom --src {src} --out {ro / 'out'} --quiet"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {ro} {ro} && exec {python}"],
                          env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "read-only file system" in proc.stderr and "Traceback" not in proc.stderr
    assert (src / "ct.dcm").is_file()


FAILING_RANK = """
import errno, sys
import accelerate
real, calls = accelerate.Accelerator.save_state, []
def save_state(self, directory, **kw):
    calls.append(directory)
    if self.process_index == 1 and len(calls) == 2:  # rank 1 finds its disk full at the second checkpoint
        raise OSError(errno.ENOSPC, "No space left on device", directory)
    return real(self, directory, **kw)
accelerate.Accelerator.save_state = save_state
from pretrain.__main__ import cli
sys.exit(cli(sys.argv[1:]))
"""


@pytest.mark.multiprocess
def test_a_full_disk_on_one_rank_stops_every_rank_without_hanging(mni_shards, tiny_pretrain_args, tmp_path):
    import socket

    from pretrain import checkpoint as ckpt

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *tiny_pretrain_args,
           f"output_dir={out}", f"data.shards=[{mni_shards}]", "max_steps=2", "checkpoint_every=1"]  # fmt: skip
    env = {**ENV, "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("python -m pretrain: error: could not save checkpoint checkpoint_00000002") == 2
    assert "no space left on device" in proc.stderr
    previous = ckpt.checkpoints_root(out) / "checkpoint_00000001"
    assert ckpt.checkpoint_problem(previous) is None
    assert not (ckpt.checkpoints_root(out) / "checkpoint_00000002.tmp").exists()
