"""Recording doubles: a provider backend (custom and import-path types) and a Modal transport.

The backend builds its own input from ``deployment.params`` (request field → its input
name), as a third-party backend would, and answers every job at once with one placeholder
image per requested output. The transport records each Modal payload and answers at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from genrouter.catalog import Deployment
from genrouter.types import (
    Artifact,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
)
from genrouter.util._png import placeholder_png, sim_url

__all__ = ["RECEIVED", "RecordingBackend", "RecordingTransport"]

RECEIVED: list[dict[str, Any]] = []
"""Every input any RecordingBackend built, oldest first (tests clear it)."""

_FIELDS = ("prompt", "width", "height", "aspect_ratio", "seed", "num_outputs", "image")


class RecordingBackend:
    """Records the input it builds through the deployment's mapping, then succeeds."""

    def __init__(self, *, name: str, settings: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.settings = dict(settings or {})
        self._ids = itertools.count(1)

    async def submit(
        self, deployment: Deployment, request: GenerationRequest, *, webhook_url: str | None = None
    ) -> ProviderJob:
        sent = {
            target: getattr(request, field)
            for field in _FIELDS
            if (target := deployment.params.get(field)) and getattr(request, field) is not None
        }
        RECEIVED.append({"endpoint": deployment.endpoint, "input": sent})
        width, height = request.width or 64, request.height or 64
        return ProviderJob(
            provider=self.name,
            endpoint=deployment.endpoint,
            provider_request_id=f"rec-{next(self._ids)}",
            data={"n": request.num_outputs, "w": width, "h": height, "seed": request.seed},
        )

    async def poll(self, job: ProviderJob) -> JobStatus:
        rid = job.provider_request_id
        return JobStatus(state=JobState.SUCCEEDED, provider=self.name, provider_request_id=rid)

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        data = job.data
        outputs = [
            Artifact(
                url=sim_url(self.name, job.provider_request_id, i, data["w"], data["h"], data["seed"] or 0),
                width=data["w"],
                height=data["h"],
            )
            for i in range(data["n"])
        ]
        return GenerationResult(
            id="",
            model=job.endpoint,
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=job.provider_request_id,
            outputs=outputs,
            seed=data["seed"],
        )

    async def cancel(self, job: ProviderJob) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RecordingTransport:
    """A ModalTransport that records each payload and answers with placeholder outputs at once."""

    def __init__(self) -> None:
        self.spawned: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self._results: dict[str, dict[str, Any]] = {}

    async def spawn(self, model_id: str, payload: dict[str, Any], cls: str | None = None) -> str:
        call_id = f"fc-rec{next(self._ids):04d}"
        self.spawned.append((model_id, payload))
        width, height = payload.get("width", 64), payload.get("height", 64)
        self._results[call_id] = {
            "outputs": [placeholder_png(8, 8, i) for i in range(int(payload.get("num_outputs", 1)))],
            "content_type": "image/png",
            "width": width,
            "height": height,
            "seed": payload.get("seed"),
            "gpu_seconds": 1.0,
        }
        return call_id

    async def get(self, call_id: str, timeout_s: float) -> dict[str, Any] | None:
        return self._results[call_id]

    async def cancel(self, call_id: str) -> None:
        return None

    async def warm_containers(self, model_id: str, cls: str | None = None) -> int | None:
        return 1

    async def aclose(self) -> None:
        return None
