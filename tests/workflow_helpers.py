"""Shared setup for the workflow tests: the example config against loopback fakes of fal and ComfyUI."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from fakes.fal import DEFAULT_KEY
from genrouter import AsyncRouter
from genrouter.backends.modal import ModalBackend
from genrouter.testing import comfy_transport
from genrouter.testing._modal import InProcessModalTransport

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "workflows"
EXAMPLE_CONFIG = EXAMPLE_DIR / "genrouter.yaml"
EXAMPLE_WORKFLOW = EXAMPLE_DIR / "restyle.json"


def example_config(fal_url: str, **policy: Any) -> dict[str, Any]:
    """examples/workflows/genrouter.yaml with fal pointed at the loopback fake (and ``policy`` merged)."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["providers"]["fal"].update(api_key=DEFAULT_KEY, base_url=fal_url)
    config["routing"]["default"].update(policy)
    return config


@asynccontextmanager
async def workflow_router(
    fal_url: str,
    comfy_url: str,
    *,
    config: Mapping[str, Any] | None = None,
    transport_options: Mapping[str, Any] | None = None,
    **policy: Any,
) -> AsyncIterator[tuple[AsyncRouter, InProcessModalTransport]]:
    """A router over the example config: fal on its fake, comfy-gpu in-process against the fake ComfyUI."""
    cfg = copy.deepcopy(dict(config)) if config is not None else example_config(fal_url, **policy)
    options = {"workflows_dir": EXAMPLE_DIR, **dict(transport_options or {})}
    transport = comfy_transport(comfy_url, **options)
    backend = ModalBackend(name="comfy-gpu", settings=cfg["providers"]["comfy-gpu"], transport=transport)
    try:
        async with AsyncRouter.from_config(cfg, backends={"comfy-gpu": backend}) as router:
            yield router, transport
    finally:
        await transport.aclose()


class InProcessComfyModal(ModalBackend):
    """``type: "workflow_helpers:InProcessComfyModal"``: the Modal backend over the in-process
    ComfyUI class, for CLI tests (``comfy_url`` and ``workflows_dir`` come from its section)."""

    def __init__(self, *, name: str, settings: Mapping[str, Any]) -> None:
        own = {k: v for k, v in settings.items() if k in ("app", "cls", "timeout_s", "webhook_secret")}
        transport = comfy_transport(str(settings["comfy_url"]), workflows_dir=str(settings["workflows_dir"]))
        super().__init__(name=name, settings=own, transport=transport)
        self._owns_transport = True
