"""``type: replicate`` sections: :class:`ReplicateSettings`, and the credentials read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr

from genrouter.backends.settings import (
    MediaSettings,
)

__all__ = ["ReplicateSettings"]


class ReplicateSettings(MediaSettings):
    """``type: replicate``. ``api_token`` defaults to ``REPLICATE_API_TOKEN``.

    ``prefer_wait_s`` (1-60) asks Replicate to hold the create call open that long.
    """

    type: Literal["replicate"] = "replicate"
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    prefer_wait_s: Annotated[int | None, Field(ge=1, le=60)] = None

    env_credentials: ClassVar[str | None] = "REPLICATE_API_TOKEN"

    @classmethod
    def section_from_env(cls, env: Mapping[str, str]) -> dict[str, Any] | None:
        """``api_token`` from ``REPLICATE_API_TOKEN``."""
        return {"api_token": env["REPLICATE_API_TOKEN"]} if env.get("REPLICATE_API_TOKEN") else None
