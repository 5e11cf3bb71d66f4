"""Global-batch statistics with 2 CPU processes (gloo) equal one process on the whole batch."""

import subprocess
import sys

import torch

from mmvicreg import vicreg_loss
from mmvicreg.distributed import gather_with_grad, is_distributed

from tests.helpers import REPO_ROOT


def test_gather_is_identity_on_one_process():
    x = torch.randn(3, 4)
    assert not is_distributed()
    assert gather_with_grad(x) is x


def test_two_ranks_equal_one_process(tmp_path):
    world = 2
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.dist_worker", str(r), str(world), str(init), str(tmp_path)],
            cwd=REPO_ROOT,
        )
        for r in range(world)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    g = torch.Generator().manual_seed(0)
    za = torch.randn(16, 48, generator=g, dtype=torch.float64).requires_grad_()
    zb = (torch.randn(16, 48, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    single = vicreg_loss(za, zb, variance_weight=(25.0, 5.0))
    single.loss.backward()

    mean_loss = sum(r["loss"] for r in results) / world
    torch.testing.assert_close(mean_loss, single.loss.detach(), rtol=1e-12, atol=0)
    for rank, r in enumerate(results):
        rows = slice(rank * 8, (rank + 1) * 8)
        torch.testing.assert_close(r["ga"] / world, za.grad[rows], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(r["gb"] / world, zb.grad[rows], rtol=1e-10, atol=1e-14)
    # The global statistics matter: each rank's loss differs from a purely local loss.
    local = vicreg_loss(za[:8].detach(), zb[:8].detach(), variance_weight=(25.0, 5.0)).loss
    assert not torch.isclose(results[0]["loss"], local)
