"""genrouter: one ``generate()`` for image and video generation across providers.

Requests are routed across fal.ai, Replicate, a self-hosted Modal GPU class and
simulated providers by model availability, cost and latency, with retries,
fallbacks and one deadline; routing policies live in YAML.

>>> import genrouter
>>> result = genrouter.generate("a red fox in snow", model="flux-dev")  # doctest: +SKIP

``import genrouter`` imports no provider SDK and does no I/O.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import genrouter.util._lean_httpx  # noqa: F401  (first: keeps httpx from loading its CLI)
from genrouter.config import RouterConfig, load_config
from genrouter.engine._progress import ProgressCallback
from genrouter.engine._webhook_hub import WebhookEvent
from genrouter.errors import (
    AllProvidersFailedError,
    AttemptTimedOutError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    MediaError,
    NoRouteError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
    WebhookVerificationError,
)
from genrouter.router import AsyncRouter
from genrouter.sync import Router
from genrouter.types import (
    Artifact,
    ArtifactKind,
    Attempt,
    AttemptOutcome,
    Candidate,
    Cost,
    GenerationRequest,
    GenerationResult,
    JobHandle,
    JobState,
    JobStatus,
    LoRA,
    Progress,
    ProviderJob,
    RoutePlan,
    Strategy,
    Timings,
)

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailedError",
    "Artifact",
    "ArtifactKind",
    "AsyncRouter",
    "Attempt",
    "AttemptOutcome",
    "AttemptTimedOutError",
    "AuthenticationError",
    "BudgetExceededError",
    "Candidate",
    "ConfigError",
    "Cost",
    "DeadlineExceededError",
    "GenRouterError",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequestError",
    "JobFailedError",
    "JobHandle",
    "JobState",
    "JobStatus",
    "LoRA",
    "MediaError",
    "NoRouteError",
    "Progress",
    "ProviderError",
    "ProviderJob",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RoutePlan",
    "Router",
    "RouterConfig",
    "Strategy",
    "SubmitOutcomeUnknownError",
    "Timings",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "agenerate",
    "generate",
    "load_config",
]

_lock = threading.Lock()
_default_sync: Router | None = None
_default_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRouter] = (
    weakref.WeakKeyDictionary()
)


def generate(
    prompt: str | None = None, /, *, on_progress: ProgressCallback | None = None, **kwargs: Any
) -> GenerationResult:
    """Generate with the discovered configuration (``GENROUTER_CONFIG``, ``./genrouter.yaml``,
    or provider credentials in the environment). Blocking.

    ``genrouter.generate("a red fox", model="flux-dev", width=1024, height=1024)``.
    The router is built on first use and reused. ``on_progress(Progress)`` is called
    as the job's state, queue position or logs change (see :class:`Progress`).
    """
    global _default_sync
    with _lock:
        if _default_sync is None:
            _default_sync = Router.from_config()
        router = _default_sync
    return router.generate(prompt, on_progress=on_progress, **kwargs)


async def agenerate(
    prompt: str | None = None, /, *, on_progress: ProgressCallback | None = None, **kwargs: Any
) -> GenerationResult:
    """Async :func:`generate`: one discovered :class:`AsyncRouter` per event loop, reused.

    ``on_progress`` may also be a coroutine function (awaited before the next poll).
    """
    loop = asyncio.get_running_loop()
    router = _default_async.get(loop)
    if router is None:
        router = _default_async[loop] = AsyncRouter.from_config()
    return await router.generate(prompt, on_progress=on_progress, **kwargs)
