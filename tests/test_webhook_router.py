"""Webhooks through the router: verification with configured secrets, idempotent recording,
waking ``result()``, and the ASGI receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from fakes.fal import DEFAULT_KEY, Behaviour, FakeFal, start_server
from fakes.server import LoopbackServer, Request, Response
from genrouter import AsyncRouter, GenerationRequest, GenerationResult, JobState, JobStatus, ProviderJob
from genrouter.errors import ConfigError
from genrouter.testing import FakeClock
from genrouter.webhooks import JwksCache, WebhookEvent, WebhookHub, WebhookVerificationError, asgi_app

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
FAL_KEY = Ed25519PrivateKey.generate()


class StuckClock:
    """A clock whose sleeps never end: once ``result()`` has polled, only a webhook can wake it."""

    def now(self) -> float:
        return 1000.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


class ScriptedBackend:
    """Jobs that run until the test says they finished; counts polls and fetches."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.finished: set[str] = set()
        self.polls = 0
        self.fetches = 0
        self._ids = itertools.count(1)

    async def submit(
        self, deployment: Any, request: GenerationRequest, *, webhook_url: str | None = None
    ) -> Any:
        rid = f"pred{next(self._ids):04d}"
        return ProviderJob(provider=self.name, endpoint=deployment.endpoint, provider_request_id=rid)

    async def poll(self, job: ProviderJob) -> JobStatus:
        self.polls += 1
        done = job.provider_request_id in self.finished
        return JobStatus(state=JobState.SUCCEEDED if done else JobState.RUNNING, provider=self.name)

    async def fetch_result(self, job: ProviderJob) -> GenerationResult:
        self.fetches += 1
        return GenerationResult(
            id="",
            model="flux-dev",
            provider=self.name,
            endpoint=job.endpoint,
            provider_request_id=job.provider_request_id,
            outputs=[{"url": "https://example.invalid/out-0.png", "content_type": "image/png"}],  # type: ignore[list-item]
        )

    async def cancel(self, job: ProviderJob) -> None:
        return None

    async def aclose(self) -> None:
        return None


def replicate_router(
    *, secret: str | None = SECRET, clock: Any = None, extra: dict[str, Any] | None = None
) -> tuple[AsyncRouter, ScriptedBackend]:
    backend = ScriptedBackend("rep")
    section: dict[str, Any] = {"type": "replicate", "api_token": "r8_testtokentesttoken00"}
    if secret is not None:
        section["webhook_secret"] = secret
    config = {"version": 1, "providers": {"rep": section, **(extra or {})}}
    return AsyncRouter.from_config(config, backends={"rep": backend}, clock=clock or StuckClock()), backend


def replicate_delivery(
    rid: str, status: str = "succeeded", *, msg_id: str = "msg_1", secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"id": rid, "status": status, "output": ["https://x/out-0.png"]}).encode()
    stamp = int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}, body


def fal_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def fal_delivery(rid: str, payload: Any, *, key: Ed25519PrivateKey = FAL_KEY) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {"request_id": rid, "gateway_request_id": rid, "status": "OK", "payload": payload}
    ).encode()
    stamp = str(int(time.time()))
    message = "\n".join((rid, "user-1", stamp, hashlib.sha256(body).hexdigest())).encode()
    headers = {
        "x-fal-webhook-request-id": rid,
        "x-fal-webhook-user-id": "user-1",
        "x-fal-webhook-timestamp": stamp,
        "x-fal-webhook-signature": key.sign(message).hex(),
    }
    return headers, body


