"""A routing state store shared through Redis, so several processes route as one.

``state: {store: "redis://127.0.0.1:6379/0"}``. The planner reads state on every
request and must not wait on the network, so this store keeps a local mirror (a
:class:`MemoryStateStore`) that requests read and write synchronously:

- every write (a breaker failure or success, a Retry-After block, a disabled provider,
  spend) updates the mirror at once and is published to Redis in the background;
- budget reservations are the exception: they are checked and taken in Redis itself
  (one Lua script), since two processes must never both take the last dollar; see
  :mod:`genrouter.routing.reservations`;
- a background task pulls the other processes' writes every ``sync_interval_s``
  (0.25 s by default) into the mirror, and exchanges each process's latency p95 per
  deployment, which the planner blends with its own by sample count.

So a breaker tripped in one process is open in every other within about one sync
interval. Times cross processes as wall-clock seconds (each process converts to and
from its monotonic clock). Keys live under ``<namespace>:`` (default ``genrouter``).
Redis errors never fail a request: the mirror keeps routing and the error is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from genrouter.errors import ConfigError
from genrouter.routing.health import DeploymentHealth
from genrouter.routing.reservations import RESERVATION_TTL_S, RedisLedger
from genrouter.routing.store import MemoryStateStore

if TYPE_CHECKING:
    from genrouter.config import CircuitBreakerPolicy

__all__ = ["RedisStateStore"]

log = logging.getLogger("genrouter.state")

DEFAULT_SYNC_INTERVAL_S = 0.25
LATENCY_SHARE_TTL_S = 120.0
"""A process's shared p95 is ignored once this old (it stopped, or stopped seeing traffic)."""


def _wall(monotonic_t: float) -> float:
    return time.time() + (monotonic_t - time.monotonic())


def _mono(wall_t: float) -> float:
    return time.monotonic() + (wall_t - time.time())


