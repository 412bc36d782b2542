"""Pretraining from shards served over HTTP, and a real two-"machine" run on this box.

The two-machine test starts two ``accelerate launch --config_file configs/accelerate/multi_node_cpu.yaml``
processes with ``--num_machines 2 --machine_rank {0,1} --main_process_ip 127.0.0.1`` (CPU/gloo:
``ACCELERATE_USE_CPU=1`` with ``distributed_type: MULTI_GPU``; ``--cpu`` would silently start one process), each
with its own output directory like machines without a shared disk, both reading the shard set from a loopback HTTP
server. Only 127.0.0.1 is ever used.
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
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pretraining_steps_from_an_http_shard_set(tmp_path, bundled_shards, shard_server, tiny_overrides, run_pretrain):
    root = Path(bundled_shards["mni152"])
    url = f"{shard_server(root.parent)}/{root.name}/"
    result = run_pretrain(tiny_overrides(tmp_path / "run", url, "max_steps=2", "checkpoint_every=0"))
    assert result["step"] == 2
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["data_skips"]) for r in rows] == [0.0, 0.0]
    assert "http://127.0.0.1" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_machines_over_loopback_gather_one_graph_and_export_the_same_weights(
    tmp_path, bundled_shards, shard_server, tiny_overrides
):
    root = Path(bundled_shards["mni152"])
    url = f"{shard_server(root.parent)}/{root.name}/"
    port = _free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    procs = []
    for machine in (0, 1):
        argv = tiny_overrides(
            tmp_path / f"machine{machine}",
            url,
            "max_steps=3",
            "checkpoint_every=0",
            "loss.graph_matching.gather_distributed=true",
            "export_at_end=true",
            "data.resampled=false",
        )
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(REPO / "configs" / "accelerate" / "multi_node_cpu.yaml"),
            "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--dynamo_backend", "no",
            "-m", "pretrain", *argv,
        ]  # fmt: skip
        log = (tmp_path / f"machine{machine}.log").open("w")
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [p.wait(timeout=240) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = [(tmp_path / f"machine{m}.log").read_text()[-3000:] for m in (0, 1)]
    assert codes == [0, 0], logs

    ranks = [json.loads((tmp_path / f"machine{m}" / "processes" / f"rank{m}.json").read_text()) for m in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    assert {r["backend"] for r in ranks} == {"gloo"} and ranks[0]["pid"] != ranks[1]["pid"]
    rows = list(csv.DictReader((tmp_path / "machine0" / "metrics.csv").open()))
    assert {float(r["num_nodes"]) for r in rows} == {16.0}  # one graph over both machines' batches (2 x 8)
    weights = [load_file(tmp_path / f"machine{m}" / "export" / "model.safetensors") for m in (0, 1)]
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 10
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])
