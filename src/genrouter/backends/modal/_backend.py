"""The Modal backend: genrouter's own GPU class (``deploy/modal``), routed to like a hosted API.

A deployment's ``endpoint`` is the model id the class serves (``sdxl``, ``flux-dev``).
Each call goes to ``Cls.from_name(app, cls)(model_id=endpoint).generate`` as one input
of its ``@modal.batched`` method; the ``FunctionCall`` id is the provider request id,
so a :class:`~genrouter.types.JobHandle` resumes after a restart without resubmitting.

The backend talks to Modal through a :class:`ModalTransport` (``spawn``, ``get``,
``cancel``, ``warm_containers``, ``aclose``): :class:`SdkModalTransport` wraps the
``modal`` SDK (imported on first use; never at import or router construction), and
``genrouter.testing.InProcessModalTransport`` runs ``deploy/modal/service.py`` in
this process. ``wait`` is ``FunctionCall.get(timeout)`` (a long poll, no polling loop);
``poll`` is ``get(timeout=0)``.

The payload is a dict of builtins under genrouter's own field names (``prompt``,
``width``, ``loras: [{source, scale}]``, ``image`` as bytes...); a catalog ``params``
entry mapped to ``null`` marks a field the model lacks (it is dropped with a
warning). Outputs come back as bytes and become ``data:`` URLs.
A ``kind: workflow`` deployment is the ComfyUI class (``deploy/modal/comfy``): its payload
is ``{"workflow": endpoint, "inputs": {"<node id>.inputs.<name>": value}}`` from the
deployment's ``params`` (image inputs as bytes), and each output keeps its own content type.

**Cost** (:mod:`genrouter.backends.modal._cost`) = (GPU-seconds the class held the GPU
for + the container start it measured, on a container's first result) × the price of the
GPU that ran (``gpu_prices`` in ``providers/modal.yaml``), ``estimated=False``; an
unmeasured cold start (no warm container at submit) adds the expected start and makes it
``estimated=True``. Video models go to the app's video class (``video_cls``, ``Video``).

**Errors** (by Modal exception class; ``modal`` need not be importable to map them):

==================================================  ==========================================
builtin ``TimeoutError`` from ``FunctionCall.get``  still running (not an error)
``ConnectionError``, ``ServiceError``,              :class:`ProviderUnavailableError`
``InternalError``, ``InternalFailure``, ``RemoteError``  (retryable; counts against the circuit)
``ResourceExhaustedError``                          :class:`RateLimitedError`
``FunctionTimeoutError``                            :class:`JobFailedError`, not retryable
``OutputExpiredError``                              :class:`JobFailedError`, retryable (resubmit)
``NotFoundError``                                   at submit: :class:`ProviderError` 404, not
                                                    retryable (deploy the app); for a call id:
                                                    :class:`JobFailedError`
``AuthError`` / ``PermissionDeniedError``           :class:`AuthenticationError` (401 / 403)
``InvalidError``, ``RequestSizeError``,             :class:`InvalidRequestError`
``SerializationError``, a remote ``ValueError``
a remote ``ConnectionError`` (ComfyUI down)         :class:`ProviderUnavailableError` (retryable)
``ExecutionError``, ``DeserializationError``,       :class:`ConfigError` (client and deployed
``VersionError``                                    class disagree: redeploy or upgrade)
other remote exceptions (``RuntimeError``)          :class:`JobFailedError`, not retryable
genrouter's own timeout around a call               spawn: :class:`SubmitOutcomeUnknownError`;
                                                    others: :class:`ProviderUnavailableError`
==================================================  ==========================================

The router owns the one retry layer; deploy the class without Modal ``retries``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrouter.backends._comfy import service_artifacts
from genrouter.backends._mapping import apply_rules, snapped_aspect_ratio
from genrouter.backends._params import merge_provider_options
from genrouter.backends.modal._capacity import ModalCapacity
from genrouter.backends.modal._cost import ColdStarts, result_cost
from genrouter.backends.modal._sdk import (
    INSTALL_HINT,
    ModalTransport,
    SdkModalTransport,
    _modal_names,
    is_call_outcome,
    map_modal_error,
)
from genrouter.backends.modal._settings import ModalSettings
from genrouter.catalog import Limits, PriceUnit, shipped_gpu_prices
from genrouter.catalog._workflows import workflow_inputs
from genrouter.errors import (
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
)
from genrouter.types import (
    Artifact,
    ArtifactKind,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    MediaInput,
    ProviderJob,
    Timings,
)

if TYPE_CHECKING:
    from genrouter.catalog import Catalog, CatalogEntry, Deployment
    from genrouter.routing.capacity import CapacityFacts

__all__ = [
    "MODAL_LIMITS",
    "ModalBackend",
    "ModalTransport",
    "SdkModalTransport",
    "map_modal_error",
]

MODAL_LIMITS = Limits(
    max_outputs_per_call=4,
    width=(64, 2048),
    height=(64, 2048),
    multiple_of=8,
    default_size=(1024, 1024),
    max_loras=4,
)
"""Limits of inline Modal ``models:`` entries that declare none."""

_MAX_IMAGE_BYTES = 32 * 1024 * 1024
_KEPT_OUTCOMES = 32
_KEPT_CANCELS = 4096
_IMAGE_FORMATS = ("png", "jpeg", "webp")
_VIDEO_FORMATS = ("webp", "gif", "mp4")


_STATS_CLOSE_WAIT_S = 5.0
"""How long ``aclose`` waits for container-count queries left running by failed spawns."""


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _item_error(error: Mapping[str, Any]) -> Exception:
    """A per-item error dict from the batched method as the builtin exception it stands for."""
    message = str(error.get("message", "unknown error"))
    if error.get("type") == "ConnectionError":
        return ConnectionError(message)
    return ValueError(message) if error.get("type") in ("ValueError", "TypeError") else RuntimeError(message)


# -- the backend --------------------------------------------------------------------------------


def _no_shipped_entries(catalog: Catalog) -> Mapping[str, CatalogEntry]:
    """A class that serves only its ``models:`` (``shipped_models: false``)."""
    return {}


class ModalBackend:
    """Routes to a deployed ``deploy/modal`` class (see the module docstring).

    ``transport`` defaults to an :class:`SdkModalTransport` built from ``settings`` on
    first use. The backend closes only a transport it created.
    """

    default_limits = MODAL_LIMITS
    """Limits of inline ``models:`` entries that declare none."""

    default_entries: Callable[[Catalog], Mapping[str, CatalogEntry]] | None = None
    """None: the shipped Modal models; with ``shipped_models: false`` (a ComfyUI class), none."""

    def __init__(
        self,
        *,
        name: str,
        settings: ModalSettings | Mapping[str, Any],
        transport: ModalTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = (
            settings
            if isinstance(settings, ModalSettings)
            else ModalSettings.model_validate({"type": "modal", **settings})
        )
        self._transport = transport
        self._owns_transport = transport is None
        if not self.settings.shipped_models:
            self.default_entries = _no_shipped_entries
        self._outcomes: OrderedDict[str, dict[str, Any] | BaseException] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._stats_queries: set[asyncio.Future[int | None]] = set()
        self.cold_starts = ColdStarts(self.settings.cold_start_s)
        """Container starts the class reported; their mean is the expected cold start."""
        self._gpu_prices = shipped_gpu_prices("modal")
        self.unavailable_reason: str | None = None if transport is not None else self._why_unavailable()
        """Why this provider cannot serve now (no ``modal`` package, no credentials), else None."""

    def __repr__(self) -> str:
        return f"ModalBackend(name={self.name!r}, app={self.settings.app!r}, cls={self.settings.cls!r})"

    def _why_unavailable(self) -> str | None:
        if importlib.util.find_spec("modal") is None:
            return f"the modal package is not installed: {INSTALL_HINT}"
        s = self.settings
        if s.token_id is not None and s.token_secret is not None:
            return None
        if ModalSettings.section_from_env(os.environ) is not None:
            return None
        config = Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
        if config.is_file():
            return None
        return (
            "no Modal credentials: set token_id/token_secret, MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, "
            "or run `modal token new`"
        )

    @property
    def transport(self) -> ModalTransport:
        """The transport, created on first use."""
        if self._transport is None:
            s = self.settings
            self._transport = SdkModalTransport(
                app=s.app,
                cls=s.cls,
                environment=s.environment,
                token_id=s.token_id.get_secret_value() if s.token_id else None,
                token_secret=s.token_secret.get_secret_value() if s.token_secret else None,
                timeout_s=s.timeout_s,
            )
        return self._transport

    # -- optional hooks --------------------------------------------------------------

    _capacity: ModalCapacity | None = None

    def capacity(self, deployment: Deployment) -> CapacityFacts | None:
        """Backlog and runners of the live deployment, for spillover (see ``_modal_capacity``)."""
        if self._capacity is None:
            self._capacity = ModalCapacity(lambda: self.transport, self.cold_starts.expected_s)
        return self._capacity.facts(deployment.endpoint)

    def latency_hint(self, deployment: Deployment) -> float | None:
        """Before any observation: ``1.2 × gpu_seconds_per_output + 1 s + P(cold) × expected start``.

        P(cold): the share of this backend's submits that found no warm container (0 before
        any); the expected start: the mean container start the class has reported, or
        ``cold_start_s`` before any (see :mod:`genrouter.backends.modal._cost`).
        """
        per_output = deployment.gpu_seconds_per_output
        if per_output is None:
            return None
        return 1.2 * per_output + 1.0 + self.cold_starts.cold_share * self.cold_starts.expected_s

    # -- translation -----------------------------------------------------------------

    async def _payload(
        self, deployment: Deployment, request: GenerationRequest, seed: int
    ) -> tuple[dict[str, Any], list[str]]:
        params = deployment.params
        where = f"{self.name} ({deployment.endpoint})"
        if deployment.kind == "workflow":
            return await self._workflow_payload(deployment, request, where)
        warnings: list[str] = []

        def supported(field: str) -> bool:
            # The service takes genrouter's field names; params maps a field to null when absent.
            return not (field in params and params[field] is None)

        width, height = deployment.size_for(request) or (1024, 1024)
        _, snapped = snapped_aspect_ratio(request, deployment, where)
        if snapped is not None:
            warnings.append(snapped)
        payload: dict[str, Any] = {
            "model": deployment.endpoint,
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "num_outputs": request.num_outputs,
            "seed": seed,
        }
        optional: dict[str, Any] = {
            "negative_prompt": request.negative_prompt,
            "steps": request.steps,
            "guidance": request.guidance,
            "strength": request.strength,
        }
        if request.loras:
            optional["loras"] = [{"source": lora.source, "scale": lora.scale} for lora in request.loras]
        video = deployment.kind == "video"
        if video:
            optional.update(duration_s=request.duration_s, fps=request.fps)
        elif request.duration_s is not None or request.fps is not None:
            warnings.append(f"{where} makes images; duration_s and fps were ignored")
        if request.image is not None:
            if supported("image"):
                optional["image"] = await self._image_bytes(request.image)
            else:
                warnings.append(f"{where} has no image-to-image; the image given was ignored")
                optional.pop("strength")
        for field, value in optional.items():
            if value is None:
                continue
            if supported(field):
                payload[field] = value
            else:
                warnings.append(f"{where} has no input for {field}; {field} was ignored")
        if request.mask is not None:
            warnings.append(f"{where} does no inpainting; the mask was ignored")
        if request.safety_checker:
            warnings.append(f"{where} runs no safety checker; safety_checker was ignored")
        formats = _VIDEO_FORMATS if video else _IMAGE_FORMATS
        if request.output_format in formats:
            payload["output_format"] = request.output_format
        elif request.output_format is not None:
            warnings.append(f"{where} cannot make {request.output_format}; made {formats[0]} instead")
        warnings += apply_rules(payload, deployment, where)
        keys = ("modal", self.name) if self.name != "modal" else ("modal",)
        return merge_provider_options(payload, request, *keys), warnings

    async def _workflow_payload(
        self, deployment: Deployment, request: GenerationRequest, where: str
    ) -> tuple[dict[str, Any], list[str]]:
        """For the ComfyUI class (``deploy/modal/comfy``): node-path → value, images as bytes."""

        async def media(value: MediaInput, name: str) -> bytes:
            return await self._image_bytes(value)

        inputs, warnings, _ = await workflow_inputs(request, deployment, where=where, media=media)
        payload: dict[str, Any] = {
            "model": deployment.endpoint,
            "workflow": deployment.endpoint,
            "inputs": inputs,
        }
        keys = ("modal", self.name) if self.name != "modal" else ("modal",)
        return merge_provider_options(payload, request, *keys), warnings

    async def _image_bytes(self, value: MediaInput) -> bytes:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str) and value.split(":", 1)[0].lower() in ("http", "https", "data"):
            data = await Artifact(url=value).aread(
                max_bytes=_MAX_IMAGE_BYTES, timeout_s=self.settings.timeout_s
            )
        else:
            path = Path(value)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise InvalidRequestError(
                    f"image: cannot read {str(path)!r} ({exc.strerror or exc}); pass a URL, bytes or a file",
                    field="image",
                ) from exc
        if len(data) > _MAX_IMAGE_BYTES:
            raise InvalidRequestError(f"image is {len(data)} bytes, over {_MAX_IMAGE_BYTES}", field="image")
        return data

    # -- Backend protocol -------------------------------------------------------------

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Spawn one call; the seed is fixed here so that a re-run input reproduces its output."""
        seed = request.seed if request.seed is not None else random.randrange(2**32)
        payload, warnings = await self._payload(deployment, request, seed)
        if webhook_url is not None:
            # The deployment POSTs a Standard Webhooks-signed event there when the call ends.
            payload["webhook_url"] = webhook_url
        transport = self.transport
        # Video models run in their own class (one request per input, a long timeout).
        extra: dict[str, str] = {"cls": self.settings.video_cls} if deployment.kind == "video" else {}
        warm = asyncio.ensure_future(transport.warm_containers(deployment.endpoint, **extra))
        try:
            call_id = await transport.spawn(deployment.endpoint, payload, **extra)
        except BaseException as exc:
            # Left to finish (it is bounded), not cancelled: modal's SDK drops its inner
            # coroutine unawaited when a call is cancelled while its event loop thread starts.
            self._stats_queries.add(warm)
            warm.add_done_callback(self._stats_queries.discard)
            warm.add_done_callback(_consume)
            if isinstance(exc, Exception):
                raise map_modal_error(exc, provider=self.name, at_submit=True, where="spawn") from exc
            raise
        try:
            containers = await warm
        except Exception:
            containers = None
        self.cold_starts.saw_submit(None if containers is None else containers == 0)
        pricing = deployment.pricing
        per_gpu_second = pricing is not None and pricing.unit is PriceUnit.PER_GPU_SECOND
        return ProviderJob(
            provider=self.name,
            endpoint=deployment.endpoint,
            provider_request_id=call_id,
            data={
                "kind": deployment.kind,
                "seed": seed,
                "submitted_at": time.time(),
                "cold_start": None if containers is None else containers == 0,
                "price_per_gpu_second": str(pricing.amount)
                if pricing is not None and per_gpu_second
                else None,
                "price_basis": pricing.describe() if pricing is not None and per_gpu_second else None,
            },
            warnings=warnings,
        )

    def _remember(self, call_id: str, outcome: dict[str, Any] | BaseException) -> None:
        self._outcomes[call_id] = outcome
        while len(self._outcomes) > _KEPT_OUTCOMES:
            self._outcomes.popitem(last=False)

    async def _observe(self, job: ProviderJob, timeout_s: float) -> dict[str, Any] | BaseException | None:
        """The call's result or failure, or None while running. Errors reaching Modal are raised."""
        rid = job.provider_request_id
        known = self._outcomes.get(rid)
        if known is not None:
            return known
        try:
            value = await self.transport.get(rid, timeout_s)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if isinstance(exc, GenRouterError) or not is_call_outcome(exc):
                raise map_modal_error(exc, provider=self.name, provider_request_id=rid, where="get") from exc
            self._remember(rid, exc)
            return exc
        if value is None:
            return None
        outcome: dict[str, Any] | BaseException = value
        if isinstance(value, dict) and isinstance(value.get("error"), Mapping):
            outcome = _item_error(value["error"])
        self._remember(rid, outcome)
        return outcome

    def _status(self, job: ProviderJob, outcome: dict[str, Any] | BaseException | None) -> JobStatus:
        rid = job.provider_request_id
        error = None
        if isinstance(outcome, dict):
            state = JobState.SUCCEEDED
        elif outcome is None:
            state = JobState.CANCELLED if rid in self._cancelled else JobState.RUNNING
        elif rid in self._cancelled or "InputCancellation" in _modal_names(outcome):
            state = JobState.CANCELLED
        else:
            state, error = JobState.FAILED, f"{type(outcome).__name__}: {outcome}"
        return JobStatus(state=state, provider=self.name, provider_request_id=rid, error=error)

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The call's state now (``get(timeout=0)``)."""
        return self._status(job, await self._observe(job, 0.0))

    async def wait(self, job: ProviderJob, timeout_s: float) -> JobStatus:
        """Wait for the call with Modal's long poll, at most ``timeout_s``."""
        return self._status(job, await self._observe(job, max(0.0, timeout_s)))

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The outputs of a finished call, or its error (mapped per the module table)."""
        rid = job.provider_request_id
        outcome = await self._observe(job, 0.0)
        status = self._status(job, outcome)
        if status.state is JobState.CANCELLED:
            raise JobFailedError(
                f"{self.name}: call {rid} was cancelled",
                provider=self.name,
                provider_request_id=rid,
                state="cancelled",
            )
        if outcome is None:
            raise JobFailedError(
                f"{self.name}: call {rid} has not finished",
                provider=self.name,
                provider_request_id=rid,
                state=status.state.value,
                retryable=True,
            )
        if isinstance(outcome, BaseException):
            raise map_modal_error(outcome, provider=self.name, provider_request_id=rid, where="result")
        return self._result(job, outcome)

    def _result(self, job: ProviderJob, value: dict[str, Any]) -> GenerationResult:
        rid = job.provider_request_id
        content_type = str(value.get("content_type") or "image/png")
        video = value.get("kind") == "video" or job.data.get("kind") == "video"
        kind = ArtifactKind.VIDEO if video else ArtifactKind.IMAGE
        duration = value.get("duration_s") if video else None
        outputs = [
            Artifact(
                kind=kind,
                url=f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}",
                content_type=content_type,
                width=value.get("width"),
                height=value.get("height"),
                duration_s=duration,
            )
            for data in value.get("outputs", [])
        ]
        # Outputs the class wrote to its output Volume come back as signed download links.
        outputs += [
            Artifact(
                kind=kind,
                url=url,
                content_type=content_type,
                width=value.get("width"),
                height=value.get("height"),
                duration_s=duration,
            )
            for url in value.get("output_urls") or []
            if isinstance(url, str)
        ]
        if job.data.get("kind") == "workflow":
            outputs = service_artifacts(value)
        gpu_s = float(value.get("gpu_seconds") or 0.0)
        queued = None
        finished, submitted = value.get("finished_at"), job.data.get("submitted_at")
        if isinstance(finished, int | float) and isinstance(submitted, int | float):
            queued = max(0.0, finished - submitted - gpu_s)
        raw = {k: v for k, v in value.items() if k != "outputs"}
        return GenerationResult(
            id="",
            model=job.endpoint,
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=rid,
            outputs=outputs,
            seed=value.get("seed", job.data.get("seed")),
            cost=self._cost(job, value),
            timings=Timings(queued_s=queued, running_s=gpu_s),
            warnings=[f"{self.name}: {w}" for w in value.get("warnings", [])],
            raw={"call_id": rid, **raw},
        )

    def _cost(self, job: ProviderJob, value: Mapping[str, Any]) -> Cost:
        """What the result cost: see :mod:`genrouter.backends.modal._cost`."""
        self.cold_starts.observe(value.get("cold_start_s"))
        if self._capacity is not None and self.cold_starts.count:
            self._capacity.use_cold_start(self.cold_starts.expected_s)  # live predictions: measured start
        return result_cost(
            value, job.data, gpu_prices=self._gpu_prices, expected_cold_start_s=self.cold_starts.expected_s
        )

    async def cancel(self, job: ProviderJob) -> None:
        """Cancel the call at Modal (nothing to do once it finished)."""
        rid = job.provider_request_id
        if isinstance(self._outcomes.get(rid), dict):
            return
        self._cancelled[rid] = None
        while len(self._cancelled) > _KEPT_CANCELS:
            self._cancelled.popitem(last=False)
        try:
            await self.transport.cancel(rid)
        except Exception as exc:
            raise map_modal_error(exc, provider=self.name, provider_request_id=rid, where="cancel") from exc

    async def aclose(self) -> None:
        """Close the transport if this backend created it. Idempotent."""
        if self._stats_queries:
            _, stuck = await asyncio.wait(self._stats_queries, timeout=_STATS_CLOSE_WAIT_S)
            for query in stuck:
                query.cancel()
        if self._capacity is not None:
            await self._capacity.aclose()
        transport = self._transport
        if transport is not None and self._owns_transport:
            self._transport = None
            await transport.aclose()
