"""How the Modal backend reaches a deployed class: the :class:`ModalTransport` protocol, the
transport over the ``modal`` SDK (:class:`SdkModalTransport`) and the mapping of the SDK's
errors onto genrouter's. Re-exported by :mod:`genrouter.backends.modal`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import time
from typing import Any, Protocol, runtime_checkable

from genrouter.errors import (
    AuthenticationError,
    ConfigError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    SubmitOutcomeUnknownError,
)

__all__ = ["ModalTransport", "SdkModalTransport", "is_call_outcome", "map_modal_error"]

INSTALL_HINT = "pip install 'genrouter[modal]'"


@runtime_checkable
class ModalTransport(Protocol):
    """How :class:`~genrouter.backends.modal.ModalBackend` reaches a deployed class.

    Errors are raised as the SDK raises them.
    """

    async def spawn(self, model_id: str, payload: dict[str, Any], cls: str | None = None) -> str:
        """Start one call of the class for ``model_id`` (``cls``: another class of the app); its call id."""
        ...

    async def get(self, call_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The call's result, waiting at most ``timeout_s``; None while it is still running."""
        ...

    async def cancel(self, call_id: str) -> None:
        """Cancel the call (harmless once it finished)."""
        ...

    async def warm_containers(self, model_id: str, cls: str | None = None) -> int | None:
        """Containers running for ``model_id`` (of class ``cls``) now, or None if unknown."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


# -- error mapping ----------------------------------------------------------------------------

_OUTCOME_ERRORS = frozenset(
    {
        "FunctionTimeoutError",
        "OutputExpiredError",
        "RemoteError",
        "InternalFailure",
        "ExecutionError",
        "DeserializationError",
        "InputCancellation",
    }
)
"""Modal exceptions that describe a call's result (the job failed), not a failed request to Modal."""


def _modal_names(exc: BaseException) -> list[str]:
    """Names of ``exc``'s classes that come from the modal SDK, most specific first."""
    return [c.__name__ for c in type(exc).__mro__ if c.__module__.split(".")[0] == "modal"]


def is_call_outcome(exc: BaseException) -> bool:
    """Whether ``exc`` from ``FunctionCall.get`` is the call's own failure (vs. a failed request)."""
    names = _modal_names(exc)
    return not names or names[0] in _OUTCOME_ERRORS


def map_modal_error(
    exc: BaseException,
    *,
    provider: str,
    provider_request_id: str | None = None,
    at_submit: bool = False,
    where: str = "",
) -> GenRouterError:
    """The genrouter error for an exception from Modal or from the deployed class (see the module table)."""
    if isinstance(exc, GenRouterError):
        return exc
    rid = provider_request_id
    text = f"{provider}{f' ({where})' if where else ''}: {type(exc).__name__}: {exc}"
    names = _modal_names(exc)
    if not names:  # raised by the class's own code and pickled back
        if isinstance(exc, ValueError | TypeError):
            return InvalidRequestError(text, provider=provider, provider_request_id=rid, status_code=422)
        if isinstance(exc, ConnectionError):  # the class could not reach what it serves from (ComfyUI)
            return ProviderUnavailableError(text, provider=provider, provider_request_id=rid)
        return JobFailedError(text, provider=provider, provider_request_id=rid, retryable=False)
    for name in names:
        error = _by_name(name, text, provider, rid, at_submit)
        if error is not None:
            return error
    return ProviderError(text, provider=provider, provider_request_id=rid, retryable=False)


def _by_name(name: str, text: str, provider: str, rid: str | None, at_submit: bool) -> GenRouterError | None:
    facts: dict[str, Any] = {"provider": provider, "provider_request_id": rid}
    if name in ("ConnectionError", "ServiceError", "InternalError", "InternalFailure", "DataLossError"):
        return ProviderUnavailableError(text, **facts)
    if name == "TimeoutError":  # modal's own (not builtin): an RPC deadline
        return ProviderUnavailableError(text, **facts)
    if name == "RemoteError":
        return ProviderUnavailableError(text + " (the container crashed or failed to start)", **facts)
    if name == "ResourceExhaustedError":
        return RateLimitedError(text, status_code=429, **facts)
    if name == "FunctionTimeoutError":
        return JobFailedError(text + " (the class's timeout; likely too large a request)", **facts)
    if name == "OutputExpiredError":
        return JobFailedError(text + " (the result expired; resubmit)", retryable=True, **facts)
    if name == "InputCancellation":
        return JobFailedError(text, state="cancelled", **facts)
    if name == "NotFoundError":
        if at_submit:
            return ProviderError(text + " (is the app deployed?)", status_code=404, retryable=False, **facts)
        return JobFailedError(text + " (no such call)", status_code=404, **facts)
    if name == "AuthError":
        return AuthenticationError(text, status_code=401, **facts)
    if name == "PermissionDeniedError":
        return AuthenticationError(text, status_code=403, **facts)
    if name in ("InvalidError", "RequestSizeError", "SerializationError"):
        return InvalidRequestError(text, status_code=422, **facts)
    if name in ("ExecutionError", "DeserializationError", "VersionError"):
        error = ConfigError(
            text + " (the modal client and the deployed class disagree: redeploy deploy/modal/app.py "
            "or align the modal versions)",
            key_path=f"providers.{provider}",
        )
        error.provider, error.provider_request_id = provider, rid
        return error
    if name == "ClientClosed":
        return ProviderError(text, retryable=False, **facts)
    return None


# -- the SDK transport -------------------------------------------------------------------------


