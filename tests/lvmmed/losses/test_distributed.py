"""The distributed gather gives the same loss and gradients as one process holding the whole batch (2 gloo ranks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dist_common import make_problem  # noqa: E402

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multiprocess
def test__two_gloo_ranks_match_single_process_full_batch(tmp_path):
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "dist_worker.py"), str(r), str(WORLD), port, str(tmp_path), str(HERE)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(WORLD)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["world_size"] for r in results] == [WORLD, WORLD]
    assert sorted(r["rank"] for r in results) == [0, 1]

    x0, x1, projector, loss_fn = make_problem(gather=False)
    z0 = projector(x0)
    z0.retain_grad()
    loss, info = loss_fn(z0, projector(x1))
    loss.backward()
    assert info["num_nodes"] == x0.shape[0] == results[0]["info"]["num_nodes"]
    assert 0 < info["match_acc"] < 1, "pick a problem where the matching is partly wrong"
    local = x0.shape[0] // WORLD
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["loss"], loss.detach())
        assert result["info"]["match_acc"] == info["match_acc"]
        for name, param in [*projector.named_parameters(), *loss_fn.named_parameters()]:
            torch.testing.assert_close(result["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
        # Before DDP's averaging, each rank's local embeddings carry world_size × the full-batch gradient.
        rows = slice(rank * local, (rank + 1) * local)
        torch.testing.assert_close(result["z0_grad"] / WORLD, z0.grad[rows], rtol=1e-4, atol=1e-6)