async def until(condition: Any) -> None:
    """Yield to the loop until ``condition()`` holds (a safety bound, not a timing assertion)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


# -- waking result() -----------------------------------------------------------------------------------


async def test_replicate_webhook_wakes_a_waiting_result() -> None:
    """result() blocked between polls returns once a verified webhook says the job finished."""
    router, backend = replicate_router()
    handle = await router.submit(
        model="flux-dev", prompt="a fox", webhook_url="https://app.example/webhooks/rep"
    )
    waiting = asyncio.ensure_future(router.result(handle, timeout=60))
    await until(lambda: backend.polls >= 1)
    assert not waiting.done()
    backend.finished.add(handle.provider_request_id)
    event = await router.handle_webhook("rep", *replicate_delivery(handle.provider_request_id))
    assert event.state is JobState.SUCCEEDED
    assert event.provider == "rep"
    result = await asyncio.wait_for(waiting, 10)
    assert result.provider_request_id == handle.provider_request_id
    assert backend.fetches == 1


async def test_webhook_before_result_is_called_is_not_lost() -> None:
    """A delivery that arrives before anyone waits still lets result() finish at once."""
    router, backend = replicate_router()
    handle = await router.submit(model="flux-dev", prompt="a fox")
    backend.finished.add(handle.provider_request_id)
    await router.handle_webhook("rep", *replicate_delivery(handle.provider_request_id))
    result = await asyncio.wait_for(router.result(handle, timeout=60), 10)
    assert result.outputs


async def test_fal_webhook_wakes_result_against_the_fake_fal_queue() -> None:
    """End to end: FalBackend on the loopback fake, webhook URL sent, signed delivery wakes result()."""
    fake = FakeFal(behaviour=Behaviour(hang=True))
    server = start_server(fake)
    try:
        config = {
            "version": 1,
            "providers": {
                "fal": {
                    "api_key": DEFAULT_KEY,
                    "base_url": server.url,
                    "webhook_public_keys": [fal_jwk(FAL_KEY)],
                }
            },
        }
        async with AsyncRouter.from_config(config, clock=StuckClock()) as router:
            handle = await router.submit(
                model="flux-dev", prompt="a fox", webhook_url="https://app.example/webhooks/fal"
            )
            job = fake.jobs[handle.provider_request_id]
            assert job.webhook == "https://app.example/webhooks/fal"
            waiting = asyncio.ensure_future(router.result(handle, timeout=60))
            await until(lambda: job.polls >= 1)
            job.behaviour = Behaviour(queue_polls=0, progress_polls=0)
            payload = fake.output(job, server.url)
            await router.handle_webhook("fal", *fal_delivery(handle.provider_request_id, payload))
            result = await asyncio.wait_for(waiting, 10)
        assert result.provider == "fal"
        assert result.outputs[0].url.startswith(server.url)
        assert fake.submit_count() == 1
    finally:
        server.stop()


async def test_polling_finishes_result_when_no_webhook_arrives() -> None:
    """A missed delivery costs nothing but latency: polling is the backstop."""
    router, backend = replicate_router(clock=FakeClock())
    handle = await router.submit(model="flux-dev", prompt="a fox", webhook_url="https://app.example/w")

    original = backend.poll

    async def finishing_poll(job: ProviderJob) -> JobStatus:
        if backend.polls >= 3:
            backend.finished.add(job.provider_request_id)
        return await original(job)

    backend.poll = finishing_poll  # type: ignore[method-assign]
    result = await asyncio.wait_for(router.result(handle, timeout=60), 10)
    assert result.outputs
    assert router.webhooks.latest("rep", handle.provider_request_id) is None


# -- idempotency ---------------------------------------------------------------------------------------


async def test_duplicate_deliveries_resolve_a_job_once() -> None:
    """The same delivery twice (a provider retry) is recorded once; the job is fetched once."""
    router, backend = replicate_router()
    handle = await router.submit(model="flux-dev", prompt="a fox")
    rid = handle.provider_request_id
    backend.finished.add(rid)
    headers, body = replicate_delivery(rid, msg_id="msg_same")
    first = await router.handle_webhook("rep", headers, body)
    second = await router.handle_webhook("rep", headers, body)
    assert not first.duplicate
    assert second.duplicate
    assert router.webhooks.latest("rep", rid) == first
    await asyncio.wait_for(router.result(handle, timeout=60), 10)
    assert backend.fetches == 1


async def test_a_second_terminal_delivery_does_not_replace_the_first() -> None:
    """Once a job is recorded finished, a later delivery (even another terminal one) changes nothing."""
    router, _ = replicate_router()
    first = await router.handle_webhook("rep", *replicate_delivery("pred0001", "succeeded", msg_id="msg_a"))
    later = await router.handle_webhook("rep", *replicate_delivery("pred0001", "failed", msg_id="msg_b"))
    assert later.duplicate
    assert router.webhooks.latest("rep", "pred0001") == first


async def test_out_of_order_delivery_never_moves_a_job_backwards() -> None:
    """A non-terminal event after a terminal one, or an earlier state after a later one, is ignored."""
    router, _ = replicate_router()
    await router.handle_webhook("rep", *replicate_delivery("pred0001", "processing", msg_id="msg_1"))
    stale = await router.handle_webhook("rep", *replicate_delivery("pred0001", "starting", msg_id="msg_0"))
    assert stale.duplicate
    assert router.webhooks.latest("rep", "pred0001").state is JobState.RUNNING  # type: ignore[union-attr]
    await router.handle_webhook("rep", *replicate_delivery("pred0001", "succeeded", msg_id="msg_2"))
    late = await router.handle_webhook("rep", *replicate_delivery("pred0001", "processing", msg_id="msg_3"))
    assert late.duplicate
    assert router.webhooks.finished("rep", "pred0001")


def test_hub_forgets_the_oldest_jobs_beyond_its_bound() -> None:
    """Memory stays bounded: past max_jobs, the oldest recorded job is forgotten first."""
    hub = WebhookHub(max_jobs=2)
    for rid in ("a", "b", "c"):
        hub.record(WebhookEvent(provider="rep", provider_request_id=rid, state=JobState.SUCCEEDED))
    assert hub.latest("rep", "a") is None
    assert hub.finished("rep", "c")
    assert len(hub) == 2


# -- failures never touch job state ---------------------------------------------------------------------


async def test_forged_webhook_is_rejected_and_changes_nothing() -> None:
    """A delivery signed with another secret raises and neither records nor wakes anything."""
    router, backend = replicate_router()
    handle = await router.submit(model="flux-dev", prompt="a fox")
    waiting = asyncio.ensure_future(router.result(handle, timeout=60))
    await until(lambda: backend.polls >= 1)
    backend.finished.add(handle.provider_request_id)
    forged_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    with pytest.raises(WebhookVerificationError):
        await router.handle_webhook(
            "rep", *replicate_delivery(handle.provider_request_id, secret=forged_secret)
        )
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    assert router.webhooks.latest("rep", handle.provider_request_id) is None
    assert backend.fetches == 0
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_webhook_for_an_unknown_provider_is_a_config_error() -> None:
    """A provider key that is not configured is refused."""
    router, _ = replicate_router()
    with pytest.raises(ConfigError, match="unknown provider"):
        await router.handle_webhook("nope", *replicate_delivery("pred0001"))


async def test_replicate_without_a_webhook_secret_is_a_config_error() -> None:
    """Verifying needs providers.<key>.webhook_secret, and the error names it."""
    router, _ = replicate_router(secret=None)
    with pytest.raises(ConfigError) as missing:
        await router.handle_webhook("rep", *replicate_delivery("pred0001"))
    assert missing.value.key_path == "providers.rep.webhook_secret"


async def test_provider_type_without_signed_webhooks_is_a_config_error() -> None:
    """A simulated provider sends no webhooks to verify."""
    router, _ = replicate_router(extra={"sim": {"type": "simulated"}})
    with pytest.raises(ConfigError, match="no signed webhooks"):
        await router.handle_webhook("sim", *replicate_delivery("pred0001"))


# -- fal keys from a JWKS URL ------------------------------------------------------------------------------


class JwksEndpoint:
    def __init__(self, *keys: Ed25519PrivateKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.server = LoopbackServer(self.handle).start()

    def handle(self, request: Request) -> Response:
        self.fetches += 1
        return Response.json({"keys": [fal_jwk(k) for k in self.keys]})

    @property
    def url(self) -> str:
        return f"{self.server.url}/.well-known/jwks.json"


@pytest.fixture
def jwks() -> Iterator[JwksEndpoint]:
    endpoint = JwksEndpoint(FAL_KEY)
    yield endpoint
    endpoint.server.stop()


def fal_router(jwks_url: str) -> AsyncRouter:
    config = {"version": 1, "providers": {"fal": {"api_key": DEFAULT_KEY, "webhook_jwks_url": jwks_url}}}
    return AsyncRouter.from_config(config, backends={"fal": ScriptedBackend("fal")})


async def test_fal_keys_come_from_the_configured_jwks_url_and_are_cached(jwks: JwksEndpoint) -> None:
    """Deliveries verify against the JWKS at webhook_jwks_url, fetched once for many deliveries."""
    router = fal_router(jwks.url)
    for rid in ("req-1", "req-2", "req-3"):
        event = await router.handle_webhook("fal", *fal_delivery(rid, {"images": []}))
        assert event.provider_request_id == rid
    assert jwks.fetches == 1


async def test_fal_rotated_key_is_picked_up_by_one_refetch(jwks: JwksEndpoint) -> None:
    """A signature by a newly published key verifies after the keys are fetched again."""

    class Ticks:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    ticks = Ticks()
    router = fal_router(jwks.url)
    router.webhooks.key_cache["jwks"] = JwksCache(clock=ticks)
    await router.handle_webhook("fal", *fal_delivery("req-1", {}))
    new_key = Ed25519PrivateKey.generate()
    jwks.keys.append(new_key)
    with pytest.raises(WebhookVerificationError, match="matches none"):
        # Keys fetched moments ago are not fetched again: a forged delivery cannot force fetches.
        await router.handle_webhook("fal", *fal_delivery("req-2", {}, key=new_key))
    ticks.now += 300
    event = await router.handle_webhook("fal", *fal_delivery("req-2", {}, key=new_key))
    assert event.state is JobState.SUCCEEDED
    assert jwks.fetches == 2


# -- the ASGI receiver -------------------------------------------------------------------------------------


def client_for(router: AsyncRouter) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(router)), base_url="http://app")


async def test_asgi_receiver_accepts_a_verified_delivery() -> None:
    """POST /webhooks/{provider} answers 200 with the job's state and records it."""
    router, _ = replicate_router()
    headers, body = replicate_delivery("pred0001")
    async with client_for(router) as client:
        response = await client.post("/webhooks/rep", headers=headers, content=body)
        again = await client.post("/webhooks/rep", headers=headers, content=body)
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "provider_request_id": "pred0001",
        "state": "succeeded",
        "duplicate": False,
    }
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert router.webhooks.finished("rep", "pred0001")


