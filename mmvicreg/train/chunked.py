"""The forward and backward of one step, whole or in micro-batches that still give the objective the whole batch.

Whole (``train.micro_batch_size`` unset): forward, objective, backward.

Chunked (the gradient cache, Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): with each process's batch X split into chunks X_1..X_k,

1. ``z_i = f(X_i)`` for every chunk without gradients (no activations kept), remembering each chunk's random state;
2. ``L(z)`` on the concatenated ``z`` (gathered across processes inside the objective, as always), and
   ``g = ∂L/∂z`` by one backward through the objective alone;
3. for each chunk, ``f(X_i)`` again with gradients under the same random state (the same dropout and
   stochastic-depth draws), and a backward of ``z_i`` with the cached gradient ``g_i``:
   ``∂L/∂θ = Σ_i (∂z_i/∂θ)ᵀ g_i``, the unchunked gradient up to summation order.

Peak memory is one chunk's activations plus the embeddings; the price is one extra forward. Under DDP only the
last chunk's backward synchronises gradients (``accelerator.no_sync`` for the others). What is not exact, by
nature: a BatchNorm layer sees one chunk at a time (as each process's BatchNorm does under DDP without
SyncBatchNorm; ``expander_norm: layer | none`` and a BatchNorm-free encoder make a branch exact end to end), and
VCReg's intermediate-layer penalty (``loss.vcreg_layers``) is computed per chunk and averaged over chunks.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch
from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class RandomState:
    """The CPU generator's state and, on CUDA, the device generator's: what dropout draws from."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def forward_backward(run: Any, batch: Mapping[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
    """Forward, objective (+ the VCReg penalty) and backward of one batch; returns (objective output, zs).

    Chunked when ``train.micro_batch_size`` is smaller than the process's batch (module docstring).
    """
    size = run.config.train.micro_batch_size
    n = next(iter(batch.values())).shape[0]
    if size is not None and size < n:
        return cached_forward_backward(run, batch, size)
    accelerator = run.accelerator
    with accelerator.autocast():
        zs = run.model(batch)
    out = run.objective(zs)
    if run.vcreg is not None:
        out = out._replace(loss=out.loss + run.vcreg.loss())
    accelerator.backward(out.loss)
    return out, zs


def cached_forward_backward(
    run: Any, batch: Mapping[str, torch.Tensor], size: int
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The gradient-cache step over chunks of ``size`` rows (module docstring); returns (output, detached zs)."""
    accelerator, model = run.accelerator, run.model
    n = next(iter(batch.values())).shape[0]
    chunks = [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, n, size)]

    # 1. Embeddings without gradients. Running statistics (BatchNorm) are put back afterwards, so that only the
    #    forward with gradients in 3 moves them: once per chunk, as an unchunked step moves them once per batch.
    buffers = [b.detach().clone() for b in model.buffers()]
    states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(accelerator.device))
            with accelerator.autocast():
                parts.append(model(chunk))
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    after = RandomState(accelerator.device)

    # 2. The objective on the whole batch; its backward stops at the embeddings (leaves) and the objective's
    #    own parameters. Under fp16 the gradient is scaled, and stays scaled through 3, as an unchunked one would.
    zs = {name: torch.cat([p[name] for p in parts]).requires_grad_() for name in parts[0]}
    del parts
    out = run.objective(zs)
    accelerator.backward(out.loss)
    grads = {name: z.grad if z.grad is not None else torch.zeros_like(z) for name, z in zs.items()}

    # 3. Each chunk again, with gradients, under the random state of its first forward.
    scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0
    penalty = torch.zeros((), device=out.loss.device)
    for i, (chunk, state) in enumerate(zip(chunks, states)):
        state.restore()
        last = i == len(chunks) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                zc = model(chunk)
            rows = slice(i * size, (i + 1) * size)
            trained = [name for name in zc if zc[name].requires_grad]  # a wholly frozen branch has nothing to train
            tensors, cached = [zc[name] for name in trained], [grads[name][rows] for name in trained]
            if run.vcreg is not None:
                term = run.vcreg.loss() / len(chunks)
                penalty = penalty + term.detach()
                tensors.append(term * scale)
                cached.append(None)
            torch.autograd.backward(tensors, cached)
    after.restore()
    if run.vcreg is not None:
        out = out._replace(loss=out.loss + penalty)
    return out, {name: z.detach() for name, z in zs.items()}


def batch_norm_branches(model: nn.Module) -> list[str]:
    """The branches of a JointEmbedding whose encoder or expander holds a BatchNorm layer."""
    return [
        name for name, branch in model.branches.items()
        if any(isinstance(m, BATCH_NORMS) and m.training for m in branch.modules())
    ]
