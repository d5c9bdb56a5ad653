"""``AsyncRouter``: one ``generate()`` over every configured provider.

The router validates a request, looks its model up in the catalog, plans (filter
and rank the deployments), and executes the plan under one deadline with retries
and fallback (see :mod:`genrouter.engine._execution`). The jobs API (``submit``,
``status``, ``result``, ``cancel``) pins a job to the provider that accepted it; a
:class:`~genrouter.types.JobHandle` resumes in a new router without resubmitting.

Nothing here branches on a provider's name: providers differ only through their
backends and their catalog entries.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError

from genrouter.backends.base import Backend, load_backend_class
from genrouter.backends.capabilities import Capabilities, capabilities_of
from genrouter.backends.settings import CustomSettings, ImportPathSettings, ProviderSettings
from genrouter.catalog import Catalog, Deployment
from genrouter.catalog._deployments import (
    PassthroughDeployments,
    needs_image,
    needs_prompt,
    provider_deployments,
)
from genrouter.catalog._workflows import check_inputs, check_workflow_deployments, share_workflow_inputs
from genrouter.config import RoutePolicy, RouterConfig, format_validation_errors, load_config
from genrouter.engine._attempts import (
    RESULT_READS,
    JobWaiter,
    new_result_id,
    observe_failure,
    terminal_state_of,
)
from genrouter.engine._clock import Clock, MonotonicClock
from genrouter.engine._completion import complete, read_results
from genrouter.engine._execution import Execution
from genrouter.engine._progress import ProgressCallback, ProgressReporter, watch, watch_all
from genrouter.engine._webhook_hub import WebhookEvent, WebhookHub
from genrouter.errors import (
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    NoRouteError,
)
from genrouter.observability import MetricsHook, logger, request_ended
from genrouter.routing.budgets import BudgetGuard
from genrouter.routing.plan import Plan, build_plan
from genrouter.routing.policies import SmoothWeightedRoundRobin
from genrouter.routing.spillover import CapacitySource
from genrouter.routing.store import MemoryStateStore, StateStore
from genrouter.routing.throttle import HedgeBudget, RetryBudget
from genrouter.types import (
    Attempt,
    AttemptOutcome,
    GenerationRequest,
    GenerationResult,
    JobHandle,
    JobState,
    JobStatus,
    ProviderJob,
    RoutePlan,
)

__all__ = ["AsyncRouter"]

ConfigSource = str | Path | Mapping[str, Any] | RouterConfig | None


class AsyncRouter:
    """Routes generation requests across providers. Async; see :class:`genrouter.Router` for sync.

    Build with :meth:`from_config`. Use as ``async with`` (or call :meth:`aclose`) to
    release provider connections.
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        backends: Mapping[str, Backend] | None = None,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        state: StateStore | None = None,
        hooks: Sequence[MetricsHook] = (),
    ) -> None:
        self.config = config
        self.hooks: list[MetricsHook] = list(hooks)
        """Metrics hooks told of every :meth:`generate` attempt and result."""
        self.clock: Clock = clock or MonotonicClock()
        self.catalog = catalog or Catalog.load(config.catalog_paths())
        self.state: StateStore = state or _state_store(config)
        self._backends: dict[str, Backend] = {}
        self._deployments: dict[str, list[Deployment]] = {}
        self._latency_hints: dict[str, float] = {}
        self._capacity: dict[str, CapacitySource] = {}
        self._unavailable: dict[str, str] = {}
        self._round_robins: dict[str, SmoothWeightedRoundRobin] = {}
        self._ranks: dict[int, dict[str, int]] = {}
        self._hedge_budgets: dict[str, HedgeBudget] = {}
        self._background: set[asyncio.Task[Any]] = set()
        retry_budget = config.routing.default.retry_budget
        self.throttle: RetryBudget | None = (
            RetryBudget(retry_budget.max_tokens, retry_budget.token_ratio) if retry_budget.enabled else None
        )
        self.budget = BudgetGuard(config.budgets, self.state, clock=self.clock)
        self._budget = self.budget if config.budgets else None
        # A shared store syncs in the background once the router runs in an event loop.
        self._state_start = getattr(self.state, "start", None)
        self._closed = False
        self.webhooks = WebhookHub()
        """Verified webhook outcomes by job (see :meth:`handle_webhook`)."""
        given = dict(backends or {})
        unknown = set(given) - set(config.providers)
        if unknown:
            raise ConfigError(
                f"backends given for unconfigured provider(s) {', '.join(sorted(unknown))}; "
                "declare each under providers: (type: custom)",
                key_path="providers",
            )
        self._capabilities: dict[str, Capabilities] = {}
        for key, section in config.providers.items():
            backend = self._backends[key] = given.get(key) or _construct_backend(key, section)
            capabilities = self._capabilities[key] = capabilities_of(key, backend)
            if capabilities.bind_clock is not None:
                capabilities.bind_clock(self.clock)
            self.webhooks.add_provider(key, section.type, section, capabilities.webhooks)
        self._build_deployments()
        self._workflow_inputs = check_workflow_deployments(self.deployments())
        share_workflow_inputs(self._deployments, self._workflow_inputs)
        self._check_model_overrides()

    @classmethod
    def from_config(
        cls,
        source: ConfigSource = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        clock: Clock | None = None,
        hooks: Sequence[MetricsHook] = (),
    ) -> Self:
        """A router from a YAML path, a dict, a :class:`RouterConfig`, or discovery (None).

        ``backends`` supplies instances for ``type: custom`` providers (or replaces
        any provider's backend, e.g. with a test double). ``hooks`` are
        :class:`~genrouter.observability.MetricsHook` s.
        """
        return cls(load_config(source), backends=backends, clock=clock, hooks=hooks)

    # -- construction helpers ------------------------------------------------------

    def _build_deployments(self) -> None:
        for key, section in self.config.providers.items():
            capabilities = self._capabilities[key]
            for deployment in provider_deployments(self.catalog, key, section, capabilities):
                self._deployments.setdefault(deployment.model, []).append(deployment)
                self._hint(deployment)
                if capabilities.capacity is not None:
                    self._capacity[deployment.key] = functools.partial(capabilities.capacity, deployment)
            if capabilities.unavailable_reason:
                self._unavailable[key] = capabilities.unavailable_reason
        self._passthrough = PassthroughDeployments(self.catalog, self.config.providers, self._capabilities)

    def _hint(self, deployment: Deployment) -> None:
        """Record the backend's latency hint for ``deployment``, if it gives one."""
        hint = self._capabilities[deployment.provider].latency_hint
        if hint is not None:
            value = hint(deployment)
            if value is not None:
                self._latency_hints[deployment.key] = value

    def _check_model_overrides(self) -> None:
        for model in self.config.routing.models:
            if self.catalog.resolve(model) is None and model not in self._deployments:
                known = sorted(self._deployments)
                close = difflib.get_close_matches(model, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"routing.models.{model}: unknown model {model!r}{hint}",
                    key_path=f"routing.models.{model}",
                )

    # -- introspection ---------------------------------------------------------------

    @property
    def backends(self) -> Mapping[str, Backend]:
        """The backend of each configured provider, by provider key."""
        return self._backends

    def deployments(self, model: str | None = None) -> list[Deployment]:
        """Every deployment (of ``model`` when given), in config order."""
        if model is not None:
            return list(self._deployments.get(self.catalog.resolve(model) or model, []))
        return [d for group in self._deployments.values() for d in group]

    def policy_for(self, model: str) -> RoutePolicy:
        """The routing policy that applies to ``model``."""
        return self.config.routing.policy_for(self.catalog.resolve(model) or model)

    # -- requests ----------------------------------------------------------------------

    def _request(self, request: GenerationRequest | str | None, kwargs: dict[str, Any]) -> GenerationRequest:
        if isinstance(request, GenerationRequest) and not kwargs:
            result = request
        else:
            data: dict[str, Any] = {}
            if isinstance(request, GenerationRequest):
                data = request.model_dump(exclude_unset=True)
            elif isinstance(request, str):
                data["prompt"] = request
            elif request is not None:
                raise InvalidRequestError(
                    f"request must be a GenerationRequest or a prompt string, got {type(request).__name__}",
                    field="request",
                )
            data.update(kwargs)
            result = coerce_request(data)
        if result.providers is not None:
            unknown = [p for p in result.providers if p not in self._backends]
            if unknown:
                raise InvalidRequestError(
                    f"providers: {', '.join(map(repr, unknown))} not configured; "
                    f"configured providers are {', '.join(self._backends)}",
                    field="providers",
                )
        return result

    def _plan(self, request: GenerationRequest, *, explaining: bool = False) -> tuple[Plan, RoutePolicy]:
        name = self.catalog.resolve(request.model) or request.model
        deployments = self._deployments.get(name)
        passthrough = not deployments and ":" in request.model
        if passthrough:
            deployments = [self._passthrough.get(request.model, request)]
            if deployments[0].key not in self._latency_hints:
                self._hint(deployments[0])
        if not deployments:
            known = sorted(self._deployments)
            close = difflib.get_close_matches(request.model, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known models: {', '.join(known)}"
            raise NoRouteError(f"no configured provider serves model {request.model!r}{hint}")
        kind = deployments[0].kind
        needs_image(request, kind)
        needs_prompt(request, kind, passthrough=passthrough)
        if request.inputs or kind == "workflow":
            check_inputs(request, model=name, kind=kind, schema=self._workflow_inputs.get(name))
        policy = self.config.routing.policy_for(name)
        plan = build_plan(
            request,
            policy,
            model=name,
            kind=kind,
            deployments=deployments,
            provider_rank=self._rank(policy),
            latency_hints=self._latency_hints,
            unavailable=self._unavailable,
            store=self.state,
            now=self.clock.now(),
            round_robin=self._round_robin(name),
            estimate_costs=explaining,
            budget=self._budget,
            capacity=self._capacity,
        )
        if passthrough:
            only = deployments[0]
            plan.notes.append(
                f"passthrough: {request.model!r} goes to provider {only.provider} as endpoint "
                f"{only.endpoint!r} with its standard mapping; no fallback, cost unknown unless reported"
            )
        return plan, policy

    def _hedge_budget(self, model: str, policy: RoutePolicy) -> HedgeBudget | None:
        if not policy.hedge.enabled:
            return None
        budget = self._hedge_budgets.get(model)
        if budget is None:
            budget = self._hedge_budgets[model] = HedgeBudget(policy.hedge.max_extra_fraction)
        return budget

    def _round_robin(self, model: str) -> SmoothWeightedRoundRobin:
        rr = self._round_robins.get(model)
        if rr is None:
            rr = self._round_robins[model] = SmoothWeightedRoundRobin()
        return rr

    def _rank(self, policy: RoutePolicy) -> dict[str, int]:
        ranks = self._ranks.get(id(policy))
        if ranks is None:
            order = list(policy.order or [])
            order += [p for p in self.config.providers if p not in order]
            ranks = self._ranks[id(policy)] = {p: i for i, p in enumerate(order)}
        return ranks

    def explain(self, request: GenerationRequest | str | None = None, /, **kwargs: Any) -> RoutePlan:
        """How ``request`` would be routed now: ranked candidates, and why others are excluded.

        Synchronous and side-effect free (a weighted round-robin is not advanced).
        """
        req = self._request(request, kwargs)
        name = self.catalog.resolve(req.model) or req.model
        saved = self._round_robin(name)
        # Plan on a copy of the round-robin state: explain shows the next pick without taking it.
        self._round_robins[name] = copy.deepcopy(saved)
        try:
            plan, _ = self._plan(req, explaining=True)
        finally:
            self._round_robins[name] = saved
        return plan.to_route_plan(self.state, self.clock.now())

    def _routable(self, request: GenerationRequest) -> tuple[Plan, RoutePolicy]:
        plan, policy = self._plan(request)
        if not plan.viable:
            plan, policy = self._plan(request, explaining=True)
            route_plan = plan.to_route_plan(self.state, self.clock.now())
            reasons = "; ".join(f"{c.provider}: {c.excluded}" for c in route_plan.candidates)
            if plan.over_budget:
                raise BudgetExceededError(
                    f"no budget left for {plan.model!r}: {reasons}",
                )
            raise NoRouteError(
                f"no deployment of {plan.model!r} can serve this request: {reasons}",
                plan=route_plan,
            )
        return plan, policy

    async def generate(
        self,
        request: GenerationRequest | str | None = None,
        /,
        *,
        on_progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> GenerationResult:
        """Generate: route ``request`` (a :class:`GenerationRequest`, a prompt, or keyword fields).

        ``on_progress`` (a function, or a coroutine function) is called with a
        :class:`~genrouter.types.Progress` whenever a job's state, queue position or
        logs change; one that raises is logged once and ignored.

        Raises :class:`InvalidRequestError` for bad input, :class:`NoRouteError` when no
        deployment can serve it, :class:`DeadlineExceededError` when the one deadline
        passes, and :class:`AllProvidersFailedError` when every route failed.
        """
        req = self._request(request, kwargs)
        hooks = self.hooks
        if not hooks and not logger.isEnabledFor(logging.INFO):
            execution = self._execution(req, on_progress=on_progress)
            return await execution.generate()
        started = self.clock.now()
        try:
            execution = self._execution(req, hooks=hooks, on_progress=on_progress)
            result = await execution.generate()
        except Exception as exc:
            request_ended(hooks, req, None, exc, self.clock.now() - started)
            raise
        request_ended(hooks, req, result, None, self.clock.now() - started)
        return result

    def _execution(
        self,
        req: GenerationRequest,
        webhook_url: str | None = None,
        hooks: Sequence[MetricsHook] = (),
        on_progress: ProgressCallback | None = None,
    ) -> Execution:
        """Plan ``req`` and set up its execution (hedging only when waiting for the result).

        The plan itself is not kept: the execution holds what it needs of it, and a
        request in flight (ten thousand at once in a batch) holds nothing more.
        """
        if self._state_start is not None:
            self._state_start()
        plan, policy = self._routable(req)
        execution = Execution(
            request=req,
            candidates=plan.viable,
            last_resort=plan.last_resort,
            policy=policy,
            backends=self._backends,
            capabilities=self._capabilities,
            store=self.state,
            clock=self.clock,
            deadline_s=req.deadline_s or policy.timeouts.deadline_s,
            webhook_url=webhook_url,
            throttle=self.throttle,
            hedge_budget=self._hedge_budget(plan.model, policy),
            budget=self._budget,
            background=self._background,
            hooks=hooks,
        )
        if on_progress is not None:
            execution.backends = watch_all(self._backends, on_progress, self.clock, execution.started)
        return execution

    # -- jobs API -----------------------------------------------------------------------

    async def submit(
        self,
        request: GenerationRequest | str | None = None,
        /,
        *,
        webhook_url: str | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """Submit without waiting; the handle is pinned to the provider that accepted it.

        Submission retries and falls back like :meth:`generate`; waiting does not.
        """
        req = self._request(request, kwargs)
        execution = self._execution(req, webhook_url)
        submitted = await execution.submit()
        first = submitted.jobs[0]
        return JobHandle(
            id=new_result_id(),
            model=req.model,
            provider=first.provider,
            endpoint=first.endpoint,
            provider_request_id=first.provider_request_id,
            job=first,
            more_jobs=submitted.jobs[1:],
            request=req,
            attempts=execution.attempts,
        )

    def _backend_for(self, handle: JobHandle) -> Backend:
        backend = self._backends.get(handle.provider)
        if backend is None:
            raise ConfigError(
                f"job {handle.id} was accepted by provider {handle.provider!r}, which this "
                f"router does not configure (configured: {', '.join(self._backends)})",
                key_path="providers",
            )
        return backend

    def _deployment_for(self, handle: JobHandle) -> Deployment:
        name = self.catalog.resolve(handle.model) or handle.model
        for deployment in self._deployments.get(name, []):
            if deployment.provider == handle.provider and deployment.endpoint == handle.endpoint:
                return deployment
        if name not in self._deployments and ":" in handle.model:
            made = self._passthrough.find(handle.model, handle.endpoint) or self._passthrough.get(
                handle.model
            )
            if made.provider == handle.provider and made.endpoint == handle.endpoint:
                return made
        raise ConfigError(
            f"job {handle.id}: provider {handle.provider!r} no longer serves "
            f"{handle.model!r} at {handle.endpoint!r}",
            key_path=f"providers.{handle.provider}.models",
        )

    async def status(self, handle: JobHandle) -> JobStatus:
        """The job's state at its provider (polled now)."""
        backend = self._backend_for(handle)
        statuses = [await backend.poll(job) for job in handle.jobs]
        if len(statuses) == 1:
            return statuses[0]
        return statuses[0].model_copy(update={"state": terminal_state_of(statuses)})

    async def result(
        self,
        handle: JobHandle,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Wait for the job and return its result; never resubmits.

        ``on_progress`` works as in :meth:`generate` (elapsed from this call).

        ``timeout`` (seconds; default the policy's ``deadline_s``) bounds the wait:
        when it passes, :class:`DeadlineExceededError` is raised and the job keeps
        running (call ``result`` again, or ``cancel``). A cancelled job raises
        :class:`JobFailedError` with ``state == "cancelled"``.
        """
        backend = self._backend_for(handle)
        if on_progress is not None:
            backend = watch(backend, ProgressReporter(on_progress, self.clock))
        deployment = self._deployment_for(handle)
        policy = self.policy_for(handle.model)
        wait_s = timeout if timeout is not None else policy.timeouts.deadline_s
        started = self.clock.now()
        until = started + wait_s
        waiter = JobWaiter(self.clock, self._capabilities)
        succeeded: dict[int, bool] = {}
        for job in handle.jobs:
            status = await self._wait_for_job(waiter, backend, job, until)
            if status is None:
                raise DeadlineExceededError(
                    f"job {handle.provider_request_id} at {handle.provider} still running "
                    f"after {wait_s:g}s; it was not cancelled",
                    deadline_s=wait_s,
                    provider=handle.provider,
                    provider_request_id=handle.provider_request_id,
                )
            succeeded[id(job)] = status.state is JobState.SUCCEEDED
        try:
            results = await read_results(
                waiter, backend, handle.jobs, until, succeeded, max_reads=RESULT_READS
            )
        except GenRouterError as exc:
            exc.provider = exc.provider or handle.provider
            exc.provider_request_id = exc.provider_request_id or handle.provider_request_id
            observe_failure(self.state, self.clock.now(), deployment, exc, policy)
            if isinstance(exc, JobFailedError):
                self.budget.release_job(handle.provider, handle.provider_request_id)
            raise
        now = self.clock.now()
        attempt = Attempt(
            provider=handle.provider,
            endpoint=handle.endpoint,
            outcome=AttemptOutcome.SUCCEEDED,
            duration_s=now - started,
            provider_request_id=handle.provider_request_id,
        )
        result = complete(
            results,
            store=self.state,
            deployment=deployment,
            request=handle.request,
            jobs=handle.jobs,
            attempts=[*handle.attempts, attempt],
            watched_s=now - started,
            watched_from_submit=False,  # submitted earlier, maybe by another process
            now=now,
            total_s=now - started,
        )
        self.budget.settle_job(handle.provider, handle.provider_request_id, result.cost.amount_usd)
        return result

    async def _wait_for_job(
        self, waiter: JobWaiter, backend: Backend, job: ProviderJob, until: float
    ) -> JobStatus | None:
        """Poll (the backstop) until the job ends, or until a verified webhook says it did.

        On a webhook the job is polled at once, so the provider confirms the state
        before its result is fetched.
        """
        woken = self.webhooks.subscribe(job.provider, job.provider_request_id)
        try:
            if not woken.is_set():
                polling = asyncio.ensure_future(waiter.wait(backend, job, until))
                wake = asyncio.ensure_future(woken.wait())
                try:
                    await asyncio.wait((polling, wake), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                    if not polling.done():
                        polling.cancel()
                        await asyncio.gather(polling, return_exceptions=True)
                if not polling.cancelled():
                    return polling.result()
            return await waiter.wait(backend, job, until)
        finally:
            self.webhooks.unsubscribe(job.provider, job.provider_request_id, woken)

    async def handle_webhook(self, provider: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify a webhook delivery from ``provider`` (a config key) and record what it says.

        The provider's verifier checks it (its type's, ``backends/<type>/_webhooks.py``, or
        its backend's own): the scheme is the type's, the secret (``webhook_secret``) or keys
        (``webhook_public_keys``, else the JWKS at ``webhook_jwks_url``) its section's. A bad
        signature raises
        :class:`~genrouter.webhooks.WebhookVerificationError` and changes nothing. A
        terminal event wakes every :meth:`result` waiting on that job; repeated and
        out-of-order deliveries come back with ``duplicate=True`` and change nothing.
        """
        event = await self.webhooks.verify(provider, headers, body)
        if not self.webhooks.record(event):
            return event.model_copy(update={"duplicate": True})
        return event

    async def cancel(self, handle: JobHandle) -> None:
        """Ask the provider to stop the job. Harmless if it already finished."""
        backend = self._backend_for(handle)
        for job in handle.jobs:
            await backend.cancel(job)
        self.budget.release_job(handle.provider, handle.provider_request_id)

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every backend's connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        closers = [b.aclose() for b in self._backends.values()]
        state_close = getattr(self.state, "aclose", None)
        if state_close is not None:
            closers.append(state_close())
        await asyncio.gather(*closers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncRouter(providers={list(self._backends)})"


def coerce_request(data: Mapping[str, Any]) -> GenerationRequest:
    """Validate request fields into a :class:`GenerationRequest`, or raise ``InvalidRequestError``.

    The error names each bad field, its value and the fix; the pydantic error is
    its ``__cause__``.
    """
    try:
        return GenerationRequest.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_errors(exc, root=GenerationRequest)
        fields = [(p.split(":", 1)[0], p.split(":", 1)[1].strip()) for p in problems]
        first = fields[0][0] if fields else None
        raise InvalidRequestError(
            "invalid request: " + "; ".join(problems),
            field=None if first == "(top level)" else first,
            fields=fields,
        ) from exc


def _construct_backend(key: str, section: ProviderSettings) -> Backend:
    if isinstance(section, CustomSettings):
        raise ConfigError(
            f"providers.{key}: type custom needs a backend instance: "
            f"AsyncRouter.from_config(config, backends={{{key!r}: my_backend}})",
            key_path=f"providers.{key}",
        )
    cls = load_backend_class(section.type, key_path=f"providers.{key}.type")
    settings: Any = section.model_dump() if isinstance(section, ImportPathSettings) else section
    try:
        backend = cls(name=key, settings=settings)
    except GenRouterError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"providers.{key}: could not construct backend {cls.__name__}: {exc}",
            key_path=f"providers.{key}",
        ) from exc
    if not isinstance(backend, Backend):
        raise ConfigError(
            f"providers.{key}: {cls.__name__} does not implement the Backend protocol "
            "(name, submit, poll, fetch_result, cancel, aclose)",
            key_path=f"providers.{key}.type",
        )
    return backend


def _state_store(config: RouterConfig) -> StateStore:
    if config.state.store == "memory":
        return MemoryStateStore()
    from genrouter.routing.redis_store import RedisStateStore

    return RedisStateStore(config.state.store, namespace=config.state.namespace)
