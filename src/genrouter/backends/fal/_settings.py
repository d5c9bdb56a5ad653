"""``type: fal`` sections: :class:`FalSettings`, and the credentials read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import SecretStr, field_validator

from genrouter.backends.settings import (
    MediaSettings,
)

__all__ = ["FalSettings"]


class FalSettings(MediaSettings):
    """``type: fal``. ``api_key`` defaults to ``FAL_KEY`` (or ``FAL_KEY_ID``:``FAL_KEY_SECRET``).

    ``webhook_public_keys``: a JWKS mapping, a list of JWKs, or raw Ed25519 keys
    (one base64url string, or a list of them). ``rest_url`` is fal's REST host, which
    issues storage upload tokens (default ``https://rest.fal.ai``).
    """

    type: Literal["fal"] = "fal"
    api_key: SecretStr | None = None
    rest_url: str | None = None
    webhook_jwks_url: str | None = None
    webhook_public_keys: list[Any] | dict[str, Any] | None = None

    env_credentials: ClassVar[str | None] = "FAL_KEY or FAL_KEY_ID+FAL_KEY_SECRET"

    @classmethod
    def section_from_env(cls, env: Mapping[str, str]) -> dict[str, Any] | None:
        """``api_key`` from ``FAL_KEY``, else ``FAL_KEY_ID``:``FAL_KEY_SECRET``."""
        if env.get("FAL_KEY"):
            return {"api_key": env["FAL_KEY"]}
        if env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET"):
            return {"api_key": f"{env['FAL_KEY_ID']}:{env['FAL_KEY_SECRET']}"}
        return None

    @field_validator("webhook_public_keys", mode="before")
    @classmethod
    def _keys_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if value is not None and not isinstance(value, list | Mapping):
            raise ValueError("expected a JWKS mapping, a list of keys, or one base64url key")
        return value
