"""The fal.ai backend: fal's queue API (``queue.fal.run``) over one shared httpx client.

Wire protocol (``shared/reference/fal.md`` §2):

- submit ``POST {base}/{endpoint_id}[?fal_webhook=<url>]`` → ``request_id``, ``status_url``,
  ``response_url``, ``cancel_url``;
- status ``GET status_url?logs=1`` → ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED``
  (a failed job is ``COMPLETED`` with ``error`` and ``error_type``);
- result ``GET response_url`` → the model output (or the job's 422);
- cancel ``PUT cancel_url`` → 202 ``CANCELLATION_REQUESTED`` or 400 ``ALREADY_COMPLETED``.

The URLs fal returns are used as given (an endpoint with a subpath such as
``fal-ai/kling-video/v1.6/standard/text-to-video`` is polled at ``fal-ai/kling-video``),
and kept in :attr:`ProviderJob.data` so another process can resume the job. A
returned URL on another host than the configured base URL is re-based onto it, so
the API key is only ever sent where the config points (a proxy keeps seeing every
call). Without returned URLs the owner/alias URLs are built as fal_client does.

**Why HTTP directly, not fal_client.** fal_client 1.0.3 takes no base URL, transport
or httpx client (tests and proxies could not point it anywhere), and it retries
every call up to 10 times itself: it re-POSTs a *submit* after read timeouts,
408/409/429 and ingress 5xx, which can create duplicate, double-billed jobs behind
genrouter's back and multiplies with the router's own retries. It also raises
``ValueError`` for a status it does not know and ``KeyError`` when ``logs`` is
missing. Here every call is sent once through :func:`~genrouter.backends._http.send`:
a submit that may have reached fal raises
:class:`~genrouter.errors.SubmitOutcomeUnknownError` and is never re-sent; unknown
statuses and malformed bodies are typed :class:`ProviderUnavailableError`.
No part of fal_client is used.

**Media inputs** (``image``, ``mask``, ``images``): URLs pass through; bytes and paths up
to ``inline_max_bytes`` (256 KiB) go inline as ``data:`` URIs, larger ones are uploaded
once per content to fal storage (:mod:`genrouter.backends.fal._storage`: a token from
``rest_url`` with the API key, the file to the CDN with that token only) and sent as
their URL; ``max_upload_bytes`` (default 1 GiB) refuses larger ones up front.

**Parameters** follow the catalog's ``params`` mapping: width/height → ``image_size``
(a preset name such as ``square_hd`` when the size is one exactly, else
``{width, height}``); aspect_ratio → the nearest preset on ``image_size`` endpoints
(warned unless exact) or the ``"W:H"`` string where the mapping says
``aspect_ratio`` (video); output_format ``jpeg|png`` (others become png, warned);
loras → ``[{path, scale}]``; duration_s → the nearest of ``limits.durations_s`` as
a string (``"5"``), warned when changed; ``provider_options["fal"]`` and then
``provider_options[<provider key>]`` are merged last. Every field dropped or changed
leaves a warning on the job, which the router copies onto the result. An entry's value
maps (``{to, wrap, values, allowed, as, invert}``, :mod:`genrouter.backends._mapping`) are
applied before the options and decide what they govern (an ``output_format`` map replaces
the jpeg|png rule, a ``duration_s`` list the ``limits.durations_s`` one); a width and
height sent to an endpoint that takes only ``aspect_ratio`` go as the nearest allowed ratio.
A ``kind: workflow`` deployment (a ``comfy/<owner>/<name>`` endpoint) is sent only what its
``params`` map, request fields and ``inputs`` alike, under the endpoint's own names (image
inputs as URLs); its outputs are read from ComfyUI's per-node ``outputs`` when the answer has
no top-level ``images``.

**Time-to-start.** A routed submit sends ``X-Fal-Request-Timeout`` = the request's
remaining deadline in whole seconds (rounded down, at least 1): fal's deadline for the
job to *start* (queue wait, runner acquisition and fal's own retries). A job still
queued then is dropped by fal with a 504 (``X-Fal-Request-Timeout-Type: user``) and is
not billed, so a crashed router's queued jobs do not run later; a job already running
is not stopped by it. ``timeout_s`` bounds each HTTP request.

**Headers.** The section's ``provider_headers`` go with every call to the queue and REST
hosts; a request's ``provider_headers[<key>]`` are merged over them on its submit
(``X-Fal-Queue-Priority: low``, ``X-Fal-Store-IO: 0``, ``X-Fal-Runner-Hint``...).

**Cost.** fal's result answer carries ``x-fal-billable-units``; with the deployment's
price that is the actual cost (``Cost.estimated=False``). Without the header the router
estimates it from the outputs.

**Errors** (reference §2 table): 401/402/403 → :class:`AuthenticationError`; 400/422 →
:class:`InvalidRequestError` whose ``fields`` name the request fields fal rejected
(``detail[].loc``, translated back from fal's input names); 429 →
:class:`RateLimitedError` (``retry_after`` from ``Retry-After`` when sent); 5xx →
:class:`ProviderUnavailableError`, retryable unless ``error_type`` is
``runner_server_error`` or the 504 is fal's own time-to-start deadline
(``X-Fal-Request-Timeout-Type: user``). ``X-Fal-Retryable``, when present, decides.
A submit answered by a gateway 502/504 carrying no fal error type may have been
enqueued: it raises :class:`SubmitOutcomeUnknownError`. A ``COMPLETED`` job with an
``error`` polls as ``failed`` and ``fetch_result`` raises :class:`JobFailedError`,
retryable for runner failures (``runner_*`` but ``runner_server_error``, and
``startup_timeout``). A completed job whose result answers 4xx is an
:class:`InvalidRequestError`.

**Cancelling.** fal answers a cancel with 202 and later shows the request
``COMPLETED`` with an error (``client_cancelled``), or forgets a queued one (404).
The backend remembers the cancels it sent, and reports such a job ``cancelled``;
``client_cancelled`` is read as cancelled even after a restart. A job that finishes
successfully despite a cancel (fal's signal to a running app is best effort) still
polls ``succeeded``: its output exists and was billed.
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from genrouter import __version__
from genrouter.backends._billing import billed_cost, price_data
from genrouter.backends._comfy import comfy_artifacts
from genrouter.backends._headers import request_headers
from genrouter.backends._http import error_for_status, make_client, read_json, request_slots, send
from genrouter.backends._mapping import (
    apply_rules,
)
from genrouter.backends._params import (
    DIRECT_FIELDS,
    media_inputs,
    merge_provider_options,
    requested_fields,
    translate_fields,
)
from genrouter.backends._uploads import MediaResolver
from genrouter.backends.fal._settings import FalSettings
from genrouter.backends.fal._storage import DEFAULT_REST_URL, MAX_UPLOAD_BYTES, FalStorage
from genrouter.backends.fal._translate import (
    IMAGE_SIZE_PRESETS,
    OUTPUT_FORMATS,
    FalInput,
    put,
    rule_duration,
    translate_duration,
    translate_format,
    translate_size,
)
from genrouter.catalog._workflows import workflow_inputs
from genrouter.engine._deadline import remaining_s
from genrouter.errors import (
    AuthenticationError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    SubmitOutcomeUnknownError,
)
from genrouter.types import (
    Artifact,
    ArtifactKind,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
    Timings,
)
from genrouter.util._secrets import is_credential_header, register_secret, scrub

if TYPE_CHECKING:
    from genrouter.catalog import Deployment

__all__ = ["DEFAULT_BASE_URL", "IMAGE_SIZE_PRESETS", "FalBackend"]

DEFAULT_BASE_URL = "https://queue.fal.run"
"""fal's queue host; ``providers.<name>.base_url`` replaces it."""

