"""The replicate backend (not available in this version).

Configuring a ``type: replicate`` provider raises :class:`~genrouter.errors.ConfigError`
until the backend lands; the registry entry exists so configs validate today.
"""

from __future__ import annotations

from typing import Any

from genrouter.errors import ConfigError

__all__ = ["ReplicateBackend"]


class ReplicateBackend:
    """Placeholder: constructing it explains that the replicate backend is not available yet."""

    def __init__(self, *, name: str, settings: Any) -> None:
        raise ConfigError(
            f"providers.{name}: the replicate backend is not implemented in this version of "
            "genrouter; use a simulated provider (examples/offline.yaml) meanwhile",
            key_path=f"providers.{name}.type",
        )
