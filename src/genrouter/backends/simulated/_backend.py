"""The simulated provider: offline, seeded, with realistic latency and failures.

Latency is lognormal through the configured ``median_s`` and ``p99_s``; a fraction
of attempts fail (a 503-like :class:`ProviderUnavailableError` at completion), run
``slow_multiplier`` times slower (``slow_rate``: a heavy tail),
are rate limited (a :class:`RateLimitedError` at submit, with ``retry_after_s``),
or hang until cancelled. ``incidents`` raise latency and failure rates inside time
windows relative to the backend's start. ``max_concurrency`` makes jobs beyond it
wait in a provider-side queue; ``autoscale`` puts that queue in front of containers
that start (after ``cold_start_s``) and leave (after ``scaledown_s`` idle) with it
(:mod:`genrouter.backends.simulated._autoscale`), and the backend reports its backlog and
containers as :class:`~genrouter.routing.capacity.CapacityFacts`.

Time is the router's clock (``bind_clock``), anchored to the wall clock when bound, so
a :class:`~genrouter.testing.FakeClock` or a virtual event loop drives the simulation.

A job's outcome is a pure function of its provider request id (which encodes the
submit time, the incident clock, the queue delay and a seeded nonce) and the
config, so another process can re-attach to a job by id. Outputs are
deterministic placeholder PNGs named by ``sim:`` URLs, rendered on read.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genrouter.backends._mapping import snapped_aspect_ratio
from genrouter.backends.simulated._autoscale import AutoscaleModel
from genrouter.backends.simulated._settings import SimulatedSettings
from genrouter.catalog import CatalogEntry, Limits
from genrouter.engine._clock import Clock, MonotonicClock
from genrouter.errors import (
    InvalidRequestError,
    JobFailedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from genrouter.routing.capacity import CapacityFacts
from genrouter.types import (
    Artifact,
    ArtifactKind,
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    ProviderJob,
    Timings,
)
from genrouter.util._png import sim_url

if TYPE_CHECKING:
    from genrouter.catalog import Catalog, Deployment

__all__ = ["SIMULATED_LIMITS", "SimulatedBackend"]

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99
DEFAULT_SIZE = (1024, 1024)

SIMULATED_LIMITS = Limits(
    max_outputs_per_call=4,
    width=(16, 4096),
    height=(16, 4096),
    default_size=DEFAULT_SIZE,
)
"""What a simulated deployment accepts unless its catalog entry says otherwise."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    submitted_at: float
    starts_at: float
    completes_at: float
    fails: bool
    hangs: bool


