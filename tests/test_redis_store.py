"""Shared routing state through a real Redis server on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from genrouter import AsyncRouter, BudgetExceededError, ProviderUnavailableError
from genrouter.config import CircuitBreakerPolicy
from genrouter.routing.redis_store import RedisStateStore
from genrouter.testing import FakeBackend, set_testing

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    """CI sets GENROUTER_REQUIRE_REDIS so a missing server fails instead of skipping."""
    if not _redis_up():
        if os.environ.get("GENROUTER_REQUIRE_REDIS"):
            pytest.fail("Redis is not reachable on 127.0.0.1:6379")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A fresh key namespace, deleted afterwards."""
    ns = f"genrouter-test-{uuid.uuid4().hex[:12]}"
    yield ns
    import redis.asyncio as redis_asyncio

    client: Any = redis_asyncio.from_url(REDIS_URL, decode_responses=True)
    keys = [k async for k in client.scan_iter(f"{ns}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def config(namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {
            "a": {
                "type": "custom",
                "models": {"flux-dev": {"endpoint": "a/flux-dev", "price": {"per_image": "0.01"}}},
            },
            "b": {
                "type": "custom",
                "models": {"flux-dev": {"endpoint": "b/flux-dev", "price": {"per_image": "0.01"}}},
            },
        },
        "routing": {
            "default": {
                "strategy": "priority",
                "retry": {"max_attempts": 1},
                "circuit_breaker": {"failure_threshold": 2, "cooldown_s": 60},
            }
        },
        "state": {"store": REDIS_URL, "namespace": namespace},
        **extra,
    }


BREAKER = CircuitBreakerPolicy(failure_threshold=1, cooldown_s=30)


async def test_a_tripped_breaker_is_seen_by_another_store(namespace: str) -> None:
    """One store opens a circuit; another sharing the namespace sees it open after a sync."""
    one = RedisStateStore(REDIS_URL, namespace=namespace)
    two = RedisStateStore(REDIS_URL, namespace=namespace)
    try:
        one.observe_failure("a/flux-dev", asyncio.get_running_loop().time(), BREAKER)
        await one.flush()
        await two.sync()
        state = two.health("a/flux-dev").state(asyncio.get_running_loop().time())
        assert state.value == "open"
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_closed_breaker_is_shared_too(namespace: str) -> None:
    """A success after the cooldown closes the circuit for every process."""
    one = RedisStateStore(REDIS_URL, namespace=namespace)
    two = RedisStateStore(REDIS_URL, namespace=namespace)
    try:
        now = asyncio.get_running_loop().time()
        one.observe_failure("a/flux-dev", now - 100, BREAKER)
        await one.flush()
        await two.sync()
        two.observe_success("a/flux-dev", 0.5, now)
        await two.flush()
        await one.sync()
        assert one.health("a/flux-dev").state(now).value == "closed"
    finally:
        await one.aclose()
        await two.aclose()


async def test_retry_after_blocks_are_shared(namespace: str) -> None:
    """A Retry-After honoured in one process holds in another."""
    one = RedisStateStore(REDIS_URL, namespace=namespace)
    two = RedisStateStore(REDIS_URL, namespace=namespace)
    try:
        now = asyncio.get_running_loop().time()
        one.block("fal", now + 30)
        await one.flush()
        await two.sync()
        assert two.blocked_until("fal") > now + 25
    finally:
        await one.aclose()
        await two.aclose()


async def test_spend_is_counted_across_stores(namespace: str) -> None:
    """Spend added in two processes adds up in Redis, and each sees the total."""
    one = RedisStateStore(REDIS_URL, namespace=namespace)
    two = RedisStateStore(REDIS_URL, namespace=namespace)
    try:
        one.add_spend("a", "total", Decimal("0.25"))
        await one.flush()
        two.add_spend("a", "total", Decimal("0.5"))
        await two.flush()
        assert two.spend("a", "total") == Decimal("0.75")
    finally:
        await one.aclose()
        await two.aclose()


async def test_latency_estimates_blend_across_processes(namespace: str) -> None:
    """A deployment seen slow elsewhere looks slower here, weighted by sample counts."""
    one = RedisStateStore(REDIS_URL, namespace=namespace)
    two = RedisStateStore(REDIS_URL, namespace=namespace)
    try:
        now = asyncio.get_running_loop().time()
        for _ in range(10):
            one.observe_success("a/flux-dev", 9.0, now)
            two.observe_success("a/flux-dev", 1.0, now)
        await one.sync()
        await two.sync()
        blended = two.health("a/flux-dev").estimated_p95
        assert blended is not None
        assert 4.0 < blended < 6.0
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_router_with_a_redis_store_routes_and_shares_its_breaker(namespace: str) -> None:
    """Two routers: the first trips a's breaker, the second routes around a without trying it."""
    set_testing()
    a1 = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
    async with AsyncRouter.from_config(
        config(namespace), backends={"a": a1, "b": FakeBackend(name="b")}
    ) as one:
        for _ in range(2):
            assert (await one.generate("a fox", model="flux-dev")).provider == "b"
    a2 = FakeBackend(name="a")
    async with AsyncRouter.from_config(
        config(namespace), backends={"a": a2, "b": FakeBackend(name="b")}
    ) as two:
        await two.state.sync()  # type: ignore[attr-defined]
        assert (await two.generate("a fox", model="flux-dev")).provider == "b"
    assert a2.submit_count == 0


async def test_budgets_hold_across_routers(namespace: str) -> None:
    """A total budget spent by one router is exhausted for another."""
    cfg = config(namespace, budgets=[{"limit_usd": "0.01", "period": "total"}])
    async with AsyncRouter.from_config(
        cfg, backends={"a": FakeBackend(name="a"), "b": FakeBackend(name="b")}
    ) as one:
        await one.generate("a fox", model="flux-dev")
    async with AsyncRouter.from_config(
        cfg, backends={"a": FakeBackend(name="a"), "b": FakeBackend(name="b")}
    ) as two:
        await two.state.sync()  # type: ignore[attr-defined]
        two.state.add_spend("*", "total", Decimal(0))
        await two.state.flush()  # type: ignore[attr-defined]
        with pytest.raises(BudgetExceededError):
            await two.generate("a fox", model="flux-dev")


TRIPPER = textwrap.dedent(
    """
    import asyncio, json, sys
    from genrouter import AsyncRouter, ProviderUnavailableError
    from genrouter.testing import FakeBackend, set_testing

    async def main():
        set_testing()
        config = json.loads(sys.argv[1])
        failing = FakeBackend(name="a", script=[ProviderUnavailableError("503")])
        backends = {"a": failing, "b": FakeBackend(name="b")}
        async with AsyncRouter.from_config(config, backends=backends) as router:
            for _ in range(2):
                result = await router.generate("a fox", model="flux-dev")
                assert result.provider == "b", result.provider
        print("tripped", failing.submit_count)

    asyncio.run(main())
    """
)


async def test_two_router_processes_share_an_open_breaker(namespace: str) -> None:
    """A separate process trips a's breaker; this process then sees it open and skips a."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRIPPER,
        json.dumps(config(namespace)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "tripped 2"
    a = FakeBackend(name="a")
    async with AsyncRouter.from_config(
        config(namespace), backends={"a": a, "b": FakeBackend(name="b")}
    ) as router:
        await router.state.sync()  # type: ignore[attr-defined]
        plan = router.explain("a fox", model="flux-dev")
        assert "circuit open" in (plan.candidates[-1].excluded or "")
        assert (await router.generate("a fox", model="flux-dev")).provider == "b"
    assert a.submit_count == 0
