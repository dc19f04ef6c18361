"""Which optional modules (the ``text`` and ``image`` extras) are importable, without importing them."""

from __future__ import annotations

import importlib.util


def missing_modules(*modules: str) -> list[str]:
    """The names among ``modules`` that ``importlib.util.find_spec`` cannot find (empty: all installed)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing
