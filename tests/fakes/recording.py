"""A provider backend that records what it was asked, for tests of custom and import-path types.

It builds its own input from ``deployment.params`` (request field → its input name),
as a third-party backend would, and answers every job at once with one placeholder
image per requested output.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from genrouter._png import sim_url
from genrouter.catalog import Deployment
from genrouter.types import (
    Artifact,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
)

__all__ = ["RECEIVED", "RecordingBackend"]

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
