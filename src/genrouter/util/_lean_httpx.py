"""Keep ``import httpx`` from loading httpx's command-line tool.

httpx's ``__init__`` imports ``httpx._main`` (its CLI), which imports click and rich
whenever they are installed, and genrouter's own CLI installs them: ~90 modules, ~5 MB
of memory and ~0.15 s of import time in every process that routes a request, for a tool
genrouter never runs (encode/httpx#3547 moves the import; until it lands upstream, this
does it here). A placeholder ``httpx._main`` stands in until something calls
``httpx.main``, which then loads and runs the real one. Importing this module installs
it (``genrouter/__init__`` imports it first).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["defer_httpx_cli"]

_NAME = "httpx._main"


def _main(*args: Any, **kwargs: Any) -> Any:
    """``httpx.main``: load the real CLI module in place of the placeholder, then run it."""
    if getattr(sys.modules.get(_NAME), "__genrouter_placeholder__", False):
        del sys.modules[_NAME]
    return importlib.import_module(_NAME).main(*args, **kwargs)


def defer_httpx_cli() -> None:
    """Install the placeholder, unless httpx (or its CLI) is already imported."""
    if "httpx" in sys.modules or _NAME in sys.modules:
        return
    placeholder = types.ModuleType(
        _NAME, "genrouter's stand-in for httpx's CLI; see genrouter.util._lean_httpx"
    )
    placeholder.__genrouter_placeholder__ = True  # type: ignore[attr-defined]
    placeholder.main = _main  # type: ignore[attr-defined]
    sys.modules[_NAME] = placeholder


defer_httpx_cli()
