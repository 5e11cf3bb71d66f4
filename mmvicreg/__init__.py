"""mmvicreg: train any set of encoders with VICReg and evaluate what they learned.

The public names load on first use (PEP 562 ``__getattr__``), so ``import mmvicreg`` and the command line's
``--help``, ``--version`` and config errors answer without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmvicreg.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "Branch": "mmvicreg.model",
    "JointEmbedding": "mmvicreg.model",
    "VICRegLoss": "mmvicreg.objective",
    "VICRegOutput": "mmvicreg.objective",
    "covariance_term": "mmvicreg.objective",
    "encode": "mmvicreg.data.encoding",
    "invariance_term": "mmvicreg.objective",
    "variance_term": "mmvicreg.objective",
    "vicreg_loss": "mmvicreg.objective",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmvicreg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
