"""``InProcessModalTransport``: the Modal backend's transport, with ``deploy/modal/service.py`` in-process.

It behaves as the deployed ``@modal.concurrent`` class does: each spawned call becomes
one input of the service's dynamic batcher (running in the service's own threads),
arguments and results are pickled on the way in and out (only builtins survive, as
over Modal), a failed item comes back as the ``{"error": ...}`` dict the batched
method returns, and call ids look like Modal's (``fc-…``), which the service also uses in
webhook deliveries (``webhook_url``). A cancelled call raises
modal's ``RemoteError`` from ``get``; an unknown call id ``NotFoundError``.

Faults: :meth:`InProcessModalTransport.inject` makes the next ``spawn``, ``get``,
``cancel`` or ``warm_containers`` raise a given exception, e.g. any
``modal.exception`` class (see :func:`modal_error`, which works without ``modal``
installed by building a stand-in of the same name and module).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol, Self

__all__ = [
    "SERVICE_PATH",
    "InProcessModalTransport",
    "deploy_path",
    "load_file_module",
    "load_service_module",
    "modal_error",
]


def deploy_path(*parts: str) -> Path:
    """A file of ``deploy/modal/``: in the wheel under ``genrouter/_deploy_modal``, else the checkout's."""
    packaged = Path(__file__).parent.with_name("_deploy_modal").joinpath(*parts)
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3].joinpath("deploy", "modal", *parts)


SERVICE_PATH = deploy_path("service.py")
"""``deploy/modal/service.py``: shipped in the wheel as ``genrouter/_deploy_modal``, else the checkout's."""

Operation = Literal["spawn", "get", "cancel", "warm"]
_POLL_S = 0.005


def load_service_module(path: str | Path = SERVICE_PATH) -> ModuleType:
    """Import ``deploy/modal/service.py`` from its path (once per process) and return the module."""
    return load_file_module("genrouter_modal.service", path, what="diffusion service")