class SimulatedBackend:
    """A provider that exists only in this process (see the module docstring)."""

    eager_start_safe = True
    """No network I/O: the router may start its lanes eagerly."""

    def __init__(self, *, name: str, settings: SimulatedSettings | Mapping[str, Any]) -> None:
        self.name = name
        self.settings = (
            settings
            if isinstance(settings, SimulatedSettings)
            else SimulatedSettings.model_validate({"type": "simulated", **settings})
        )
        self.bind_clock(MonotonicClock())
        self._nonce = itertools.count(random.Random(self.settings.seed).randrange(1 << 30))
        self._submit_rng = random.Random(f"submit:{self.settings.seed}")
        self._cancelled: set[str] = set()
        self._slots: list[float] = []
        self._autoscale: AutoscaleModel | None = None

    def bind_clock(self, clock: Clock) -> None:
        """Run on ``clock`` from now on (the router binds its own); wall time anchors it."""
        self._clock = clock
        self._clock_origin = clock.now()
        self._started_wall = time.time()

    def _now(self) -> float:
        """Wall-anchored seconds on the bound clock."""
        return self._started_wall + (self._clock.now() - self._clock_origin)

    @property
    def autoscaler(self) -> AutoscaleModel | None:
        """The container model when ``autoscale`` is configured (created on first use)."""
        spec = self.settings.autoscale
        if spec is not None and self._autoscale is None:
            self._autoscale = AutoscaleModel(spec, self._now())
        return self._autoscale

    def capacity(self, deployment: Deployment) -> CapacityFacts | None:
        """Backlog, running jobs and containers now (None without ``autoscale``)."""
        model = self.autoscaler
        if model is None:
            return None
        return model.facts(self._now())

    def __repr__(self) -> str:
        return f"SimulatedBackend(name={self.name!r})"

    # -- catalog hooks ---------------------------------------------------------------

    default_limits = SIMULATED_LIMITS
    """Limits of inline ``models:`` entries that declare none."""

    def default_entries(self, catalog: Catalog) -> dict[str, CatalogEntry]:
        """Without ``models:``, every image model of the shipped catalog at ``price``."""
        if self.settings.models:
            return {}
        return {
            name: CatalogEntry(
                endpoint=name,
                kind="image",
                capabilities=sorted(spec.capabilities),
                limits=SIMULATED_LIMITS,
                price=self.settings.price,
            )
            for name, spec in catalog.models.items()
            if spec.kind == "image"
        }

    def latency_hint(self, deployment: Deployment) -> float | None:
        """The configured latency's p95, so latency routing works before any observation."""
        latency = self.settings.latency
        if latency is None:
            return 0.0
        median, sigma = _lognormal(latency.median_s, latency.p99_s)
        return _mixture_quantile(0.95, median, sigma, self.settings.slow_rate, self.settings.slow_multiplier)

    # -- outcome model -------------------------------------------------------------------

    def _incident(self, offset_s: float) -> tuple[float, float, float]:
        """(latency multiplier, failure rate, hang rate) at ``offset_s`` after start."""
        s = self.settings
        for incident in s.incidents:
            if incident.start_s <= offset_s < incident.end_s:
                return (
                    incident.latency_multiplier,
                    s.failure_rate if incident.failure_rate is None else incident.failure_rate,
                    s.hang_rate if incident.hang_rate is None else incident.hang_rate,
                )
        return 1.0, s.failure_rate, s.hang_rate

    def _outcome(self, request_id: str) -> _Outcome:
        try:
            _, wall_ms, offset_ms, queue_ms, nonce = request_id.split("-")
            submitted = int(wall_ms, 16) / 1000
            offset = int(offset_ms, 16) / 1000
            queued = int(queue_ms, 16) / 1000
        except ValueError as exc:
            raise InvalidRequestError(
                f"{request_id!r} is not a simulated request id", provider=self.name
            ) from exc
        # Drawn from the seed and the nonce only, so a run on a fake or virtual clock is
        # reproducible whatever the wall time (the wall time only anchors the timeline).
        rng = random.Random(f"{self.settings.seed}:{nonce}")
        multiplier, failure_rate, hang_rate = self._incident(offset)
        latency = self._draw_latency(rng) * multiplier
        fails = rng.random() < failure_rate
        hangs = rng.random() < hang_rate
        if self.settings.slow_rate and rng.random() < self.settings.slow_rate:
            latency *= self.settings.slow_multiplier
        starts = submitted + queued
        return _Outcome(submitted, starts, starts + latency, fails, hangs)

    def _draw_latency(self, rng: random.Random) -> float:
        latency = self.settings.latency
        if latency is None:
            return 0.0
        median, sigma = _lognormal(latency.median_s, latency.p99_s)
        return median * math.exp(sigma * rng.gauss(0.0, 1.0))

    def _queue_delay(self, now: float) -> float:
        """How long a job submitted now waits for a free slot under ``max_concurrency``."""
        limit = self.settings.max_concurrency
        if limit is None:
            return 0.0
        while self._slots and self._slots[0] <= now:
            heapq.heappop(self._slots)
        if len(self._slots) < limit:
            return 0.0
        return self._slots[0] - now

    # -- Backend protocol ---------------------------------------------------------------

    async def submit(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        *,
        webhook_url: str | None = None,
    ) -> ProviderJob:
        """Accept the job (or raise a simulated 429)."""
        if self._submit_rng.random() < self.settings.rate_limit_rate:
            raise RateLimitedError(
                f"{self.name}: simulated rate limit",
                provider=self.name,
                status_code=429,
                retry_after=self.settings.retry_after_s,
            )
        now = self._now()
        offset = now - self._started_wall
        model = self.autoscaler
        placement = model.place(now) if model is not None else None
        queue = placement.queued_s if placement is not None else self._queue_delay(now)
        request_id = (
            f"sim-{int(now * 1000):x}-{int(offset * 1000):x}-{int(queue * 1000):x}-{next(self._nonce):x}"
        )
        if self.settings.max_concurrency is not None:
            if len(self._slots) >= self.settings.max_concurrency:
                heapq.heappop(self._slots)
            heapq.heappush(self._slots, self._outcome(request_id).completes_at)
        if model is not None and placement is not None:
            model.commit(request_id, placement, self._outcome(request_id).completes_at)
        width, height = deployment.size_for(request) or DEFAULT_SIZE
        seed = request.seed if request.seed is not None else int(request_id.rsplit("-", 1)[1], 16)
        warnings = []
        _, snapped = snapped_aspect_ratio(request, deployment, f"{self.name} ({deployment.endpoint})")
        if snapped is not None:
            warnings.append(snapped)
        if request.output_format not in (None, "png"):
            warnings.append(f"{self.name}: simulated outputs are PNG, not {request.output_format}")
        return ProviderJob(
            provider=self.name,
            endpoint=deployment.endpoint,
            provider_request_id=request_id,
            data={
                "width": width,
                "height": height,
                "num_outputs": request.num_outputs,
                "seed": seed,
                "kind": deployment.kind,
                "duration_s": request.duration_s,
            },
            warnings=warnings,
        )

    def _status(self, job: ProviderJob, now: float) -> JobStatus:
        rid = job.provider_request_id
        outcome = self._outcome(rid)
        if rid in self._cancelled:
            state = JobState.CANCELLED
        elif outcome.hangs or now < outcome.starts_at:
            state = JobState.RUNNING if now >= outcome.starts_at else JobState.QUEUED
        elif now < outcome.completes_at:
            state = JobState.RUNNING
        else:
            state = JobState.FAILED if outcome.fails else JobState.SUCCEEDED
        return JobStatus(
            state=state,
            provider=self.name,
            provider_request_id=rid,
            error="simulated provider failure (503)" if state is JobState.FAILED else None,
        )

    async def poll(self, job: ProviderJob) -> JobStatus:
        """The job's state now."""
        return self._status(job, self._now())

    async def wait(self, job: ProviderJob, timeout_s: float) -> JobStatus:
        """Sleep until the job completes or ``timeout_s`` passes; no polling needed."""
        status = self._status(job, self._now())
        if status.state.is_terminal:
            return status
        outcome = self._outcome(job.provider_request_id)
        remaining = timeout_s if outcome.hangs else outcome.completes_at - self._now()
        await self._clock.sleep(max(0.0, min(remaining, timeout_s)))
        return self._status(job, self._now())

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        """The outputs of a succeeded job; the job's error otherwise."""
        status = self._status(job, self._now())
        rid = job.provider_request_id
        if status.state is JobState.CANCELLED:
            raise JobFailedError.cancelled(self.name, rid)
        if status.state is JobState.FAILED:
            raise ProviderUnavailableError(
                f"{self.name}: simulated provider failure",
                provider=self.name,
                status_code=503,
                provider_request_id=rid,
            )
        if not status.state.is_terminal:
            raise JobFailedError(
                f"{self.name}: job {rid} has not finished",
                provider=self.name,
                provider_request_id=rid,
                state=status.state.value,
                retryable=True,
            )
        data = job.data
        outcome = self._outcome(rid)
        kind = ArtifactKind.VIDEO if data.get("kind") == "video" else ArtifactKind.IMAGE
        outputs = [
            Artifact(
                kind=kind,
                url=sim_url(self.name, rid, i, data["width"], data["height"], data["seed"] + i),
                content_type="image/png",
                width=data["width"],
                height=data["height"],
                duration_s=data.get("duration_s") if kind is ArtifactKind.VIDEO else None,
                nsfw=False,
            )
            for i in range(int(data["num_outputs"]))
        ]
        return GenerationResult(
            id="",
            model=job.endpoint,
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=rid,
            outputs=outputs,
            seed=data["seed"],
            timings=Timings(
                queued_s=outcome.starts_at - outcome.submitted_at,
                running_s=outcome.completes_at - outcome.starts_at,
            ),
            raw={"simulated": True},
        )

    async def cancel(self, job: ProviderJob) -> None:
        """Mark the job cancelled (harmless once it finished)."""
        now = self._now()
        if not self._status(job, now).state.is_terminal:
            self._cancelled.add(job.provider_request_id)
            if self._autoscale is not None:
                self._autoscale.cancel(job.provider_request_id, now)

    async def aclose(self) -> None:
        """Nothing to release."""


def _mixture_quantile(
    q: float, median: float, sigma: float, slow_rate: float, slow_multiplier: float
) -> float:
    """The ``q`` quantile of the lognormal latency with its slow tail mixed in (by bisection)."""

    def cdf(x: float, m: float) -> float:
        if sigma == 0:
            return 1.0 if x >= m else 0.0
        return 0.5 * (1 + math.erf(math.log(x / m) / (sigma * math.sqrt(2))))

    def mixture(x: float) -> float:
        return (1 - slow_rate) * cdf(x, median) + slow_rate * cdf(x, median * slow_multiplier)

    low, high = median * 1e-3, median * slow_multiplier * 1e3
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if mixture(mid) < q else (low, mid)
    return high


def _lognormal(median_s: float, p99_s: float) -> tuple[float, float]:
    """(median, sigma) of the lognormal through ``median_s`` and ``p99_s``."""
    sigma = math.log(p99_s / median_s) / _Z99 if p99_s > median_s else 0.0
    return median_s, sigma
