"""The optional extras (``pip install 'mmvicreg[digits|plot|sweep|serve|interop|all]'``): importing what one of them installs, or
one line naming it. A leaf: every layer may import it."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_extra(module: str, extra: str, needs: str) -> ModuleType:
    """``importlib.import_module(module)``; when it fails, one ImportError line: ``needs`` (what wants it, e.g.
    ``"plotting needs matplotlib"``), why (not installed, or the import's own error) and
    ``pip install 'mmvicreg[<extra>]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or "").partition(".")[0] == module.partition(".")[0]
        why = "which is not installed" if missing else f"which cannot be imported ({e})"
        raise ImportError(f"{needs}, {why}: pip install 'mmvicreg[{extra}]'") from None