_NAMESPACES = ("workflows", "comfy")
_BARE_APP_ID = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")
_CANCELLED_ERROR_TYPES = frozenset({"client_cancelled"})
_RETRYABLE_JOB_ERRORS = frozenset({"startup_timeout"})
_NOT_RETRYABLE_ERRORS = frozenset({"runner_server_error"})
_MAX_LOGS = 20
_REMEMBERED = 10_000
"""Terminal statuses and sent cancels remembered per backend (oldest forgotten first)."""


def _credentials(settings: FalSettings) -> tuple[str | None, list[str]]:
    """The fal key (settings, else the environment as :meth:`FalSettings.section_from_env` reads
    it: ``FAL_KEY``, ``FAL_KEY_ID:FAL_KEY_SECRET``) and the secrets to redact."""
    key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    if not key:
        key = str((FalSettings.section_from_env(os.environ) or {}).get("api_key", ""))
    if not key:
        return None, []
    _, colon, secret = key.partition(":")
    return key, [key, secret] if colon and secret else [key]


def _header_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    return None


def _job_error_retryable(error_type: str | None) -> bool:
    """Whether a failed job is worth running again: runner failures yes, the model's own errors no."""
    if not error_type or error_type in _NOT_RETRYABLE_ERRORS:
        return False
    return error_type.startswith("runner_") or error_type in _RETRYABLE_JOB_ERRORS


