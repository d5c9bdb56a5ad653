"""The ``fal`` provider type (fal.ai): its backend, :class:`FalBackend`, and everything it
alone knows (parameter translation, wire calls, error mapping).

The backend module is imported on first use of one of its names, so the registry and the
config can import this package's lighter parts without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genrouter.backends.fal._backend import DEFAULT_BASE_URL as DEFAULT_BASE_URL
    from genrouter.backends.fal._backend import IMAGE_SIZE_PRESETS as IMAGE_SIZE_PRESETS
    from genrouter.backends.fal._backend import FalBackend as FalBackend

__all__ = ["DEFAULT_BASE_URL", "IMAGE_SIZE_PRESETS", "FalBackend"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module("genrouter.backends.fal._backend")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
