"""The data genrouter passes around: requests, results, artifacts, jobs and plans.

All models are pydantic v2 and frozen. They round-trip through JSON, so a
:class:`JobHandle` or a :class:`GenerationResult` can be stored and read back in
another process. Bytes fields serialise as base64.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from genrouter.util._header_rules import header_problem
from genrouter.util._media import read_artifact_bytes, read_artifact_bytes_async, save_artifact
from genrouter.util._secrets import is_credential_header, register_secret

__all__ = [
    "Artifact",
    "ArtifactKind",
    "Attempt",
    "AttemptOutcome",
    "Candidate",
    "Cost",
    "GenerationRequest",
    "GenerationResult",
    "JobHandle",
    "JobState",
    "JobStatus",
    "LoRA",
    "Progress",
    "ProviderJob",
    "RoutePlan",
    "Strategy",
    "Timings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

Strategy = Literal["priority", "cost", "latency", "balanced", "weighted"]
"""How the router ranks the deployments that can serve a request."""

OutputFormat = Literal["png", "jpeg", "webp", "mp4", "webm", "gif"]

_ASPECT_RATIO = re.compile(r"^([1-9]\d{0,2}):([1-9]\d{0,2})$")

MAX_DIMENSION = 8192
MIN_DIMENSION = 16
MAX_OUTPUTS = 16
MAX_IMAGES = 16


class JobState(StrEnum):
    """Where a provider job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class AttemptOutcome(StrEnum):
    """How one submission ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HEDGE_LOST = "hedge_lost"


class ArtifactKind(StrEnum):
    """What an output is."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class LoRA(BaseModel):
    """A LoRA adapter to apply: ``source`` is a URL, a repo id or a path the provider understands."""

    model_config = _FROZEN

    source: Annotated[str, Field(min_length=1)]
    scale: Annotated[float, Field(ge=-4.0, le=4.0)] = 1.0


MediaInput = str | bytes | Path
"""An input image: a URL (``https://``, ``data:``), raw bytes, or a local path."""

_BYTES_DATA_URL = "data:application/vnd.genrouter.bytes;base64,"


def _media_from_json(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_BYTES_DATA_URL):
        return base64.b64decode(value[len(_BYTES_DATA_URL) :])
    return value


def _media_to_json(value: MediaInput) -> str:
    # Raw bytes would read back as their base64 text (a str is a URL or a path);
    # a marked data URL reads back as the same bytes.
    if isinstance(value, bytes):
        return _BYTES_DATA_URL + base64.b64encode(value).decode("ascii")
    return str(value)


def _check_media_not_empty(value: MediaInput) -> None:
    if len(str(value) if isinstance(value, Path) else value) == 0:
        raise ValueError("is empty; pass a URL, bytes or a file path")


def _sendable_headers(headers: dict[str, str]) -> dict[str, str]:
    """One provider key's request headers, if genrouter can send them (else ValueError).

    Checked when the request is validated, before anything is routed or sent: a bad
    header is the request's fault (``InvalidRequestError`` naming
    ``provider_headers.<key>``), not a provider's. Credential-looking values are
    registered for redaction first, so no error text shows them.
    """
    for name, value in headers.items():
        if is_credential_header(name):
            register_secret(value)
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
    return headers


