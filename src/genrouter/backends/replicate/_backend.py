"""The Replicate backend: predictions over Replicate's HTTP API, driven with httpx.

Endpoints come from the catalog in Replicate's own notation: ``owner/name`` (an
official model, ``POST /v1/models/{owner}/{name}/predictions``), ``owner/name:<version>``
(a pinned version, ``POST /v1/predictions`` with ``version``) and
``deployments/owner/name`` (``POST /v1/deployments/{owner}/{name}/predictions``). A job
is then polled with ``GET /v1/predictions/{id}`` and cancelled with ``POST .../cancel``;
the router polls with backoff (Replicate has no way to wait on a GET, so this backend has
no ``wait``). States: ``starting`` → queued, ``processing`` → running, ``succeeded``,
``failed``, ``canceled`` → cancelled, and ``aborted`` → cancelled (its deadline passed
before it started; free). An unknown status is a retryable ProviderUnavailableError.

**Why not the ``replicate`` SDK for the calls.** replicate 1.0.7:

- crashes with a pydantic ``ValidationError`` on the status ``aborted`` (a real status
  since Oct 2025), so a job could never be read back once it was aborted;
- drops ``wait`` silently in ``predictions.create(model=...)`` and ``(deployment=...)``,
  so no ``Prefer: wait`` header is sent;
- wraps every transport, even one passed in, in a ``RetryTransport`` that retries GETs up
  to 10 times on 429/503/504: a second retry layer under the router's one;
- cannot send ``Cancel-After``;
- downloads ``FileOutput`` with the API client, sending the bearer token to the file
  delivery host.

So no part of the SDK is imported here (only webhook verification, elsewhere, may use
``replicate.webhooks``). The token goes only to the API host: outputs are
plain URLs, read later by :meth:`Artifact.aread` with a client that has no credentials,
and a prediction's ``urls.get``/``urls.cancel`` are followed only when they point at the
API host itself (a stored job cannot redirect the token elsewhere).

**Create.** ``Prefer: wait=N`` is sent when ``prefer_wait_s`` is set, capped at
``timeout_s - 1`` so the held-open call always answers before the HTTP timeout. A create
that answers with a terminal status keeps the prediction in ``ProviderJob.data``, so
polling and fetching it need no further request. ``Cancel-After`` is sent when the
router routes the create (``generate``, and ``submit`` when the request sets
``deadline_s``): the remaining deadline at that submission, in whole seconds rounded up
(at least 5 s), so a failover or retry carries the time left, not the original deadline.
A result is worthless after its deadline, and Replicate then stops the prediction
server-side (``aborted``, free, if it never started; ``canceled``, billed for the time it
ran, if it was running) even if genrouter's own cancel is lost with a crashed process or
a create abandoned in flight. Driven directly (outside a router), it is sent when the
request sets ``deadline_s``. Replicate has no idempotency key: the create is never
retried here, and a create whose answer was lost (a dropped connection, a read timeout,
or a 502/504 from the gateway in front of the API) raises
:class:`SubmitOutcomeUnknownError` unless the prediction is found by listing (see
:mod:`genrouter.backends.replicate._reconcile`).

**Headers.** The section's ``provider_headers`` go with every call to the API; a
request's ``provider_headers[<key>]`` are merged over them on its create (``Prefer``...).

**Cost.** For a per-second price (``per_gpu_second``) the actual cost is
``metrics.predict_time`` × the price (``Cost.estimated=False``); per-output prices are
priced by the router from the outputs.

**Errors.** RFC 7807 bodies: 422 → :class:`InvalidRequestError` whose ``fields`` name the
request fields (``input.num_inference_steps`` → ``steps``); 429 →
:class:`RateLimitedError` with ``Retry-After`` or the "resets in ~30s" of the detail;
401/402/403 → :class:`AuthenticationError`; 404 → :class:`JobFailedError`; 5xx and
connection failures → retryable :class:`ProviderUnavailableError`. A ``failed``
prediction is a :class:`JobFailedError` with Replicate's error text, retryable only when
that text says the failure was transient (``please retry``, ``interrupted``,
``preempted``, ``temporarily``, ``connection reset``, ``internal error``); model errors
and the safety filter ("NSFW content") are not.

**Inputs.** The catalog's ``params`` map request fields to input names (inline entries
without ``params`` get the shipped catalog's standard mapping). FLUX models take aspect
ratios, not sizes: a size goes to the nearest ratio of the entry's ``aspect_ratio`` value
map (``allowed``; FLUX's list when it has none), and under ``limits.reduced_size`` (flux-dev
and schnell: 0.5 MP) adds its input (``megapixels: "0.25"``), with a warning when the
result differs; output sizes come from ``limits.sizes``. All of it is catalog data, so a new
model is a YAML edit. Models that
map both a size and ``aspect_ratio`` (flux-1.1-pro) get ``aspect_ratio: "custom"`` with the
size in multiples of 16 within 256-1440. ``output_format: jpeg`` is sent as ``jpg``;
``safety_checker`` goes to ``disable_safety_checker`` inverted. Image, mask and ``images``
bytes or a ``Path`` are sent inline as ``data:`` URIs up to ``inline_max_bytes`` (256 KiB,
Replicate's documented limit for data URLs); larger ones are uploaded once per content
with ``POST /v1/files`` and sent as the file's ``urls.get``, up to ``max_upload_bytes``
(default 100 MiB); a string must be an ``http(s):`` or ``data:`` URL. ``provider_options["replicate"]`` then
``provider_options[<provider key>]`` are merged last. Every dropped or changed field is a
warning on the job.

**Outputs.** A URL, a list of URLs (or ``data:`` URIs) become artifacts; a safety filter
may return fewer than asked (the router adds the warning). Replicate's output files
expire about an hour after the prediction, and API predictions' input, output and logs
are deleted after an hour, so read results promptly. Timings: ``queued_s`` =
``started_at - created_at``; ``running_s`` = ``metrics.predict_time`` (what per-second
billing charges).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from genrouter.backends._billing import billed_cost, price_data
from genrouter.backends._headers import merged, request_headers
from genrouter.backends._http import error_for_status, make_client, read_json, send
from genrouter.backends._mapping import apply_rules
from genrouter.backends._params import media_inputs, merge_provider_options, translate_fields
from genrouter.backends._uploads import MediaResolver
from genrouter.backends.replicate._files import MAX_UPLOAD_BYTES, upload_file
from genrouter.backends.replicate._reconcile import (
    CLOCK_SLACK_S,
    RECONCILE_LISTS,
    RECONCILE_MAX_PAGES,
    RECONCILE_MAX_WAIT_S,
    RECONCILE_PAUSE_S,
    ClaimedPredictions,
    created_after,
    holds_data_url,
    matching_prediction,
    past_cutoff,
)
from genrouter.backends.replicate._settings import ReplicateSettings
from genrouter.backends.replicate._translate import (
    FLUX_ASPECT_RATIOS,
    SIZE_FIELDS,
    output_size,
    request_params,
    translate_format,
    translate_loras,
    translate_size,
)
from genrouter.backends.settings import DEFAULT_INLINE_MAX_BYTES
from genrouter.catalog import Deployment
from genrouter.engine import _testing_mode
from genrouter.engine._backoff import Backoff
from genrouter.engine._clock import Clock, MonotonicClock
from genrouter.engine._deadline import remaining_s
from genrouter.errors import (
    AuthenticationError,
    ConfigError,
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

__all__ = ["FLUX_ASPECT_RATIOS", "MAX_INLINE_BYTES", "ReplicateBackend"]

API_URL = "https://api.replicate.com"

MAX_INLINE_BYTES = DEFAULT_INLINE_MAX_BYTES
"""Default largest media input sent inline as a ``data:`` URI (256 KiB, Replicate's documented
limit for data URLs); larger ones are uploaded (``inline_max_bytes`` in the section)."""

PREFER_WAIT_MARGIN_S = 1.0
CANCEL_AFTER_MIN_S = 5
CANCEL_DRAIN_S = 1.0  # how long aclose() lets cancels in flight finish
_FINISHED_KEPT = 1024  # terminal predictions remembered, so poll-then-fetch costs one GET

_STATES = {
    "starting": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "succeeded": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELLED,
    "aborted": JobState.CANCELLED,
}
_ENDPOINT = re.compile(
    r"^(?P<deployment>deployments/)?(?P<model>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<version>\w+))?$"
)
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TRANSIENT_FAILURE = re.compile(
    r"please retry|try again|interrupted|preempt|temporar|connection (?:reset|refused|error)"
    r"|internal (?:server )?error",
    re.IGNORECASE,
)
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$")
_CONTENT_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
    "gif": "image/gif", "mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
}  # fmt: skip
_ELIDE_INPUT_CHARS = 512


class ReplicateBackend:
    """Replicate predictions over one shared ``httpx.AsyncClient`` (see the module docstring).

    ``settings``: a :class:`ReplicateSettings` or its mapping. The token is
    ``api_token``, else ``REPLICATE_API_TOKEN``; without one the backend is built anyway
    and ``unavailable_reason`` says why the planner skips it. ``transport`` replaces
    httpx's (tests).
    """

    def __init__(
        self,
        *,
        name: str,
        settings: ReplicateSettings | Mapping[str, Any],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = MonotonicClock()
        try:
            self.settings = (
                settings
                if isinstance(settings, ReplicateSettings)
                else ReplicateSettings.model_validate({"type": "replicate", **settings})
            )
        except ValidationError as exc:
            raise ConfigError(f"providers.{name}: {exc}", key_path=f"providers.{name}") from exc
        secret = self.settings.api_token
        from_env = ReplicateSettings.section_from_env(os.environ) or {}
        token = ((secret.get_secret_value() if secret else "") or str(from_env.get("api_token", ""))).strip()
        register_secret(token)
        self.unavailable_reason: str | None = (
            None if token else f"no Replicate token: set REPLICATE_API_TOKEN or providers.{name}.api_token"
        )
        from genrouter import __version__

        headers = {"User-Agent": f"genrouter/{__version__}", "Accept": "application/json"}
        for header, value in self.settings.provider_headers.items():
            if is_credential_header(header):
                register_secret(value)
            headers[header] = value
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = self.settings.base_url or API_URL
        self._client = make_client(
            base_url=self.base_url, timeout_s=self.settings.timeout_s, headers=headers, transport=transport
        )
        self._closed = False
        self._finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cancelling: set[asyncio.Task[Any]] = set()
        self._claimed = ClaimedPredictions()
        self._media = MediaResolver(
            provider=name,
            inline_max_bytes=self.settings.inline_max_bytes,
            max_bytes=self.settings.max_upload_bytes or MAX_UPLOAD_BYTES,
            upload=lambda media: upload_file(self._client, media, provider=self.name),
        )

    def __repr__(self) -> str:
        parts = urlsplit(self.base_url)
        host = parts.netloc.rpartition("@")[2]  # never show credentials a proxy URL may carry
        return f"ReplicateBackend(name={self.name!r}, base_url={f'{parts.scheme}://{host}'!r})"

    def latency_hint(self, deployment: Deployment) -> float | None:
        """None: Replicate latency varies with cold boots; the router learns it from observations."""
        return None

    # -- Backend protocol ---------------------------------------------------------------

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Create a prediction; never retried here (Replicate has no idempotency key)."""
        self._check_usable()
        path, version = self._route(deployment.endpoint)
        payload, warnings, meta = await self._translate(deployment, request)
        body: dict[str, Any] = {"input": payload}
        if version is not None:
            body["version"] = version
        if webhook_url is not None:
            body["webhook"] = webhook_url
            body["webhook_events_filter"] = ["completed"]
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"{self.name}: the input is not JSON-serialisable ({exc}); check provider_options",
                field="provider_options",
                provider=self.name,
            ) from exc
        sent_at = time.time()
        try:
            response = await self._send(
                "POST", path, idempotent=False, json_body=body, headers=self._create_headers(request)
            )
            if response.is_error:
                raise self._create_error(response, deployment)
            prediction = self._accepted(response)
        except SubmitOutcomeUnknownError as lost:
            prediction = await self._reconcile(payload, version, sent_at, lost)
            warnings = [
                *warnings,
                f"{self.name}: the create's answer was lost; found its prediction by listing",
            ]
        self._claimed.add(prediction["id"])
        data: dict[str, Any] = {
            "urls": _urls(prediction),
            "kind": deployment.kind,
            "price": price_data(deployment),
            **meta,
        }
        if _STATES.get(prediction["status"], JobState.QUEUED).is_terminal:
            data["prediction"] = _compact(prediction)
            self._remember(prediction)
        return ProviderJob(
            provider=self.name,
            endpoint=deployment.endpoint,
            provider_request_id=prediction["id"],
            data=data,
            warnings=warnings,
        )

    def bind_clock(self, clock: Clock) -> None:
        """Wait between reconciliation looks on the router's clock."""
        self._clock = clock

    async def _reconcile(
        self, payload: dict[str, Any], version: str | None, sent_at: float, lost: SubmitOutcomeUnknownError
    ) -> dict[str, Any]:
        """The prediction a lost create made; ``lost`` (the outcome stays unknown) otherwise.

        See :mod:`genrouter.backends.replicate._reconcile`. Each look walks every page of
        the listing back past the create's time; a create that is not found after two
        complete looks, whose listings fail or ask for a wait over
        ``RECONCILE_MAX_WAIT_S``, or whose input holds ``data:`` URLs (Replicate does
        not store them, so it could never match) is never sent to this provider again.
        """
        if holds_data_url(payload):
            raise lost
        looks = 0
        pause = 0.0
        # A steady pause between looks (the caller bounds their number); it is compared
        # with RECONCILE_MAX_WAIT_S as is, and set_testing() removes the wait itself.
        delays = Backoff(RECONCILE_PAUSE_S, RECONCILE_PAUSE_S, testing_zero=False)
        for _ in range(RECONCILE_LISTS + 1):
            if pause:
                await self._clock.sleep(0.0 if _testing_mode.enabled else pause)
            pause = next(delays)
            try:
                found = await self._find_created(payload, version, sent_at)
            except GenRouterError as exc:
                pause = max(pause, exc.retry_after or 0.0)
                if not exc.retryable or pause > RECONCILE_MAX_WAIT_S:
                    raise lost from exc
                continue
            if found is not None:
                return found
            looks += 1
            if looks == 2:  # a second look covers a create still being written
                break
        raise lost

    async def _find_created(
        self, payload: dict[str, Any], version: str | None, sent_at: float
    ) -> dict[str, Any] | None:
        """One look through the listing, page by page, for the lost create's prediction.

        None when every page back past the create's time was read without a match;
        ``ProviderUnavailableError`` when the listing could not be read to its end.
        """
        cutoff = sent_at - CLOCK_SLACK_S
        url: str = "/v1/predictions"
        params: dict[str, str] | None = {"created_after": created_after(sent_at)}
        for _ in range(RECONCILE_MAX_PAGES):
            response = await self._send("GET", url, idempotent=True, params=params)
            if response.is_error:
                raise self._error(response, None)
            listing = read_json(response, provider=self.name)
            results = listing.get("results") if isinstance(listing, dict) else None
            if not isinstance(results, list):
                raise ProviderUnavailableError(
                    f"{self.name}: the prediction listing has no results", provider=self.name
                )
            found = matching_prediction(results, payload, version, self._claimed)
            if found is not None:
                return found
            following = listing.get("next")
            if not isinstance(following, str) or not following or past_cutoff(results, cutoff):
                return None
            if not self._same_host(following):
                raise ProviderUnavailableError(
                    f"{self.name}: the prediction listing's next page is on another host", provider=self.name
                )
            url, params = following, None
        raise ProviderUnavailableError(
            f"{self.name}: over {RECONCILE_MAX_PAGES} pages of predictions since the lost create; "
            "not read to the end",
            provider=self.name,
            retryable=False,
        )

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The prediction's state: one GET, or none once it is known to be finished."""
        prediction = await self._prediction(job)
        state = _state(prediction, self.name)
        logs = prediction.get("logs")
        return JobStatus(
            state=state,
            provider=self.name,
            provider_request_id=job.provider_request_id,
            logs=logs.strip().splitlines()[-5:] if isinstance(logs, str) and logs.strip() else [],
            error=_error_text(prediction) if state in (JobState.FAILED, JobState.CANCELLED) else None,
        )

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The outputs of a succeeded prediction; the prediction's error otherwise."""
        prediction = await self._prediction(job)
        state = _state(prediction, self.name)
        rid = job.provider_request_id
        if state is JobState.SUCCEEDED:
            return self._result(job, prediction)
        if state is JobState.FAILED:
            raise _failure(prediction, self.name, rid)
        if state is JobState.CANCELLED:
            why = (
                "was aborted: its deadline passed before it started (not billed)"
                if prediction.get("status") == "aborted"
                else "was cancelled"
            )
            raise JobFailedError(
                f"{self.name}: prediction {rid} {why}",
                provider=self.name,
                provider_request_id=rid,
                state="cancelled",
            )
        raise JobFailedError(
            f"{self.name}: prediction {rid} has not finished ({prediction.get('status')})",
            provider=self.name,
            provider_request_id=rid,
            state=state.value,
            retryable=True,
        )

    async def cancel(self, job: ProviderJob) -> None:
        """``POST .../cancel``; nothing is sent for a prediction known to be finished."""
        if self._known_finished(job) is not None:
            return
        self._check_usable()
        rid = job.provider_request_id
        task = asyncio.current_task()
        if task is not None:
            self._cancelling.add(task)
        try:
            response = await self._send(
                "POST", self._prediction_url(job, "cancel"), idempotent=True, urgent=True
            )
        finally:
            if task is not None:
                self._cancelling.discard(task)
        if response.status_code == 404:
            return  # gone (expired or never created): nothing left to stop
        if response.is_error:
            raise self._error(response, rid)
        with contextlib.suppress(GenRouterError):  # accepted; its echo of the prediction is optional
            self._remember(_checked(read_json(response, provider=self.name), self.name, rid))

    async def aclose(self) -> None:
        """Close the HTTP client, after letting cancels in flight land (at most 1 s). Idempotent.

        A cancel stops a prediction that would otherwise run and bill, and one may still be
        on the wire when the router is closed (a hedge loser is cancelled in the background
        after the winner returned).
        """
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        pending = [t for t in self._cancelling if t is not current and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_DRAIN_S)
        await self._client.aclose()

    # -- HTTP --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ProviderError(f"{self.name}: the backend was closed", provider=self.name, retryable=False)
        if self.unavailable_reason is not None:
            raise AuthenticationError(f"{self.name}: {self.unavailable_reason}", provider=self.name)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        urgent: bool = False,
    ) -> httpx.Response:
        return await send(
            self._client,
            method,
            url,
            provider=self.name,
            idempotent=idempotent,
            json_body=json_body,
            headers=headers,
            params=params,
            urgent=urgent,
        )

    def _route(self, endpoint: str) -> tuple[str, str | None]:
        """(create path, version) for a catalog endpoint."""
        match = _ENDPOINT.match(endpoint)
        if match is None or (match["deployment"] and match["version"]):
            raise ConfigError(
                f"{self.name}: endpoint {endpoint!r} is not 'owner/name', 'owner/name:<version>' "
                "or 'deployments/owner/name'",
                key_path=f"providers.{self.name}.models",
            )
        if match["deployment"]:
            return f"/v1/deployments/{match['model']}/predictions", None
        if match["version"]:
            return "/v1/predictions", match["version"]
        return f"/v1/models/{match['model']}/predictions", None

    def _create_headers(self, request: GenerationRequest) -> dict[str, str]:
        headers: dict[str, str] = {}
        prefer = self.settings.prefer_wait_s
        if prefer is not None:
            wait = min(prefer, math.floor(self.settings.timeout_s - PREFER_WAIT_MARGIN_S))
            if wait >= 1:
                headers["Prefer"] = f"wait={wait}"
        left = remaining_s()
        if left is None:
            left = request.deadline_s
        if left is not None:
            headers["Cancel-After"] = f"{max(CANCEL_AFTER_MIN_S, math.ceil(left))}s"
        return merged(headers, request_headers(request, self.name))

    def _accepted(self, response: httpx.Response) -> dict[str, Any]:
        """The created prediction; a 2xx we cannot read may still have created one."""
        try:
            return _checked(response.json(), self.name)
        except (ValueError, GenRouterError) as exc:
            raise SubmitOutcomeUnknownError(
                scrub(
                    f"{self.name}: HTTP {response.status_code} to a create, but its body is not a "
                    f"prediction ({response.text[:200]!r}); not resubmitted to this provider"
                ),
                provider=self.name,
                status_code=response.status_code,
            ) from exc

    def _create_error(self, response: httpx.Response, deployment: Deployment) -> GenRouterError:
        status = response.status_code
        title, detail, invalid = _problem(response)
        if status in (502, 504):
            # The gateway answered for an API that may have created the prediction.
            return SubmitOutcomeUnknownError(
                scrub(
                    f"HTTP {status} from {self.name} to a create: {detail or title or 'gateway error'}; "
                    "the prediction may exist, so it is not resubmitted to this provider"
                ),
                provider=self.name,
                status_code=status,
            )
        params = request_params(deployment)
        fields = [(_request_field(field, params), text) for field, text in invalid]
        message: str | None = ": ".join(p for p in (title, detail) if p) or None
        if fields:
            named = "; ".join(
                f"{name}: {text}" + (f" ({raw})" if name != raw else "")
                for (name, text), (raw, _) in zip(fields, invalid, strict=True)
            )
            message = f"{title or 'Input validation failed'}: {named}"
        return error_for_status(response, provider=self.name, message=message, fields=fields or None)

    def _error(self, response: httpx.Response, rid: str | None) -> GenRouterError:
        title, detail, _ = _problem(response)
        message = ": ".join(p for p in (title, detail) if p) or None
        return error_for_status(response, provider=self.name, message=message, provider_request_id=rid)

    def _same_host(self, url: str) -> bool:
        try:
            target, base = httpx.URL(url), httpx.URL(self.base_url)
        except (httpx.InvalidURL, TypeError):
            return False
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    def _prediction_url(self, job: ProviderJob, kind: str) -> str:
        url = (job.data.get("urls") or {}).get(kind)
        if isinstance(url, str) and self._same_host(url):
            return url
        rid = job.provider_request_id
        if not _PREDICTION_ID.match(rid):
            raise JobFailedError(f"{self.name}: {rid!r} is not a Replicate prediction id", provider=self.name)
        return f"/v1/predictions/{rid}" + ("/cancel" if kind == "cancel" else "")

    def _known_finished(self, job: ProviderJob) -> dict[str, Any] | None:
        stored = job.data.get("prediction")
        if isinstance(stored, dict) and _STATES.get(stored.get("status", "")) in _TERMINAL:
            return stored
        return self._finished.get(job.provider_request_id)

    def _remember(self, prediction: dict[str, Any]) -> None:
        if _STATES.get(prediction.get("status", "")) in _TERMINAL:
            self._finished[prediction["id"]] = prediction
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)

    async def _prediction(self, job: ProviderJob) -> dict[str, Any]:
        known = self._known_finished(job)
        if known is not None:
            return known
        self._check_usable()
        rid = job.provider_request_id
        url = self._prediction_url(job, "get")
        response = await self._send("GET", url, idempotent=True)
        if response.is_error:
            raise self._error(response, rid)
        prediction = _checked(read_json(response, provider=self.name), self.name, rid)
        self._remember(prediction)
        return prediction

    # -- translation -----------------------------------------------------------------------

    async def _translate(
        self, deployment: Deployment, request: GenerationRequest
    ) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """(input, warnings, job metadata) for ``request`` on ``deployment``."""
        params = request_params(deployment)
        deployment = dataclasses.replace(deployment, params=params)
        prefix = f"{self.name} ({deployment.endpoint})"
        payload, warnings = translate_fields(request, deployment, provider=self.name)
        options = merge_provider_options({}, request, "replicate", self.name)
        size_keys = {params.get(f) or f for f in SIZE_FIELDS} | {"megapixels"}
        if not size_keys & options.keys():  # options that set a size own it
            sized, notes = translate_size(request, deployment, params, prefix)
            payload.update(sized)
            warnings += notes
        warnings += translate_format(request, deployment, params, payload, prefix)
        if request.safety_checker is not None:
            target = params.get("safety_checker")
            if target and "safety_checker" in deployment.rules:
                payload[target] = request.safety_checker  # the value map inverts it
            elif target:  # Replicate's checkers are switched off: disable_safety_checker = not on
                inverted = target.startswith("disable_")
                payload[target] = not request.safety_checker if inverted else request.safety_checker
            else:
                warnings.append(f"{prefix} has no safety_checker input; safety_checker was ignored")
        media, notes, _ = await media_inputs(request, deployment, self._media.url, provider=self.name)
        payload.update(media)
        warnings += notes
        warnings += translate_loras(request, params, payload, prefix)
        duration = request.duration_s
        if duration is not None:
            target = params.get("duration_s")
            if target:
                payload[target] = int(duration) if duration.is_integer() else duration
            elif duration != deployment.limits.default_duration_s:
                warnings.append(f"{prefix} has no duration_s input; duration_s={duration:g} was ignored")
        warnings += apply_rules(payload, deployment, prefix)
        payload.update(options)
        size = output_size(payload, params, deployment.limits)
        meta = {
            "size": list(size) if size else None,
            "seed": request.seed,
            "duration_s": duration if params.get("duration_s") else deployment.limits.default_duration_s,
        }
        return payload, warnings, meta

    # -- results -------------------------------------------------------------------------------

    def _result(self, job: ProviderJob, prediction: dict[str, Any]) -> GenerationResult:
        rid = job.provider_request_id
        urls = _output_urls(prediction.get("output"))
        if not urls:
            removed = (
                " (Replicate removes API outputs after an hour)" if prediction.get("data_removed") else ""
            )
            raise JobFailedError(
                f"{self.name}: prediction {rid} succeeded without outputs{removed}",
                provider=self.name,
                provider_request_id=rid,
            )
        size = job.data.get("size") or (None, None)
        video = job.data.get("kind") == "video"
        outputs = []
        for url in urls:
            content_type = _content_type(url)
            kind = ArtifactKind.VIDEO if video else ArtifactKind.IMAGE
            if content_type is not None and content_type.startswith(("video/", "image/")):
                kind = ArtifactKind.VIDEO if content_type.startswith("video/") else ArtifactKind.IMAGE
            outputs.append(
                Artifact(
                    kind=kind,
                    url=url,
                    content_type=content_type,
                    width=size[0],
                    height=size[1],
                    duration_s=job.data.get("duration_s") if kind is ArtifactKind.VIDEO else None,
                )
            )
        timings = _timings(prediction)
        metrics = prediction.get("metrics")
        predict = metrics.get("predict_time") if isinstance(metrics, dict) else None
        billed = None
        if isinstance(predict, int | float) and not isinstance(predict, bool) and math.isfinite(predict):
            billed = billed_cost(
                job.data.get("price"),
                repr(float(predict)),
                what="metrics.predict_time",
                unit="per_gpu_second",
            )
        return GenerationResult(
            id="",
            model=job.endpoint,
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=rid,
            outputs=outputs,
            seed=job.data.get("seed"),
            cost=billed or Cost(),
            timings=timings,
            raw=_compact(prediction),
        )