class RedisStateStore:
    """Routing state mirrored locally and shared through Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "genrouter",
        sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S,
        reservation_ttl_s: float = RESERVATION_TTL_S,
    ) -> None:
        try:
            import redis.asyncio as redis_asyncio
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "state.store: a redis:// store needs the redis package: pip install 'genrouter[redis]'",
                key_path="state.store",
            ) from exc
        self._redis: Any = redis_asyncio.from_url(url, decode_responses=True)
        self._ns = namespace
        self._interval = sync_interval_s
        self._local = MemoryStateStore()
        self._pending: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._seen_versions: dict[str, float] = {}
        self._process_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._reservation_ttl_s = reservation_ttl_s
        self._ledger: RedisLedger | None = None

    def __repr__(self) -> str:
        return f"RedisStateStore(namespace={self._ns!r})"

    # -- keys ------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self._ns, *parts))

    # -- background work -------------------------------------------------------------

    def start(self) -> None:
        """Start syncing (idempotent); called by the router from inside its event loop."""
        if not self._stopping and (self._sync_task is None or self._sync_task.done()):
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())

    def _publish(self, coro_factory: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (e.g. explain() from sync code): the mirror still has it
        task = loop.create_task(self._guarded(coro_factory))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guarded(self, coro_factory: Any) -> None:
        try:
            await coro_factory()
        except Exception as exc:  # a shared-state hiccup must never fail a request
            log.warning("genrouter: redis state write failed: %s", exc)

    async def _sync_forever(self) -> None:
        while not self._stopping:
            try:
                await self.sync()
            except Exception as exc:
                log.warning("genrouter: redis state sync failed: %s", exc)
            await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        """Wait for every pending write to reach Redis."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    def reservation_ledger(self) -> RedisLedger:
        """Budget reservations held in Redis beside the shared spend (made once)."""
        if self._ledger is None:
            self._ledger = RedisLedger(
                self._redis, self._key, self._local, self._publish, ttl_s=self._reservation_ttl_s
            )
        return self._ledger

    async def aclose(self) -> None:
        """Flush writes, stop syncing and close the connection."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=2.0)
        if self._ledger is not None:
            await self._ledger.aclose()
        self._stopping = True
        task = self._sync_task
        if task is not None and not task.done():
            # redis-py can swallow a cancellation that lands inside a command, so the
            # loop also checks _stopping, and the wait is bounded.
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def sync(self) -> None:
        """Pull the shared state into the local mirror now."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._key("breaker"))
        pipe.hgetall(self._key("blocked"))
        pipe.hgetall(self._key("disabled"))
        breakers, blocked, disabled = await pipe.execute()
        for deployment_key, raw in breakers.items():
            self._apply_breaker(deployment_key, json.loads(raw))
        for provider, until in blocked.items():
            self._local.block(provider, _mono(float(until)))
        for provider, reason in disabled.items():
            self._local.disable(provider, reason)
        for deployment_key in breakers:
            self._local.health(deployment_key)
        await self._share_latencies()

    async def _share_latencies(self) -> None:
        """Publish this process's p95 per deployment; read every other process's."""
        keys = self._local_keys()
        if not keys:
            return
        now_wall = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            health = self._local.health(key)
            redis_key = self._key("p95", key)
            if health.p95 is not None:
                mine = json.dumps({"p95": health.p95, "samples": health.samples, "at": now_wall})
                pipe.hset(redis_key, self._process_id, mine)
                pipe.expire(redis_key, int(LATENCY_SHARE_TTL_S))
            pipe.hgetall(redis_key)
        answers = [a for a in await pipe.execute() if isinstance(a, dict)]
        for key, fields in zip(keys, answers, strict=False):
            total = 0
            weighted = 0.0
            for process, raw in fields.items():
                if process == self._process_id:
                    continue
                entry = json.loads(raw)
                if now_wall - float(entry["at"]) > LATENCY_SHARE_TTL_S:
                    continue
                total += int(entry["samples"])
                weighted += float(entry["p95"]) * int(entry["samples"])
            health = self._local.health(key)
            health.remote_p95 = weighted / total if total else None
            health.remote_samples = total

    def _local_keys(self) -> list[str]:
        return list(self._local._health)

    def _apply_breaker(self, deployment_key: str, state: dict[str, Any]) -> None:
        version = float(state.get("version", 0))
        if self._seen_versions.get(deployment_key, -1.0) >= version:
            return
        self._seen_versions[deployment_key] = version
        health = self._local.health(deployment_key)
        if state.get("open_until") is None:
            health.opened_at = None
            health.open_until = 0.0
            health.consecutive_failures = 0
        else:
            health.opened_at = _mono(float(state["opened_at"]))
            health.open_until = _mono(float(state["open_until"]))
            health.consecutive_failures = int(state.get("consecutive_failures", 0))

    def _publish_breaker(self, deployment_key: str, health: DeploymentHealth) -> None:
        version = time.time()
        self._seen_versions[deployment_key] = version
        if health.opened_at is None:
            state: dict[str, Any] = {"version": version, "open_until": None}
        else:
            state = {
                "version": version,
                "opened_at": _wall(health.opened_at),
                "open_until": _wall(health.open_until),
                "consecutive_failures": health.consecutive_failures,
            }
        payload = json.dumps(state)
        self._publish(lambda: self._redis.hset(self._key("breaker"), deployment_key, payload))

    # -- StateStore ------------------------------------------------------------------

    def health(self, deployment_key: str) -> DeploymentHealth:
        """The local health record of a deployment."""
        return self._local.health(deployment_key)

    def blocked_until(self, provider: str) -> float:
        """Clock time before which no request may go to ``provider``."""
        return self._local.blocked_until(provider)

    def block(self, provider: str, until: float) -> None:
        """Honour a Retry-After here and in every process sharing this store."""
        self._local.block(provider, until)
        wall_until = _wall(until)
        self._publish(lambda: self._redis.hset(self._key("blocked"), provider, repr(wall_until)))

    def disabled_reason(self, provider: str) -> str | None:
        """Why ``provider`` is disabled, or None."""
        return self._local.disabled_reason(provider)

    def disable(self, provider: str, reason: str) -> None:
        """Disable ``provider`` everywhere until the config is reloaded (the key is deleted)."""
        self._local.disable(provider, reason)
        self._publish(lambda: self._redis.hset(self._key("disabled"), provider, reason))

    def spend(self, scope: str, period: str) -> Decimal:
        """Spend seen by this process (kept current from Redis by ``add_spend``)."""
        return self._local.spend(scope, period)

    def add_spend(self, scope: str, period: str, amount: Decimal) -> None:
        """Add spend locally and atomically in Redis; the mirror takes Redis's total."""
        self._local.add_spend(scope, period, amount)
        key = self._key("spend", scope, period)

        async def write() -> None:
            total = await self._redis.incrbyfloat(key, float(amount))
            shared = Decimal(repr(float(total)))
            local = self._local.spend(scope, period)
            if shared > local:
                self._local.add_spend(scope, period, shared - local)

        self._publish(write)

    def observe_success(
        self,
        deployment_key: str,
        latency_s: float,
        now: float,
        *,
        queued_s: float | None = None,
        running_s: float | None = None,
    ) -> None:
        """Record a success locally; share the latency, and the breaker if it closed."""
        health = self._local.health(deployment_key)
        was_open = health.opened_at is not None
        self._local.observe_success(deployment_key, latency_s, now, queued_s=queued_s, running_s=running_s)
        if was_open:
            self._publish_breaker(deployment_key, health)

    def observe_failure(self, deployment_key: str, now: float, breaker: CircuitBreakerPolicy) -> None:
        """Record a breaker failure locally; share the breaker state when it opens."""
        health = self._local.health(deployment_key)
        before = health.open_until
        self._local.observe_failure(deployment_key, now, breaker)
        if health.open_until != before:
            self._publish_breaker(deployment_key, health)
