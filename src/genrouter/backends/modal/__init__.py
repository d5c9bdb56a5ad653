"""The ``modal`` provider type (genrouter's self-hosted Modal GPU class): its backend,
:class:`ModalBackend`, and everything it alone knows (parameter translation, wire calls, error mapping).

The backend module is imported on first use of one of its names, so the registry and the
config can import this package's lighter parts without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genrouter.backends.modal._backend import MODAL_LIMITS as MODAL_LIMITS
    from genrouter.backends.modal._backend import ModalBackend as ModalBackend
    from genrouter.backends.modal._backend import ModalTransport as ModalTransport
    from genrouter.backends.modal._backend import SdkModalTransport as SdkModalTransport
    from genrouter.backends.modal._backend import map_modal_error as map_modal_error

__all__ = ["MODAL_LIMITS", "ModalBackend", "ModalTransport", "SdkModalTransport", "map_modal_error"]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module("genrouter.backends.modal._backend")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
