"""``type: modal`` sections: :class:`ModalSettings`, and the credentials read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr

from genrouter.backends.settings import (
    ProviderSettings,
)

__all__ = ["ModalSettings"]


class ModalSettings(ProviderSettings):
    """``type: modal``: a deployed ``deploy/modal`` class, looked up by app and class name."""

    type: Literal["modal"] = "modal"
    app: str = "genrouter-diffusion"
    cls: str = "Diffusion"
    video_cls: str = "Video"
    """The class serving ``kind: video`` models (``deploy/modal``'s ``Video``)."""
    gpu: str | None = None
    environment: str | None = None
    token_id: SecretStr | None = None
    token_secret: SecretStr | None = None
    cold_start_s: Annotated[float, Field(ge=0)] = 20.0
    webhook_secret: SecretStr | None = None
    """The ``whsec_...`` secret the deployment signs webhooks with (its ``GENROUTER_WEBHOOK_SECRET``)."""
    shipped_models: bool = True
    """Serve the shipped catalog's Modal models (``sdxl``...); false for a class that serves only
    its ``models:`` (the ComfyUI class in ``deploy/modal/comfy``)."""

    env_credentials: ClassVar[str | None] = "MODAL_TOKEN_ID+MODAL_TOKEN_SECRET"

    @classmethod
    def section_from_env(cls, env: Mapping[str, str]) -> dict[str, Any] | None:
        """``token_id`` and ``token_secret`` from ``MODAL_TOKEN_ID`` and ``MODAL_TOKEN_SECRET`` (both set)."""
        if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
            return {"token_id": env["MODAL_TOKEN_ID"], "token_secret": env["MODAL_TOKEN_SECRET"]}
        return None
