"""Two real DDP ranks on CPU (gloo) run the GM loss over the globally gathered batch and write a checkpoint.

``accelerate launch --cpu --num_processes 2`` silently starts ONE process (accelerate 1.x), so this uses torchrun with
``ACCELERATE_USE_CPU=1`` and asserts the world size and distinct ranks from files each rank writes.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_gloo_ranks_gather_the_graph_and_checkpoint(tmp_path, bundled_shards, tiny_overrides):
    out = tmp_path / "ddp"
    argv = tiny_overrides(
        out,
        bundled_shards["mni152"],
        "max_steps=3",
        "checkpoint_every=0",
        "loss.graph_matching.gather_distributed=true",
        "export_at_end=true",
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "pretrain",
        *argv,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads(p.read_text()) for p in sorted((out / "processes").glob("rank*.json"))]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert len({r["pid"] for r in ranks}) == 2 and {r["backend"] for r in ranks} == {"gloo"}

    state = ckpt.read_trainer_state(ckpt.find_latest(out))
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["data_positions"]) == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {float(r["num_nodes"]) for r in rows} == {16.0}  # 2 ranks x batch 8 in one graph
    assert (out / "export" / "model.safetensors").is_file()
