"""A stopped lane abandons its HTTP call, not the answer: a 429 in it still counts."""

from __future__ import annotations

import asyncio

import httpx
import respx

from genrouter.backends._http import make_client, send
from genrouter.engine._abandoned import ABANDONED_ANSWERS
from genrouter.engine._attempts import JobWaiter
from genrouter.engine._clock import MonotonicClock


class Recorder:
    def __init__(self) -> None:
        self.answers: list[tuple[str, asyncio.Future[httpx.Response]]] = []

    def abandoned(self, provider: str, answer: asyncio.Future[httpx.Response]) -> None:
        self.answers.append((provider, answer))


async def waiter_after_abandoned(response: httpx.Response) -> JobWaiter:
    """A waiter told of an abandoned request to fal whose answer is ``response``."""
    waiter = JobWaiter(MonotonicClock())
    answer: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()
    waiter.abandoned("fal", answer)
    answer.set_result(response)
    await waiter.settle(1.0)
    return waiter


async def test_a_429_in_an_abandoned_answer_holds_the_requests_later_calls() -> None:
    waiter = await waiter_after_abandoned(httpx.Response(429, headers={"retry-after": "2"}))
    assert 1.5 < waiter.wait_before_calling("fal") <= 2.0
    assert waiter.wait_before_calling("replicate") == 0.0


async def test_an_abandoned_answer_that_is_not_a_429_changes_nothing() -> None:
    waiter = await waiter_after_abandoned(httpx.Response(200, json={"status": "IN_PROGRESS"}))
    assert waiter.wait_before_calling("fal") == 0.0


async def test_a_request_cancelled_in_flight_is_reported_with_its_answer() -> None:
    async def slow_429(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(429, headers={"retry-after": "1"})

    recorder = Recorder()
    with respx.mock(base_url="https://queue.example") as api:
        api.get("/status").mock(side_effect=slow_429)
        client = make_client(base_url="https://queue.example", timeout_s=5, headers={})

        async def poll() -> httpx.Response:
            ABANDONED_ANSWERS.set(recorder)
            return await send(client, "GET", "/status", provider="fal", idempotent=True)

        task = asyncio.ensure_future(poll())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [provider for provider, _ in recorder.answers] == ["fal"]
        response = await recorder.answers[0][1]
        assert response.status_code == 429
        await client.aclose()


async def test_without_a_listener_a_cancelled_request_is_simply_cancelled() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200)

    with respx.mock(base_url="https://queue.example", assert_all_called=False) as api:
        api.get("/status").mock(side_effect=slow)
        client = make_client(base_url="https://queue.example", timeout_s=5, headers={})
        task = asyncio.ensure_future(send(client, "GET", "/status", provider="fal", idempotent=True))
        await asyncio.sleep(0.01)
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        await client.aclose()