async def test_asgi_receiver_rejects_a_forged_delivery_with_401() -> None:
    """A bad signature answers 401 and records nothing."""
    router, _ = replicate_router()
    headers, body = replicate_delivery("pred0001")
    async with client_for(router) as client:
        response = await client.post("/webhooks/rep", headers=headers, content=body.replace(b"pred", b"xred"))
    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert len(router.webhooks) == 0


async def test_asgi_receiver_answers_404_for_an_unknown_provider() -> None:
    """An unconfigured provider in the path is 404."""
    router, _ = replicate_router()
    async with client_for(router) as client:
        response = await client.post("/webhooks/other", headers={}, content=b"{}")
    assert response.status_code == 404


async def test_asgi_receiver_answers_503_when_the_secret_is_not_configured() -> None:
    """A receiver that cannot verify yet answers 5xx, so the provider delivers again later."""
    router, _ = replicate_router(secret=None)
    async with client_for(router) as client:
        response = await client.post("/webhooks/rep", headers=replicate_delivery("p1")[0], content=b"{}")
    assert response.status_code == 503


async def test_asgi_receiver_finds_the_provider_from_the_signature_headers() -> None:
    """POST /webhooks without a provider tries each provider whose scheme signed the delivery."""
    router, _ = replicate_router()
    headers, body = replicate_delivery("pred0001")
    async with client_for(router) as client:
        response = await client.post("/webhooks", headers=headers, content=body)
        unsigned = await client.post("/webhooks", headers={}, content=body)
    assert response.status_code == 200
    assert router.webhooks.finished("rep", "pred0001")
    assert unsigned.status_code == 404


async def test_asgi_receiver_refuses_an_oversized_body() -> None:
    """A body over the limit answers 413 without being verified."""
    router, _ = replicate_router()
    app = asgi_app(router, max_body_bytes=64)
    transport = httpx.ASGITransport(app=app)
    headers, body = replicate_delivery("pred0001")
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/webhooks/rep", headers=headers, content=body + b" " * 100)
    assert response.status_code == 413


async def test_asgi_receiver_only_accepts_post() -> None:
    """GET on the webhook path is 405."""
    router, _ = replicate_router()
    async with client_for(router) as client:
        response = await client.get("/webhooks/rep")
    assert response.status_code == 405
