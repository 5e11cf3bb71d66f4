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
VCReg's intermediate-layer penalty (``loss.vcreg_layers``) is computed per chunk and averaged over chunks. An
objective's targets (``supervised``'s labels, :mod:`mmvicreg.train.targets`) go to it whole in 2, and its
``∂L/∂h`` is cached like ``∂L/∂z``: exact.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch
from torch import nn

from mmvicreg.train.targets import branch_outputs, call_objective, split_targets, target_fields

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

    ``zs`` are the branch outputs the objective read (``h`` for an objective that reads representations); the
    objective's targets (:mod:`mmvicreg.train.targets`) are taken off the batch first. Chunked when
    ``train.micro_batch_size`` is smaller than the process's batch (module docstring).
    """
    size = run.config.train.micro_batch_size
    inputs, targets = split_targets(batch, target_fields(run.objective))
    n = next(iter(inputs.values())).shape[0]
    if size is not None and size < n:
        return cached_forward_backward(run, batch, size)
    accelerator = run.accelerator
    with accelerator.autocast():
        zs = branch_outputs(run.model, inputs, run.objective)
    out = call_objective(run.objective, zs, targets)
    if run.vcreg is not None:
        penalty = run.vcreg.loss()
        out = with_vcreg(out, penalty, run.vcreg.last_terms)
    accelerator.backward(out.loss)
    return out, zs


def with_vcreg(out: Any, penalty: torch.Tensor, layer_terms: Mapping[str, torch.Tensor]) -> Any:
    """``out`` with the VCReg penalty added to its loss, and logged: ``vcreg`` (the whole penalty) and
    ``vcreg/<layer>`` (each hooked layer's share) among its ``terms``."""
    terms = {**out.terms, "vcreg": penalty.detach(), **{k: v.detach() for k, v in layer_terms.items()}}
    return out._replace(loss=out.loss + penalty, terms=terms)


def cached_forward_backward(
    run: Any, batch: Mapping[str, torch.Tensor], size: int
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The gradient-cache step over chunks of ``size`` rows (module docstring); returns (output, detached zs)."""
    accelerator, model, objective = run.accelerator, run.model, run.objective
    inputs, targets = split_targets(batch, target_fields(objective))  # targets go whole to the objective
    n = next(iter(inputs.values())).shape[0]
    chunks = [{k: v[i : i + size] for k, v in inputs.items()} for i in range(0, n, size)]

    # 1. Embeddings without gradients. Running statistics (BatchNorm) are put back afterwards, so that only the
    #    forward with gradients in 3 moves them: once per chunk, as an unchunked step moves them once per batch.
    buffers = [b.detach().clone() for b in model.buffers()]
    states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(accelerator.device))
            with accelerator.autocast():
                parts.append(branch_outputs(model, chunk, objective))
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    after = RandomState(accelerator.device)

    # 2. The objective on the whole batch; its backward stops at the embeddings (leaves) and the objective's
    #    own parameters. Under fp16 the gradient is scaled, and stays scaled through 3, as an unchunked one would.
    zs = {name: torch.cat([p[name] for p in parts]).requires_grad_() for name in parts[0]}
    del parts
    out = call_objective(objective, zs, targets)
    accelerator.backward(out.loss)
    grads = {name: z.grad if z.grad is not None else torch.zeros_like(z) for name, z in zs.items()}

    # 3. Each chunk again, with gradients, under the random state of its first forward.
    scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0
    penalty = torch.zeros((), device=out.loss.device)
    layer_terms: dict[str, torch.Tensor] = {}
    for i, (chunk, state) in enumerate(zip(chunks, states)):
        state.restore()
        last = i == len(chunks) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                zc = branch_outputs(model, chunk, objective)
            rows = slice(i * size, (i + 1) * size)
            trained = [name for name in zc if zc[name].requires_grad]  # a wholly frozen branch has nothing to train
            tensors, cached = [zc[name] for name in trained], [grads[name][rows] for name in trained]
            if run.vcreg is not None:
                term = run.vcreg.loss() / len(chunks)
                penalty = penalty + term.detach()
                for k, v in run.vcreg.last_terms.items():
                    layer_terms[k] = layer_terms.get(k, 0) + v / len(chunks)
                tensors.append(term * scale)
                cached.append(None)
            torch.autograd.backward(tensors, cached)
    after.restore()
    if run.vcreg is not None:
        out = with_vcreg(out, penalty, layer_terms)
    return out, {name: z.detach() for name, z in zs.items()}


def batch_norm_branches(model: nn.Module) -> list[str]:
    """The branches of a JointEmbedding whose encoder or expander holds a BatchNorm layer."""
    return [
        name for name, branch in model.branches.items()
        if any(isinstance(m, BATCH_NORMS) and m.training for m in branch.modules())
    ]