# -- helpers: predictions ------------------------------------------------------------------------

_TERMINAL = frozenset(s for s in _STATES.values() if s.is_terminal)


def _checked(data: Any, provider: str, rid: str | None = None) -> dict[str, Any]:
    """``data`` if it is a prediction (with ``rid`` when given), else ProviderUnavailableError."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("id"), str)
        or not _PREDICTION_ID.match(data["id"])
        or not isinstance(data.get("status"), str)
    ):
        raise ProviderUnavailableError(
            scrub(f"{provider}: expected a prediction, got {str(data)[:200]!r}"), provider=provider
        )
    if rid is not None and data["id"] != rid:
        raise ProviderUnavailableError(
            f"{provider}: asked for prediction {rid}, got {data['id']}", provider=provider
        )
    return data


def _state(prediction: Mapping[str, Any], provider: str) -> JobState:
    status = prediction.get("status")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise ProviderUnavailableError(
            f"{provider}: prediction {prediction.get('id')} has unknown status {status!r}",
            provider=provider,
            provider_request_id=prediction.get("id"),
        )
    return state


def _urls(prediction: Mapping[str, Any]) -> dict[str, str]:
    urls = prediction.get("urls")
    if not isinstance(urls, dict):
        return {}
    return {k: v for k, v in urls.items() if k in ("get", "cancel") and isinstance(v, str)}


def _error_text(prediction: Mapping[str, Any]) -> str:
    error = prediction.get("error")
    if isinstance(error, str) and error.strip():
        return error.strip()
    if prediction.get("status") == "aborted":
        return "aborted: its deadline passed before it started"
    return str(prediction.get("status"))


def _failure(prediction: Mapping[str, Any], provider: str, rid: str) -> JobFailedError:
    """A failed prediction's error: retryable only when Replicate says it was transient."""
    text = _error_text(prediction)
    nsfw = "nsfw" in text.lower()
    return JobFailedError(
        f"{provider}: prediction {rid} failed: {text[:1000]}",
        provider=provider,
        provider_request_id=rid,
        retryable=not nsfw and bool(_TRANSIENT_FAILURE.search(text)),
    )


