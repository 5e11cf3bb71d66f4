"""Small configs and inputs shared by the model tests."""

import json
from pathlib import Path

import torch
from PIL import Image

CAPTIONS = [
    "a red circle left of a blue square",
    "a blue square left of a red circle",
    "two dogs run on the grass .",
    "a man rides a bike down the street",
    "a small green triangle above a large yellow star",
] * 4

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}

TINY_OPEN_CLIP = "mmvicreg-test-tiny"


def register_tiny_open_clip(tmp_dir: Path) -> str:
    """A CPU-sized open_clip architecture (same code paths as ViT-B-32, far fewer weights)."""
    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    path = tmp_dir / f"{TINY_OPEN_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return TINY_OPEN_CLIP


def images(n: int = 6, size: int = 40) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [
        Image.fromarray((torch.rand(size, size + 7, 3, generator=g) * 255).byte().numpy(), "RGB") for _ in range(n)
    ]


def image_batch(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size)