class GenerationRequest(BaseModel):
    """One generation request: what to make, and optional routing overrides.

    Sizes are either ``width`` and ``height`` together, or ``aspect_ratio`` (``"16:9"``),
    or neither (the model's default). Routing overrides (``providers``, ``strategy``,
    ``max_cost_usd``, ``deadline_s``) beat the YAML policy for this request only.
    ``prompt`` may be left out only where the routed model takes none: the router refuses
    a prompt-less request for an ``image`` or ``video`` model (``InvalidRequestError``
    naming ``prompt``); ``upscale`` and ``remove-background`` models and workflows whose
    inputs need no prompt run without one.
    """

    model_config = _FROZEN

    model: Annotated[str, Field(min_length=1, description="Model alias, e.g. 'flux-dev'.")]
    prompt: Annotated[
        str | None,
        Field(
            max_length=20_000,
            description="What to generate. Required unless the model's kind takes none "
            "(upscale, remove-background, a workflow without a prompt input).",
        ),
    ] = None
    negative_prompt: str | None = None
    width: Annotated[int | None, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION)] = None
    height: Annotated[int | None, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION, validate_default=True)] = None
    aspect_ratio: str | None = None
    num_outputs: Annotated[int, Field(ge=1, le=MAX_OUTPUTS)] = 1
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None
    steps: Annotated[int | None, Field(ge=1, le=500)] = None
    guidance: Annotated[float | None, Field(ge=0.0, le=50.0)] = None
    image: MediaInput | None = None
    mask: MediaInput | None = None
    images: Annotated[list[MediaInput], Field(max_length=MAX_IMAGES)] = Field(
        default_factory=list,
        description="Several input images (reference images, first and last frame), "
        "each a URL, bytes or a pathlib.Path; the catalog entry maps them.",
    )
    strength: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    loras: Annotated[list[LoRA], Field(max_length=8)] = Field(default_factory=list)
    duration_s: Annotated[float | None, Field(gt=0.0, le=600.0)] = None
    fps: Annotated[int | None, Field(ge=1, le=120)] = None
    output_format: OutputFormat | None = None
    safety_checker: bool | None = None
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="A workflow model's named inputs (JSON values; images as URL, bytes or path).",
    )
    provider_headers: dict[str, Annotated[dict[str, str], AfterValidator(_sendable_headers)]] = Field(
        default_factory=dict,
        description="Extra HTTP headers per provider key ({key: {header: value}}), "
        "merged over the provider section's provider_headers.",
        repr=False,
    )
    providers: list[str] | None = None
    strategy: Strategy | None = None
    max_cost_usd: Annotated[Decimal | None, Field(ge=0)] = None
    deadline_s: Annotated[float | None, Field(gt=0.0, le=86_400.0)] = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_serializer("provider_headers", when_used="json")
    def _headers_without_credentials(self, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        # A stored handle or manifest never holds a credential; headers only matter at submit.
        return {
            key: {n: v for n, v in headers.items() if not is_credential_header(n)}
            for key, headers in value.items()
        }

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt is empty; describe what to generate")
        return value

    @field_validator("height", mode="after")
    @classmethod
    def _height_with_width(cls, value: int | None, info: ValidationInfo) -> int | None:
        width = info.data.get("width")
        if (value is None) != (width is None) and "width" in info.data:
            missing = "height" if value is None else "width"
            raise ValueError(f"width and height go together: {missing} is missing")
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect_ratio_shape(cls, value: str | None) -> str | None:
        if value is not None and not _ASPECT_RATIO.match(value):
            raise ValueError(f"aspect_ratio {value!r} is not of the form 'W:H', e.g. '16:9'")
        return value

    @field_validator("output_format", mode="before")
    @classmethod
    def _normalise_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "jpeg" if value == "jpg" else value
        return value

    @field_validator("image", "mask", mode="before")
    @classmethod
    def _bytes_from_json(cls, value: Any) -> Any:
        return _media_from_json(value)

    @field_validator("images", mode="before")
    @classmethod
    def _list_bytes_from_json(cls, value: Any) -> Any:
        return [_media_from_json(item) for item in value] if isinstance(value, list) else value

    @field_validator("inputs", mode="before")
    @classmethod
    def _input_bytes_from_json(cls, value: Any) -> Any:
        return {k: _media_from_json(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_serializer("inputs", when_used="json")
    def _input_bytes_to_json(self, value: dict[str, Any]) -> dict[str, Any]:
        # Image inputs given as bytes or a path round-trip like ``image`` does.
        return {k: _media_to_json(v) if isinstance(v, bytes | Path) else v for k, v in value.items()}

    @field_serializer("image", "mask", when_used="json")
    def _bytes_to_json(self, value: MediaInput | None) -> str | None:
        return None if value is None else _media_to_json(value)

    @field_serializer("images", when_used="json")
    def _list_bytes_to_json(self, value: list[MediaInput]) -> list[str]:
        return [_media_to_json(item) for item in value]

    @field_validator("image", "mask")
    @classmethod
    def _media_not_empty(cls, value: MediaInput | None) -> MediaInput | None:
        if value is not None:
            _check_media_not_empty(value)
        return value

    @field_validator("images")
    @classmethod
    def _list_media_not_empty(cls, value: list[MediaInput]) -> list[MediaInput]:
        for item in value:
            _check_media_not_empty(item)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenerationRequest:
        if self.width is not None and self.aspect_ratio is not None:
            raise ValueError("give either width/height or aspect_ratio, not both")
        if self.mask is not None and self.image is None:
            raise ValueError("mask needs an image to apply to")
        if self.strength is not None and self.image is None:
            raise ValueError("strength applies to image-to-image; set image as well")
        if self.providers is not None and not self.providers:
            raise ValueError("providers is an empty allow-list; omit it to allow every provider")
        return self

    @property
    def megapixels(self) -> float | None:
        """Requested size in megapixels (1 MP = 1,000,000 pixels), when a size was given."""
        if self.width is None or self.height is None:
            return None
        return self.width * self.height / 1_000_000


class Cost(BaseModel):
    """What a result cost. ``amount_usd`` None means unknown, never zero."""

    model_config = _FROZEN

    amount_usd: Decimal | None = None
    estimated: bool = True
    basis: str | None = Field(default=None, description="How the amount was computed.")


class Timings(BaseModel):
    """Where the time went, in seconds. None where the provider did not say."""

    model_config = _FROZEN

    queued_s: float | None = None
    running_s: float | None = None
    total_s: float | None = None


class Attempt(BaseModel):
    """One submission to one deployment, and how it ended."""

    model_config = _FROZEN

    provider: str
    endpoint: str
    outcome: AttemptOutcome
    error: str | None = None
    duration_s: float = 0.0
    hedged: bool = False
    provider_request_id: str | None = None


class Artifact(BaseModel):
    """One output file. ``url`` is the provider's URL (or a ``data:``/``sim:`` URL).

    :meth:`read` / :meth:`aread` fetch the bytes (streamed, size-capped, content type
    checked); :meth:`save` writes them to a file or into a directory.
    """

    model_config = _FROZEN

    kind: ArtifactKind = ArtifactKind.IMAGE
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    nsfw: bool | None = None

    def read(self, *, max_bytes: int | None = None, timeout_s: float = 60.0) -> bytes:
        """Download (or decode) the artifact's bytes."""
        return read_artifact_bytes(self, max_bytes=max_bytes, timeout_s=timeout_s)

    async def aread(self, *, max_bytes: int | None = None, timeout_s: float = 60.0) -> bytes:
        """Async twin of :meth:`read`."""
        return await read_artifact_bytes_async(self, max_bytes=max_bytes, timeout_s=timeout_s)

    def save(self, path: str | Path, *, name: str | None = None) -> Path:
        """Save to ``path``; when ``path`` is a directory, inside it as ``name`` or a generated name.

        Returns the path written.
        """
        return save_artifact(self, Path(path), name=name)

    @property
    def extension(self) -> str:
        """File extension (without the dot) from the content type, URL or kind."""
        from genrouter.util._media import extension_for

        return extension_for(self)


class GenerationResult(BaseModel):
    """A finished generation: outputs, who made them, what they cost, how long they took."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    model: str
    provider: str
    endpoint: str
    provider_request_id: str | None = None
    outputs: list[Artifact]
    seed: int | None = None
    cost: Cost = Field(default_factory=Cost)
    estimated_cost_usd: Decimal | None = Field(
        default=None,
        description="The estimate routing used before the job ran (None: no price known). "
        "`cost` is what it cost: billed (estimated=False) when the provider reported it.",
    )
    timings: Timings = Field(default_factory=Timings)
    attempts: list[Attempt] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def actual_cost_usd(self) -> Decimal | None:
        """What the provider reported it billed (``cost.amount_usd`` when not estimated), else None."""
        return None if self.cost.estimated else self.cost.amount_usd


class ProviderJob(BaseModel):
    """A job a provider accepted: enough to poll, fetch, cancel or resume it.

    ``data`` holds whatever the backend needs to resume (URLs, timestamps); it is
    JSON-serialisable and never holds credentials. ``warnings`` are parameter
    translation notes made at submit time.
    """

    model_config = _FROZEN

    provider: str
    endpoint: str
    provider_request_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class JobStatus(BaseModel):
    """A job's state as last seen at the provider."""

    model_config = _FROZEN

    state: JobState
    provider: str | None = None
    provider_request_id: str | None = None
    queue_position: int | None = None
    logs: list[str] = Field(default_factory=list)
    error: str | None = None


class Progress(BaseModel):
    """What a request's job is doing now, as given to ``generate(..., on_progress=fn)``.

    Sent when the state or queue position changes or new log lines arrive (at most
    once per poll). ``logs`` holds only lines not sent before; ``queue_position`` is
    the provider's (fal), None where it does not say; ``elapsed_s`` counts from the
    start of the request (or of ``result()``).
    """

    model_config = _FROZEN

    provider: str
    state: JobState
    queue_position: int | None = None
    logs: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0


class JobHandle(BaseModel):
    """A submitted job, pinned to the provider that accepted it. Survives JSON round trips.

    ``JobHandle.model_validate_json(handle.model_dump_json())`` resumes in a new
    router or process without submitting again.
    """

    model_config = _FROZEN

    id: str
    model: str
    provider: str
    endpoint: str
    provider_request_id: str
    job: ProviderJob
    more_jobs: list[ProviderJob] = Field(
        default_factory=list,
        description="Further jobs when the outputs were split across several provider calls.",
    )
    request: GenerationRequest
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    attempts: list[Attempt] = Field(default_factory=list)

    @property
    def jobs(self) -> list[ProviderJob]:
        """Every provider job of this handle, the first one first."""
        return [self.job, *self.more_jobs]


class Candidate(BaseModel):
    """One deployment the router considered for a request."""

    model_config = _FROZEN

    provider: str
    endpoint: str
    estimated_cost_usd: Decimal | None
    estimated_p95_s: float | None
    health: str
    score: float | None
    excluded: str | None = None


class RoutePlan(BaseModel):
    """Ranked candidates for a request: viable ones best first, excluded ones last with why."""

    model_config = _FROZEN

    model: str
    strategy: Strategy
    candidates: list[Candidate]
    notes: list[str] = Field(default_factory=list)

    @property
    def viable(self) -> list[Candidate]:
        """Candidates that were not excluded, best first."""
        return [c for c in self.candidates if c.excluded is None]
