"""The ``replicate`` provider type (Replicate): its backend, :class:`ReplicateBackend`, and everything it
alone knows (parameter translation, wire calls, error mapping).

The backend module is imported on first use of one of its names, so the registry and the
config can import this package's lighter parts without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genrouter.backends.replicate._backend import FLUX_ASPECT_RATIOS as FLUX_ASPECT_RATIOS
    from genrouter.backends.replicate._backend import MAX_INLINE_BYTES as MAX_INLINE_BYTES
    from genrouter.backends.replicate._backend import ReplicateBackend as ReplicateBackend

__all__ = ["FLUX_ASPECT_RATIOS", "MAX_INLINE_BYTES", "ReplicateBackend"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module("genrouter.backends.replicate._backend")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