def _owner_alias(endpoint: str) -> str:
    """The app part of an endpoint id, as fal's queue status/result/cancel URLs use it."""
    parts = endpoint.strip("/").split("/")
    if len(parts) == 1:
        match = _BARE_APP_ID.match(parts[0])
        return f"{match.group(1)}/{match.group(2)}" if match else parts[0]
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


@dataclass(frozen=True, slots=True)
class _Terminal:
    """A finished job as fal's last status answer described it."""

    status: JobStatus
    error_type: str | None = None
    retryable: bool | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class FalBackend:
    """Drives fal.ai's queue API (see the module docstring).

    ``name`` is the provider's config key; ``settings`` its config section;
    ``transport`` an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        *,
        name: str,
        settings: FalSettings | Mapping[str, Any],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = (
            settings
            if isinstance(settings, FalSettings)
            else FalSettings.model_validate({**settings, "type": "fal"})
        )
        key, secrets = _credentials(self.settings)
        for secret in secrets:
            register_secret(secret)
        self.unavailable_reason: str | None = (
            None if key else f"no fal credentials: set FAL_KEY or providers.{name}.api_key"
        )
        headers = {"User-Agent": f"genrouter/{__version__} (fal)", "Accept": "application/json"}
        for header, value in self.settings.provider_headers.items():
            if is_credential_header(header):
                register_secret(value)
            headers[header] = value
        if key:
            headers["Authorization"] = f"Key {key}"
        self._base_url = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._base = httpx.URL(self._base_url)
        self._client = make_client(
            base_url=self._base_url,
            timeout_s=self.settings.timeout_s,
            headers=headers,
            transport=transport,
        )
        # The upload host gets a client of its own, holding no credentials.
        cdn = make_client(
            base_url=self._base_url,
            timeout_s=max(self.settings.timeout_s, 120.0),
            headers={"User-Agent": headers["User-Agent"]},
            transport=transport,
        )
        self._storage = FalStorage(
            provider=name,
            api=self._client,
            cdn=cdn,
            rest_url=self.settings.rest_url or DEFAULT_REST_URL,
        )
        self._media = MediaResolver(
            provider=name,
            inline_max_bytes=self.settings.inline_max_bytes,
            max_bytes=self.settings.max_upload_bytes or MAX_UPLOAD_BYTES,
            upload=self._storage.upload,
        )
        self._terminal: OrderedDict[str, _Terminal] = OrderedDict()
        self._cancel_sent: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    def __repr__(self) -> str:
        base = self._base.copy_with(username=None, password=None)
        return f"FalBackend(name={self.name!r}, base_url={str(base)!r})"

    def latency_hint(self, deployment: Deployment) -> float | None:
        """None: fal publishes no latency figures, so routing learns them from observations."""
        return None

    # -- Backend protocol -------------------------------------------------------------

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Enqueue the request at fal (one POST, never re-sent) and return its job."""
        # The router may run this coroutine's first step in its own task and the rest in
        # a new one (genrouter.engine._eager); httpx's anyio cancel scopes must not straddle the
        # two, so suspend once before any I/O starts.
        await asyncio.sleep(0)
        self._check_usable()
        headers = request_headers(request, self.name)
        # Media first, outside a request slot: an upload may take a while and asks fal's
        # REST host for a token through this client.
        if deployment.kind == "workflow":
            where = f"{self.name} ({deployment.endpoint})"
            media = await workflow_inputs(request, deployment, where=where, media=self._media.url)
        else:
            media = await media_inputs(request, deployment, self._media.url, provider=self.name)
        # The body is built once a request slot is free: submits queued behind thousands
        # of polls then hold no payloads (translation makes no request of its own).
        async with request_slots(self._client):
            fal_input = await self._translate(deployment, request, media)
            left = remaining_s()
            if left is not None and "x-fal-request-timeout" not in {h.lower() for h in headers}:
                headers["X-Fal-Request-Timeout"] = str(max(1, math.floor(left)))
            response = await send(
                self._client,
                "POST",
                deployment.endpoint.strip("/"),
                provider=self.name,
                idempotent=False,
                json_body=fal_input.payload,
                headers=headers or None,
                params={"fal_webhook": webhook_url} if webhook_url else None,
                slot_held=True,
            )
        if response.status_code >= 400:
            raise self._submit_error(response, deployment, fal_input.names)
        try:
            body = read_json(response, provider=self.name)
        except ProviderUnavailableError as exc:
            raise self._accepted_but_unreadable(response, "its body is not JSON") from exc
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise self._accepted_but_unreadable(response, "it carries no request_id")
        base = f"{_owner_alias(deployment.endpoint)}/requests/{request_id}"
        return ProviderJob(
            provider=self.name,
            endpoint=deployment.endpoint,
            provider_request_id=request_id,
            data={
                "status_url": self._queue_url(body.get("status_url"), f"{base}/status"),
                "response_url": self._queue_url(body.get("response_url"), base),
                "cancel_url": self._queue_url(body.get("cancel_url"), f"{base}/cancel"),
                "output_format": fal_input.output_format,
                "duration_s": fal_input.duration_s,
                "names": fal_input.names,
                "price": price_data(deployment),
            },
            warnings=fal_input.warnings,
        )

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The job's state at fal (``GET status_url?logs=1``); finished states are remembered."""
        terminal = self._terminal.get(job.provider_request_id)
        if terminal is not None:
            return terminal.status
        return await self._status(job)

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The outputs of a completed job; :class:`JobFailedError` for a failed or cancelled one."""
        rid = job.provider_request_id
        terminal = self._terminal.get(rid)
        if terminal is None:
            current = await self._status(job)
            terminal = self._terminal.get(rid)
            if terminal is None:
                raise JobFailedError(
                    f"{self.name}: job {rid} has not finished",
                    provider=self.name,
                    provider_request_id=rid,
                    state=current.state.value,
                    retryable=True,
                )
        status = terminal.status
        if status.state is JobState.CANCELLED:
            raise JobFailedError.cancelled(self.name, rid)
        if status.state is JobState.FAILED:
            retryable = terminal.retryable
            if retryable is None:
                retryable = _job_error_retryable(terminal.error_type)
            raise JobFailedError(
                f"{self.name}: job {rid} failed: {status.error}",
                provider=self.name,
                provider_request_id=rid,
                retryable=retryable,
            )
        response = await self._send("GET", self._url(job, "response_url"))
        if response.status_code >= 400:
            raise self._result_error(response, job)
        output = read_json(response, provider=self.name)
        if not isinstance(output, dict):
            raise ProviderUnavailableError(
                f"{self.name}: result of job {rid} is not a JSON object",
                provider=self.name,
                provider_request_id=rid,
                status_code=response.status_code,
            )
        outputs = self._artifacts(output, job)
        if not outputs:
            raise JobFailedError(
                f"{self.name}: job {rid} completed without any media output "
                f"(keys: {', '.join(sorted(output)[:10]) or 'none'}); a safety filter may have removed it",
                provider=self.name,
                provider_request_id=rid,
            )
        seed = output.get("seed")
        billed = billed_cost(
            job.data.get("price"), response.headers.get("x-fal-billable-units"), what="x-fal-billable-units"
        )
        return GenerationResult(
            id="",
            model=job.endpoint,
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=rid,
            outputs=outputs,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None,
            cost=billed or Cost(),
            timings=Timings(running_s=_running_s(terminal.metrics, output)),
            raw=output,
        )

    async def cancel(self, job: ProviderJob) -> None:
        """``PUT cancel_url``. Harmless on a finished (400 ALREADY_COMPLETED) or unknown (404) job."""
        rid = job.provider_request_id
        terminal = self._terminal.get(rid)
        if terminal is not None:
            return
        self._check_usable()
        response = await self._send("PUT", self._url(job, "cancel_url"), urgent=True)
        status = response.status_code
        if status < 300:
            self._remember(self._cancel_sent, rid, None)
            return
        if status == 404:
            return
        if status == 400 and _body_field(response, "status") == "ALREADY_COMPLETED":
            return
        raise self._http_error(response, provider_request_id=rid)

    async def aclose(self) -> None:
        """Close the HTTP client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
        await self._storage.aclose()

    # -- HTTP --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ProviderUnavailableError(
                f"{self.name}: backend is closed", provider=self.name, retryable=False
            )
        if self.unavailable_reason:
            raise AuthenticationError(f"{self.name}: {self.unavailable_reason}", provider=self.name)

    async def _send(
        self, method: str, url: str, params: Mapping[str, str] | None = None, *, urgent: bool = False
    ) -> httpx.Response:
        self._check_usable()
        return await send(
            self._client, method, url, provider=self.name, idempotent=True, params=params, urgent=urgent
        )

    def _queue_url(self, returned: object, path: str) -> str:
        """fal's returned URL when it is on the configured host, else its path on that host."""
        if isinstance(returned, str):
            try:
                url = httpx.URL(returned)
            except httpx.InvalidURL:
                url = None
            if url is not None and url.scheme in ("http", "https") and url.host:
                if (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port):
                    return returned
                target = url.raw_path.decode("ascii")
                return self._base_url + (target if target.startswith("/") else f"/{target}")
        return f"{self._base_url}/{path}"

    def _url(self, job: ProviderJob, kind: str) -> str:
        url = job.data.get(kind)
        if isinstance(url, str) and url:
            return url
        base = f"{_owner_alias(job.endpoint)}/requests/{job.provider_request_id}"
        suffix = {"status_url": "/status", "cancel_url": "/cancel"}.get(kind, "")
        return f"{self._base_url}/{base}{suffix}"

    async def _status(self, job: ProviderJob) -> JobStatus:
        rid = job.provider_request_id
        response = await self._send("GET", self._url(job, "status_url"), params={"logs": "1"})
        if response.status_code == 404 and rid in self._cancel_sent:
            status = JobStatus(state=JobState.CANCELLED, provider=self.name, provider_request_id=rid)
            self._remember(self._terminal, rid, _Terminal(status))
            return status
        if response.status_code >= 400:
            raise self._http_error(response, provider_request_id=rid)
        body = read_json(response, provider=self.name)
        state = body.get("status") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(state, str):
            raise ProviderUnavailableError(
                f"{self.name}: malformed status answer for job {rid}: {scrub(repr(body))[:200]}",
                provider=self.name,
                provider_request_id=rid,
                status_code=response.status_code,
            )
        if state == "IN_QUEUE":
            position = body.get("queue_position")
            return JobStatus(
                state=JobState.QUEUED,
                provider=self.name,
                provider_request_id=rid,
                queue_position=position
                if isinstance(position, int) and not isinstance(position, bool)
                else None,
            )
        logs = _log_lines(body.get("logs"))
        if state == "IN_PROGRESS":
            return JobStatus(state=JobState.RUNNING, provider=self.name, provider_request_id=rid, logs=logs)
        if state != "COMPLETED":
            raise ProviderUnavailableError(
                f"{self.name}: job {rid} has status {state[:50]!r}, which genrouter does not know",
                provider=self.name,
                provider_request_id=rid,
                status_code=response.status_code,
                retryable=False,
            )
        error, error_type = body.get("error"), body.get("error_type")
        error_type = error_type if isinstance(error_type, str) and error_type else None
        metrics = body.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        if not error and not error_type:
            done = JobStatus(state=JobState.SUCCEEDED, provider=self.name, provider_request_id=rid, logs=logs)
            self._remember(self._terminal, rid, _Terminal(done, metrics=metrics))
            return done
        cancelled = rid in self._cancel_sent or error_type in _CANCELLED_ERROR_TYPES
        message = scrub(str(error or error_type))[:500] + (f" ({error_type})" if error and error_type else "")
        failed = JobStatus(
            state=JobState.CANCELLED if cancelled else JobState.FAILED,
            provider=self.name,
            provider_request_id=rid,
            logs=logs,
            error=message,
        )
        retryable = _header_bool(response.headers.get("x-fal-retryable"))
        self._remember(self._terminal, rid, _Terminal(failed, error_type, retryable, metrics))
        return failed

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _REMEMBERED:
            store.popitem(last=False)

    # -- errors ------------------------------------------------------------------------

    def _http_error(
        self,
        response: httpx.Response,
        *,
        provider_request_id: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> GenRouterError:
        """The genrouter error for fal's error answer (see the module docstring's table)."""
        body = _json_or_none(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        error_type = body.get("error_type") if isinstance(body, dict) else None
        if not isinstance(error_type, str) or not error_type:
            error_type = response.headers.get("x-fal-error-type")
        fields = _validation_fields(detail, names or {})
        if fields:
            text = "; ".join(f"{name}: {msg}" for name, msg in fields)
        elif detail is not None:
            text = detail if isinstance(detail, str) else repr(detail)
        else:
            text = response.text[:500] if response.content else response.reason_phrase
        if error_type:
            text = f"{text} (error_type={error_type})"
        status = response.status_code
        retryable = _header_bool(response.headers.get("x-fal-retryable"))
        if status == 504 and (response.headers.get("x-fal-request-timeout-type") or "").lower() == "user":
            return ProviderUnavailableError(
                scrub(f"HTTP 504 from {self.name}: the job did not start before its start timeout: {text}"),
                provider=self.name,
                status_code=status,
                provider_request_id=provider_request_id,
                retryable=False,
            )
        if retryable is None and status >= 500 and error_type in _NOT_RETRYABLE_ERRORS:
            retryable = False
        error = error_for_status(
            response,
            provider=self.name,
            message=text,
            provider_request_id=provider_request_id,
            retryable=retryable,
            fields=fields or None,
        )
        if (
            retryable is not None
            and isinstance(error, ProviderError)
            and not isinstance(error, AuthenticationError)
            and not isinstance(error, InvalidRequestError)
        ):
            error.retryable = retryable
        return error

    def _submit_error(
        self, response: httpx.Response, deployment: Deployment, names: Mapping[str, str]
    ) -> GenRouterError:
        status = response.status_code
        fal_error = _body_field(response, "error_type") or response.headers.get("x-fal-error-type")
        if status in (502, 504) and not fal_error and "x-fal-request-id" not in response.headers:
            return SubmitOutcomeUnknownError(
                f"{self.name}: a gateway answered the submit with HTTP {status}; fal may have "
                "enqueued the job anyway, so it is not resubmitted to this provider",
                provider=self.name,
            )
        if status == 404:
            return ProviderError(
                scrub(
                    f"HTTP 404 from {self.name}: no fal endpoint {deployment.endpoint!r} "
                    f"(check providers.{self.name}.models or the catalog): {response.text[:200]}"
                ),
                provider=self.name,
                status_code=status,
                retryable=False,
            )
        return self._http_error(response, names=names)

    def _result_error(self, response: httpx.Response, job: ProviderJob) -> GenRouterError:
        """A completed job's result answered an error: a 4xx is the request's fault."""
        rid = job.provider_request_id
        names = job.data.get("names")
        error = self._http_error(
            response, provider_request_id=rid, names=names if isinstance(names, dict) else None
        )
        status = response.status_code
        if 400 <= status < 500 and status not in (401, 402, 403, 404, 410, 429):
            if isinstance(error, InvalidRequestError):
                return error
            return InvalidRequestError(
                error.message, provider=self.name, provider_request_id=rid, status_code=status
            )
        if status in (404, 410):
            return JobFailedError(
                f"{self.name}: the result of job {rid} is gone (HTTP {status})",
                provider=self.name,
                provider_request_id=rid,
                status_code=status,
            )
        return error

    def _accepted_but_unreadable(self, response: httpx.Response, why: str) -> SubmitOutcomeUnknownError:
        return SubmitOutcomeUnknownError(
            f"{self.name}: fal answered the submit with HTTP {response.status_code} but {why}; "
            "the job may exist, so it is not resubmitted to this provider",
            provider=self.name,
        )

    # -- translation -------------------------------------------------------------------

    async def _translate(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        media: tuple[dict[str, Any], list[str], dict[str, str]] | None = None,
    ) -> FalInput:
        """fal's input for ``request`` on ``deployment``, per the catalog's ``params`` mapping.

        ``media``: the media inputs already resolved (:func:`media_inputs`); resolved here
        when not given.
        """
        params = deployment.params
        where = f"{self.name} ({deployment.endpoint})"
        if deployment.kind == "workflow":
            return await self._translate_workflow(deployment, request, where, media)
        payload, warnings = translate_fields(request, deployment, provider=self.name)
        out = FalInput(payload=payload, warnings=warnings)
        for name in requested_fields(request, DIRECT_FIELDS):
            target = params.get(name)
            if target:
                out.names[target] = name
        translate_size(deployment, request, out, where)
        translate_format(params, request, out, where, deployment.rules)
        if request.safety_checker is not None:
            put(out, params, "safety_checker", request.safety_checker, where)
        if request.loras:
            loras = [{"path": lora.source, "scale": lora.scale} for lora in request.loras]
            put(out, params, "loras", loras, where, shown=f"{len(loras)} LoRA(s)")
        translate_duration(deployment, request, out, where)
        if media is None:
            media = await media_inputs(request, deployment, self._media.url, provider=self.name)
        out.payload.update(media[0])
        out.warnings.extend(media[1])
        out.names.update(media[2])
        out.warnings += apply_rules(out.payload, deployment, where)
        rule_duration(deployment, out)
        keys = ("fal", self.name) if self.name != "fal" else ("fal",)
        out.payload = merge_provider_options(out.payload, request, *keys)
        return out

    async def _translate_workflow(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        where: str,
        resolved: tuple[dict[str, Any], list[str], dict[str, str]] | None,
    ) -> FalInput:
        """A ComfyUI endpoint's input: each mapped request field and input under the endpoint's
        name, image inputs through the media path (``resolved``: already done at submit)."""
        if resolved is None:
            resolved = await workflow_inputs(request, deployment, where=where, media=self._media.url)
        payload, warnings, names = resolved
        out = FalInput(payload=dict(payload), warnings=list(warnings), names=dict(names))
        keys = ("fal", self.name) if self.name != "fal" else ("fal",)
        out.payload = merge_provider_options(out.payload, request, *keys)
        return out

    def _artifacts(self, output: Mapping[str, Any], job: ProviderJob) -> list[Artifact]:
        files: list[tuple[ArtifactKind, Any]] = []
        images = output.get("images")
        if isinstance(images, list):
            files += [(ArtifactKind.IMAGE, item) for item in images]
        elif isinstance(output.get("image"), dict | str):
            files.append((ArtifactKind.IMAGE, output["image"]))
        if isinstance(output.get("video"), dict | str):
            files.append((ArtifactKind.VIDEO, output["video"]))
        nsfw = output.get("has_nsfw_concepts")
        flags = nsfw if isinstance(nsfw, list) else []
        fmt = job.data.get("output_format")
        duration = job.data.get("duration_s")
        if not files and isinstance(output.get("outputs"), Mapping):
            return comfy_artifacts(output["outputs"])  # a comfy/ endpoint: files per output node
        artifacts = []
        for index, (kind, item) in enumerate(files):
            info: Mapping[str, Any] = {"url": item} if isinstance(item, str) else item
            if not isinstance(info, Mapping):
                continue
            url = info.get("url")
            if not isinstance(url, str) or not url:
                continue
            flag = flags[index] if index < len(flags) else None
            length = _number(info.get("duration"))
            if length is None or length <= 0:
                length = _number(duration) if kind is ArtifactKind.VIDEO else None
            artifacts.append(
                Artifact(
                    kind=kind,
                    url=url,
                    content_type=_content_type(info.get("content_type"), url, kind, fmt),
                    width=_dimension(info.get("width")),
                    height=_dimension(info.get("height")),
                    duration_s=length,
                    nsfw=flag if isinstance(flag, bool) else None,
                )
            )
        return artifacts


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for anything else (booleans included)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _dimension(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _content_type(reported: Any, url: str, kind: ArtifactKind, output_format: Any) -> str | None:
    """fal's content type, else the URL's, else the requested format's."""
    if isinstance(reported, str) and "/" in reported:
        return reported
    if not url.startswith("data:"):
        guessed = mimetypes.guess_type(httpx.URL(url).path)[0] if "://" in url else None
        if guessed:
            return guessed
    if kind is ArtifactKind.IMAGE and output_format in OUTPUT_FORMATS:
        return f"image/{output_format}"
    return "video/mp4" if kind is ArtifactKind.VIDEO else None


def _running_s(metrics: Mapping[str, Any], output: Mapping[str, Any]) -> float | None:
    """Inference time fal reported: the status ``metrics.inference_time``, else the output's timings."""
    value = _number(metrics.get("inference_time"))
    timings = output.get("timings")
    if value is None and isinstance(timings, dict):
        value = _number(timings.get("inference"))
    return value


def _log_lines(logs: Any) -> list[str]:
    if not isinstance(logs, list):
        return []
    lines = [scrub(str(item.get("message", ""))) for item in logs if isinstance(item, dict)]
    return [line for line in lines if line][-_MAX_LOGS:]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _body_field(response: httpx.Response, name: str) -> Any:
    body = _json_or_none(response)
    return body.get(name) if isinstance(body, dict) else None


def _validation_fields(detail: Any, names: Mapping[str, str]) -> list[tuple[str, str]]:
    """``[("prompt", "field required"), ...]`` from fal's ``detail[].loc/msg``, in request field names."""
    if not isinstance(detail, list):
        return []
    fields = []
    for item in detail:
        if not isinstance(item, dict):
            continue
        loc = [str(part) for part in item.get("loc") or () if part not in ("body", "query")]
        msg = str(item.get("msg") or item.get("type") or "invalid")
        if loc:
            loc[0] = names.get(loc[0], loc[0])
            if loc[0] == "width" and loc[1:2] in (["width"], ["height"]):
                loc = loc[1:]  # image_size.width → width
        fields.append((".".join(loc) or "(request)", msg))
    return fields