def _problem(response: httpx.Response) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """(title, detail, [(field, description)]) of an RFC 7807 body; Nones when not one."""
    try:
        body = response.json()
    except ValueError:
        return None, None, []
    if not isinstance(body, dict):
        return None, None, []
    title = body.get("title") if isinstance(body.get("title"), str) else None
    detail = body.get("detail") if isinstance(body.get("detail"), str) else None
    invalid: list[tuple[str, str]] = []
    for item in body.get("invalid_fields") or []:
        if isinstance(item, dict) and isinstance(item.get("field"), str):
            text = item.get("description") or item.get("type") or "invalid"
            invalid.append((item["field"], str(text)))
    return title, detail, invalid


def _request_field(field: str, params: Mapping[str, str | None]) -> str:
    """``input.num_inference_steps`` → ``steps`` via the mapping; else Replicate's name."""
    name = field.removeprefix("input.")
    if name == field:
        return field
    reverse = {target: request_field for request_field, target in params.items() if target}
    return reverse.get(name, field)


def _compact(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction for ``raw`` and job data: long ``data:`` inputs elided, webhook scrubbed."""
    compact = dict(prediction)
    inputs = compact.get("input")
    if isinstance(inputs, dict):
        compact["input"] = {
            k: f"{v[:40]}...({len(v)} chars)"
            if isinstance(v, str) and v.startswith("data:") and len(v) > _ELIDE_INPUT_CHARS
            else v
            for k, v in inputs.items()
        }
    if isinstance(compact.get("webhook"), str):
        compact["webhook"] = scrub(compact["webhook"])
    return compact


def _parse_time(value: Any) -> datetime | None:
    """RFC 3339 with any number of fractional digits (Replicate sends 3 to 8) and ``Z``."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    date, time, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{date}T{time}.{(fraction or '')[:6].ljust(6, '0')}{zone}")
    except ValueError:
        return None