def load_file_module(name: str, path: str | Path, *, what: str) -> ModuleType:
    """The module ``name`` executed from ``path``, once per process (a failed import leaves no trace).

    Raises FileNotFoundError ("no <what> at <path>") when ``path`` cannot be loaded.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, Path(path))
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no {what} at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def modal_error(name: str, message: str = "") -> Exception:
    """An instance of ``modal.exception.<name>``, or a stand-in of that name when modal is absent."""
    try:
        import modal.exception as modal_exceptions
    except ModuleNotFoundError:
        stand_in: type[Exception] = type(name, (Exception,), {"__module__": "modal.exception"})
        return stand_in(message)
    error_type = getattr(modal_exceptions, name)
    error: Exception = error_type(message)
    return error


class _Service(Protocol):
    def submit(self, request: dict[str, Any], *, call_id: str | None = None) -> Any: ...


@dataclass
class _Call:
    model_id: str
    future: Any
    """A ``concurrent.futures.Future`` from the service."""
    visible_at: float
    cancelled: bool = False


@dataclass
class InProcessModalTransport:
    """A :class:`~genrouter.backends.modal.ModalTransport` over an in-process ``DiffusionService``.

    ``latency_s`` delays when a finished result becomes visible (``math.inf``: calls
    never finish until cancelled); ``warm`` is what ``warm_containers`` answers
    (``0`` makes every submit a cold start, None unknown). ``spawned`` records
    ``(model_id, payload)`` per call, ``cancelled`` the cancelled call ids.
    """

    service: _Service
    latency_s: float = 0.0
    warm: int | None = 1
    owns_service: bool = False
    spawned: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    classes: list[str | None] = field(default_factory=list)
    calls: dict[str, _Call] = field(default_factory=dict, repr=False)
    _faults: dict[str, list[BaseException]] = field(default_factory=dict, repr=False)
    _ids: Any = field(default_factory=lambda: itertools.count(1), repr=False)
    _prefix: str = field(default_factory=lambda: os.urandom(3).hex(), repr=False)

    @classmethod
    def from_service_file(
        cls,
        path: str | Path = SERVICE_PATH,
        *,
        models: Sequence[str] = ("sdxl",),
        latency_s: float = 0.0,
        warm: int | None = 1,
        **config: Any,
    ) -> Self:
        """A transport over a new tiny-random, CPU ``DiffusionService`` from ``path`` (closed by ``aclose``).

        ``config`` overrides ``ServiceConfig`` fields (``lora_dir``, ``max_batch_size``...).
        """
        module = load_service_module(path)
        settings = {"random_weights": "tiny", "device": "cpu", "wait_ms": 5.0, "cpu_threads": 1, **config}
        service = module.DiffusionService(module.ServiceConfig(models=tuple(models), **settings)).setup()
        return cls(service=service, latency_s=latency_s, warm=warm, owns_service=True)

    def inject(self, error: BaseException, *, on: Operation = "spawn", times: int = 1) -> None:
        """Make the next ``times`` calls of ``on`` raise ``error``."""
        self._faults.setdefault(on, []).extend([error] * times)

    def _fault(self, operation: Operation) -> None:
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    async def spawn(self, model_id: str, payload: dict[str, Any], cls: str | None = None) -> str:
        """Queue the payload (a pickled copy, as Modal sends it) in the service's batcher.

        ``cls`` (the class the backend chose, e.g. ``Video``) is recorded in :attr:`classes`.
        """
        self._fault("spawn")
        self.classes.append(cls)
        request = pickle.loads(pickle.dumps(payload))  # noqa: S301 - a round trip of our own
        request.setdefault("model", model_id)
        call_id = f"fc-inproc{self._prefix}{next(self._ids):06d}"
        loop = asyncio.get_running_loop()
        future = self.service.submit(request, call_id=call_id)
        self.calls[call_id] = _Call(model_id, future, loop.time() + self.latency_s)
        self.spawned.append((model_id, request))
        return call_id

    async def get(self, call_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The result (or an error dict) once finished and visible; None after ``timeout_s``."""
        self._fault("get")
        call = self.calls.get(call_id)
        if call is None:
            raise modal_error("NotFoundError", f"FunctionCall {call_id} not found")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            if call.cancelled:
                raise modal_error("RemoteError", f"FunctionCall {call_id} was cancelled")
            now = loop.time()
            if call.future.done() and now >= call.visible_at:
                return self._outcome(call)
            if now >= deadline:
                return None
            await asyncio.sleep(min(_POLL_S, deadline - now))

    @staticmethod
    def _outcome(call: _Call) -> dict[str, Any]:
        if call.future.cancelled():
            raise modal_error("RemoteError", "input was cancelled")
        error = call.future.exception()
        if error is not None:  # what the @batched method returns for a failed item
            result: dict[str, Any] = {"error": {"type": type(error).__name__, "message": str(error)}}
            return result
        copied: dict[str, Any] = pickle.loads(pickle.dumps(call.future.result()))  # noqa: S301
        return copied

    async def cancel(self, call_id: str) -> None:
        """Cancel the call: a queued input never runs; a running one's result is discarded."""
        self._fault("cancel")
        call = self.calls.get(call_id)
        if call is None:
            raise modal_error("NotFoundError", f"FunctionCall {call_id} not found")
        self.cancelled.append(call_id)
        if not (call.future.done() and asyncio.get_running_loop().time() >= call.visible_at):
            call.future.cancel()
            call.cancelled = True

    async def warm_containers(self, model_id: str, cls: str | None = None) -> int | None:
        """``warm``, as configured."""
        self._fault("warm")
        return self.warm

    async def aclose(self) -> None:
        """Close the service if this transport created it. Idempotent."""
        if self.owns_service:
            self.owns_service = False
            close = getattr(self.service, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
