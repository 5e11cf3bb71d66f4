"""``mmvicreg env``: what a bug report needs, as ``transformers env`` and ``accelerate env`` print it.

    mmvicreg env [--json OUT]

The versions of Python, the platform, mmvicreg, torch (its CUDA and the devices it sees), torchvision,
accelerate, transformers, open_clip, timm, datasets, webdataset, FAISS (and whether it has GPUs), OpenCV and
the optional extras; a library that is not installed is reported as such, never as an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
from typing import Any

# distribution name -> import name, in the order printed
LIBRARIES = {
    "torchvision": "torchvision",
    "accelerate": "accelerate",
    "transformers": "transformers",
    "open_clip_torch": "open_clip",
    "timm": "timm",
    "datasets": "datasets",
    "webdataset": "webdataset",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub",
    "opencv-python-headless": "cv2",
    "scikit-learn": "sklearn",
    "matplotlib": "matplotlib",
    "optuna": "optuna",
}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "torch CUDA build": torch.version.cuda or "none (CPU build)",
        "CUDA devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bf16 on the GPU": bool(cuda and torch.cuda.is_bf16_supported()),
        "torch threads": torch.get_num_threads(),
    }


def _faiss() -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"faiss": "not installed"}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0  # CPU builds may lack the function
    return {"faiss": getattr(faiss, "__version__", "unknown"), "faiss GPUs": gpus}


def environment() -> dict[str, Any]:
    """The report as a mapping: name -> version or value."""
    from mmvicreg.version import __version__

    report: dict[str, Any] = {
        "mmvicreg": __version__,
        "Python": platform.python_version(),
        "platform": platform.platform(),
        **_torch(),
    }
    report.update({name: _version(name) for name in LIBRARIES})
    report.update(_faiss())
    return report


def run_env(args: argparse.Namespace) -> int:
    """Print the report, one ``- name: value`` line each (paste it into an issue); ``--json`` writes it too."""
    report = environment()
    print("\n".join(f"- {name}: {value}" for name, value in report.items()))
    if args.json:
        from mmvicreg.files import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


def add_env_command(subparsers: Any) -> None:
    """Register ``env`` on the top-level ``subparsers``; the parsed args carry ``run=run_env``."""
    from mmvicreg.cli.common import HelpFormatter

    p = subparsers.add_parser("env", help="print the versions of Python, torch, CUDA and the libraries (for bug "
                                          "reports)", formatter_class=HelpFormatter)
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(run=run_env)