def _timings(prediction: Mapping[str, Any]) -> Timings:
    created, started, completed = (
        _parse_time(prediction.get(k)) for k in ("created_at", "started_at", "completed_at")
    )
    queued = (started - created).total_seconds() if created and started else None
    metrics = prediction.get("metrics")
    predict = metrics.get("predict_time") if isinstance(metrics, dict) else None
    if isinstance(predict, int | float) and not isinstance(predict, bool) and math.isfinite(predict):
        running: float | None = float(predict)
    else:
        running = (completed - started).total_seconds() if started and completed else None
    return Timings(
        queued_s=queued if queued is not None and queued >= 0 else None,
        running_s=running if running is not None and running >= 0 else None,
    )


def _output_urls(output: Any, depth: int = 0) -> list[str]:
    """Every URL in an output: a string, a list of them, or a mapping of them."""
    if isinstance(output, str):
        return [output] if urlsplit(output).scheme.lower() in ("https", "http", "data") else []
    if depth > 3:
        return []
    if isinstance(output, list):
        return [url for item in output for url in _output_urls(item, depth + 1)]
    if isinstance(output, dict):
        return [url for item in output.values() for url in _output_urls(item, depth + 1)]
    return []


def _content_type(url: str) -> str | None:
    if url.startswith("data:"):
        media = url[5:].split(",", 1)[0].split(";", 1)[0].strip().lower()
        return media or None
    suffix = urlsplit(url).path.rpartition(".")[2].lower()
    return _CONTENT_TYPES.get(suffix)
