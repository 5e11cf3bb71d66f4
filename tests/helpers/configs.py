"""Tiny training configs for the tests: seconds on a CPU."""

from typing import Any


def tiny_config(output_dir, **train: Any) -> dict[str, Any]:
    """An image–text run on 64 shapes scenes, BatchNorm-free (LayerNorm ViT, GRU, one-Linear expanders)."""
    return {
        "output_dir": str(output_dir),
        "branches": {
            "image": {
                "encoder": {"name": "test_vit", "image_size": 16, "patch_size": 8},
                "expander": "32",
                "transform": {"train": "eval", "eval": "eval", "size": 16},
            },
            "caption": {"encoder": {"name": "gru", "word_dim": 16, "hidden_dim": 32}, "expander": "32"},
        },
        "data": {
            "train": {"format": "shapes", "split": "train", "num_images": 64, "size": 16},
            "eval": {"format": "shapes", "split": "test", "num_images": 20, "size": 16},
        },
        "train": {
            "batch_size": 16,
            "epochs": 1,
            "max_steps": 6,
            "checkpoint_every": 3,
            "seed": 0,
            "log_every": 1,
            "rankme_every": 2,
            "progress": False,
            "optimizer": {"name": "adamw", "lr": 0.001},
            **train,
        },
    }
