"""The self-hosted ComfyUI class in-process: ``deploy/modal/comfy/service.py`` behind the Modal backend.

:func:`comfy_transport` builds an :class:`~genrouter.testing._modal.InProcessModalTransport`
over a ``ComfyService`` that talks to a ComfyUI server at ``comfy_url`` (a real one, or
a fake in tests), so a router reaches the class through ``ModalBackend`` exactly as it
would over Modal: each call is pickled in and out and runs on the service's threads.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from genrouter.testing._modal import InProcessModalTransport, deploy_path, load_file_module

__all__ = ["COMFY_SERVICE_PATH", "comfy_transport", "load_comfy_service"]


COMFY_SERVICE_PATH = deploy_path("comfy", "service.py")
"""``deploy/modal/comfy/service.py``: in the wheel under ``genrouter/_deploy_modal``, else the checkout's."""


def load_comfy_service(path: str | Path = COMFY_SERVICE_PATH) -> ModuleType:
    """Import ``deploy/modal/comfy/service.py`` from its path (once per process)."""
    return load_file_module("genrouter_modal.comfy_service", path, what="ComfyUI service")


def comfy_transport(
    comfy_url: str,
    *,
    workflows_dir: str | Path,
    latency_s: float = 0.0,
    warm: int | None = 1,
    **config: Any,
) -> InProcessModalTransport:
    """A transport over a new ``ComfyService`` for ComfyUI at ``comfy_url`` (closed by ``aclose``).

    ``config`` overrides ``ComfyConfig`` fields (``poll_s``, ``run_timeout_s``,
    ``webhook_secret``...); ``latency_s`` and ``warm`` are the transport's.
    """
    module = load_comfy_service()
    settings = {"poll_s": 0.005, **config}
    service = module.ComfyService(
        module.ComfyConfig(url=comfy_url, workflows_dir=str(workflows_dir), **settings)
    ).start()
    return InProcessModalTransport(service=service, latency_s=latency_s, warm=warm, owns_service=True)
