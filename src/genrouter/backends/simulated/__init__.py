"""The ``simulated`` provider type (simulated providers): its backend, :class:`SimulatedBackend`,
and everything it alone knows (parameter translation, wire calls, error mapping).

The backend module is imported on first use of one of its names, so the registry and the
config can import this package's lighter parts without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genrouter.backends.simulated._backend import SIMULATED_LIMITS as SIMULATED_LIMITS
    from genrouter.backends.simulated._backend import SimulatedBackend as SimulatedBackend

__all__ = ["SIMULATED_LIMITS", "SimulatedBackend"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module("genrouter.backends.simulated._backend")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
