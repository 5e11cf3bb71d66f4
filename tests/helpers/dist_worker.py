"""One rank of a gloo test run: ``python -m tests.helpers.dist_worker RANK WORLD INIT_FILE OUT_DIR``.

Computes vicreg_loss on this rank's rows of a fixed global batch and saves the loss and input gradients.
"""

import os
import sys

import torch
import torch.distributed as dist

from mmvicreg import vicreg_loss


def main() -> None:
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    za = torch.randn(16, 48, generator=g, dtype=torch.float64)
    zb = torch.randn(16, 48, generator=g, dtype=torch.float64) * 0.3
    rows = slice(rank * 16 // world, (rank + 1) * 16 // world)
    la, lb = za[rows].clone().requires_grad_(), zb[rows].clone().requires_grad_()
    out = vicreg_loss(la, lb, variance_weight=(25.0, 5.0))
    out.loss.backward()
    torch.save({"loss": out.loss.detach(), "ga": la.grad, "gb": lb.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    # destroy_process_group() on gloo can abort the process at exit on torch 2.14; leave without it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
