"""``Router``: the synchronous twin of :class:`~genrouter.router.AsyncRouter`.

One implementation: every method runs the async one on a private event loop in a
background thread (a portal) and blocks for its result. Signatures are written
out (no generated methods); a test keeps them in parity with ``AsyncRouter``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from genrouter.backends.base import Backend
from genrouter.engine._clock import Clock
from genrouter.engine._progress import ProgressCallback
from genrouter.engine._webhook_hub import WebhookEvent
from genrouter.observability import MetricsHook
from genrouter.router import AsyncRouter, ConfigSource
from genrouter.types import GenerationRequest, GenerationResult, JobHandle, JobStatus, RoutePlan

__all__ = ["Router"]

T = TypeVar("T")


class _Portal:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="genrouter-portal", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class Router:
    """Synchronous router: the same methods as :class:`AsyncRouter`, blocking.

    Use as ``with Router.from_config(...) as router:`` or call :meth:`close`.
    """

    def __init__(self, router: AsyncRouter, portal: _Portal) -> None:
        self._router = router
        self._portal = portal

    @classmethod
    def from_config(
        cls,
        source: ConfigSource = None,
        *,
        backends: Mapping[str, Backend] | None = None,
        clock: Clock | None = None,
        hooks: Sequence[MetricsHook] = (),
    ) -> Self:
        """A router from a YAML path, a dict, a config, or discovery (None)."""
        portal = _Portal()
        try:

            async def build() -> AsyncRouter:
                return AsyncRouter.from_config(source, backends=backends, clock=clock, hooks=hooks)

            router = portal.call(build())
        except BaseException:
            portal.close()
            raise
        return cls(router, portal)

    @property
    def async_router(self) -> AsyncRouter:
        """The :class:`AsyncRouter` underneath (its loop runs in the portal thread)."""
        return self._router

    def generate(
        self,
        request: GenerationRequest | str | None = None,
        /,
        *,
        on_progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> GenerationResult:
        """Blocking :meth:`AsyncRouter.generate`; ``on_progress`` runs on the router's loop thread."""
        return self._portal.call(self._router.generate(request, on_progress=on_progress, **kwargs))

    def explain(self, request: GenerationRequest | str | None = None, /, **kwargs: Any) -> RoutePlan:
        """:meth:`AsyncRouter.explain` (already synchronous)."""
        return self._router.explain(request, **kwargs)

    def submit(
        self,
        request: GenerationRequest | str | None = None,
        /,
        *,
        webhook_url: str | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """Blocking :meth:`AsyncRouter.submit`."""
        return self._portal.call(self._router.submit(request, webhook_url=webhook_url, **kwargs))

    def status(self, handle: JobHandle) -> JobStatus:
        """Blocking :meth:`AsyncRouter.status`."""
        return self._portal.call(self._router.status(handle))

    def result(
        self, handle: JobHandle, timeout: float | None = None, *, on_progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Blocking :meth:`AsyncRouter.result`."""
        return self._portal.call(self._router.result(handle, timeout=timeout, on_progress=on_progress))

    def cancel(self, handle: JobHandle) -> None:
        """Blocking :meth:`AsyncRouter.cancel`."""
        self._portal.call(self._router.cancel(handle))

    def handle_webhook(self, provider: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Blocking :meth:`AsyncRouter.handle_webhook`."""
        return self._portal.call(self._router.handle_webhook(provider, headers, body))

    def close(self) -> None:
        """Close provider connections and stop the portal thread. Idempotent."""
        if not self._portal.closed:
            try:
                self._portal.call(self._router.aclose())
            finally:
                self._portal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Router(providers={list(self._router.backends)})"