class SdkModalTransport:
    """:class:`ModalTransport` over the ``modal`` SDK (``.aio`` calls only).

    ``modal`` is imported, the client created and ``Cls.from_name`` resolved on the
    first call, never before. Every call runs under genrouter's own deadline
    (``timeout_s``; ``get`` gets its wait on top), because the SDK retries connection
    failures for about a minute on its own.
    """

    def __init__(
        self,
        *,
        app: str,
        cls: str,
        environment: str | None = None,
        token_id: str | None = None,
        token_secret: str | None = None,
        timeout_s: float = 60.0,
        stats_ttl_s: float = 10.0,
    ) -> None:
        self.app = app
        self.cls = cls
        self.environment = environment
        self.timeout_s = timeout_s
        self.stats_ttl_s = stats_ttl_s
        self._token = (token_id, token_secret) if token_id and token_secret else None
        self._modal: Any = None
        self._client: Any = None
        self._classes: dict[str, Any] = {}
        self._objects: dict[tuple[str, str], Any] = {}
        self._stats: dict[str, tuple[float, int | None]] = {}
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SdkModalTransport(app={self.app!r}, cls={self.cls!r}, environment={self.environment!r})"

    def _sdk(self) -> Any:
        if self._modal is None:
            try:
                self._modal = importlib.import_module("modal")
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    f"the modal backend needs the 'modal' package: {INSTALL_HINT}", key_path="providers"
                ) from exc
        return self._modal

    async def _bounded(self, awaitable: Any, seconds: float, what: str, *, submit: bool = False) -> Any:
        try:
            async with asyncio.timeout(seconds):
                return await awaitable
        except TimeoutError as exc:
            if submit:
                raise SubmitOutcomeUnknownError(
                    f"modal: {what} did not answer within {seconds:g}s; the call may exist, "
                    "so it is not resent to this provider"
                ) from exc
            raise ProviderUnavailableError(f"modal: {what} did not answer within {seconds:g}s") from exc

    async def _ensure_client(self) -> Any:
        modal = self._sdk()
        if self._client is None and self._token is not None:
            async with self._connecting:  # one client, however many first calls race
                if self._client is None:
                    token_id, token_secret = self._token
                    self._client = await self._bounded(
                        modal.Client.from_credentials.aio(token_id, token_secret),
                        self.timeout_s,
                        "connecting",
                    )
        return modal

    async def _method(self, model_id: str, cls: str | None = None) -> Any:
        modal = await self._ensure_client()
        name = cls or self.cls
        looked_up = self._classes.get(name)
        if looked_up is None:
            looked_up = self._classes[name] = modal.Cls.from_name(
                self.app, name, environment_name=self.environment, client=self._client
            )
        obj = self._objects.get((name, model_id))
        if obj is None:
            obj = self._objects[(name, model_id)] = looked_up(model_id=model_id)
        return obj.generate

    async def spawn(self, model_id: str, payload: dict[str, Any], cls: str | None = None) -> str:
        """``generate.spawn.aio(payload)`` on the class (``cls``, default ``self.cls``) for ``model_id``."""
        method = await self._method(model_id, cls)
        call = await self._bounded(method.spawn.aio(payload), self.timeout_s, "spawn", submit=True)
        return str(call.object_id)

    async def get(self, call_id: str, timeout_s: float) -> dict[str, Any] | None:
        """``FunctionCall.get.aio(timeout)``; the builtin ``TimeoutError`` it raises means running."""
        modal = await self._ensure_client()
        call = modal.FunctionCall.from_id(call_id, client=self._client)
        wait = max(0.0, timeout_s)
        try:
            async with asyncio.timeout(wait + self.timeout_s) as deadline:
                result: dict[str, Any] = await call.get.aio(timeout=wait)
                return result
        except TimeoutError as exc:
            if deadline.expired():
                raise ProviderUnavailableError(
                    f"modal: get({call_id}) did not answer within {wait + self.timeout_s:g}s"
                ) from exc
            return None

    async def cancel(self, call_id: str) -> None:
        """``FunctionCall.cancel.aio()``."""
        modal = await self._ensure_client()
        call = modal.FunctionCall.from_id(call_id, client=self._client)
        await self._bounded(call.cancel.aio(), self.timeout_s, f"cancel({call_id})")

    async def warm_containers(self, model_id: str, cls: str | None = None) -> int | None:
        """Running containers for ``model_id`` (cached ``stats_ttl_s``); None if unknown."""
        now = time.monotonic()
        key = f"{cls or self.cls}:{model_id}"
        cached = self._stats.get(key)
        if cached is not None and now - cached[0] < self.stats_ttl_s:
            return cached[1]
        try:
            method = await self._method(model_id, cls)
            stats = await self._bounded(method.get_current_stats.aio(), 2.0, "stats")
            count: int | None = int(stats.num_total_runners)
        except Exception:  # a cost estimate must never fail a submit
            count = None
        self._stats[key] = (now, count)
        return count

    async def current_stats(self, model_id: str) -> dict[str, int]:
        """``get_current_stats()`` of the class for ``model_id`` (backlog, runners, running inputs)."""
        method = await self._method(model_id)
        stats = await self._bounded(method.get_current_stats.aio(), 2.0, "stats")
        names = ("backlog", "num_total_runners", "num_running_inputs")
        return {name: int(getattr(stats, name)) for name in names if getattr(stats, name, None) is not None}

    async def aclose(self) -> None:
        """Close the client this transport created (an environment client is modal's own)."""
        client, self._client = self._client, None
        self._classes.clear()
        self._objects.clear()
        if client is not None:
            await client.close.aio()
