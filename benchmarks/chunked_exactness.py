"""The chunked step's gradients against one autograd graph over the same chunks, on a device (CUDA included).

    python benchmarks/chunked_exactness.py --device cuda

The CPU tests check this in float64 (tests/train/test_chunked.py); this script runs the same comparison where
the random state that must be replayed is the GPU's (dropout and drop path in a ViT drawn on the device), in
float32 and under bf16 autocast, and prints the largest relative gradient gap over the model's tensors.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch


def gaps(device: str, precision: str) -> float:
    from accelerate import Accelerator

    from mmvicreg.config import LossConfig
    from mmvicreg.model import JointEmbedding
    from mmvicreg.objective import build_objective
    from mmvicreg.train.chunked import cached_forward_backward

    vit = {"name": "vit_small_patch16_224", "image_size": 64, "drop_path_rate": 0.2, "proj_drop_rate": 0.1}
    spec = {"image": {"encoder": vit, "expander": "1024-1024", "expander_norm": "layer"},
            "caption": {"encoder": {"name": "gru", "word_dim": 64, "hidden_dim": 256}, "expander": "1024-1024",
                        "expander_norm": "layer"}}
    captions = [f"a red circle and a blue square number {i}" for i in range(300)]
    torch.manual_seed(0)
    model = JointEmbedding.from_config(spec, captions=captions).to(device)
    reference = JointEmbedding.from_config(spec, captions=captions).to(device)
    reference.load_state_dict(model.state_dict())
    tokens = torch.stack([model.branch("caption").tokenizer.encode(c) for c in captions[:256]])
    batch = {"image": torch.randn(256, 3, 64, 64, device=device), "caption": tokens.to(device)}
    objective = build_objective(LossConfig(), spec).to(device)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)

    torch.manual_seed(1)
    with accelerator.autocast():
        parts = [reference({k: v[i : i + 64] for k, v in batch.items()}) for i in range(0, 256, 64)]
    objective({b: torch.cat([p[b] for p in parts]) for b in spec}).loss.backward()
    torch.manual_seed(1)
    run = SimpleNamespace(accelerator=accelerator, model=model, objective=objective, vcreg=None)
    cached_forward_backward(run, batch, 64)
    worst = 0.0
    for p, q in zip(model.parameters(), reference.parameters()):
        if q.grad is not None and float(q.grad.norm()) > 0:
            worst = max(worst, float((p.grad - q.grad).norm() / q.grad.norm()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="no", choices=["no", "bf16"])
    args = p.parse_args()
    print(f"{args.device} {args.precision}: largest relative gradient gap, chunked vs one graph over the same "
          f"chunks (dropout + drop path replayed): {gaps(args.device, args.precision):.2e}")


if __name__ == "__main__":
    main()
