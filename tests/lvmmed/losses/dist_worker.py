"""One rank of the 2-process gloo check in ``test_distributed.py`` (run as a script, not collected by pytest).

Usage: ``python dist_worker.py RANK WORLD_SIZE PORT OUT_DIR``. Each rank projects its half of a fixed batch, runs
``GraphMatchingLoss(gather_distributed=True)``, averages the projector gradients as DDP does, and saves the result.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def main() -> None:
    rank, world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        sys.path.insert(0, sys.argv[5])
        from dist_common import make_problem

        x0, x1, projector, loss_fn = make_problem(gather=True)
        local = x0.shape[0] // world
        rows = slice(rank * local, (rank + 1) * local)
        z0 = projector(x0[rows])
        z0.retain_grad()
        loss, info = loss_fn(z0, projector(x1[rows]))
        loss.backward()
        grads = {}
        for name, param in [*projector.named_parameters(), *loss_fn.named_parameters()]:
            grad = param.grad.clone()
            dist.all_reduce(grad)
            grads[name] = grad / world  # DDP averages gradients over ranks
        torch.save(
            {
                "world_size": dist.get_world_size(),
                "rank": dist.get_rank(),
                "loss": loss.detach(),
                "info": info,
                "grads": grads,
                "z0_grad": z0.grad,
            },
            f"{out_dir}/rank{rank}.pt",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
