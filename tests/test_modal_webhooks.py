"""Webhooks on the Modal route: the deployment POSTs a Standard Webhooks-signed job event that
``router.handle_webhook("<modal key>", ...)`` verifies with the Modal section's ``webhook_secret``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

pytest.importorskip("diffusers")

from fakes.server import LoopbackServer, Request, Response
from genrouter import AsyncRouter, GenerationRequest, JobState
from genrouter.backends.modal import ModalBackend
from genrouter.testing import InProcessModalTransport
from genrouter.testing._modal import SERVICE_PATH, load_service_module
from genrouter.webhooks import WebhookVerificationError, verify_modal_webhook

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
webhooks = load_service_module(SERVICE_PATH)._webhooks


class Receiver:
    """A loopback HTTP receiver that records deliveries; ``answers`` scripts its status codes."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.arrived = threading.Event()
        self.server = LoopbackServer(self._handle).start()

    def _handle(self, request: Request) -> Response:
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.arrived.set()
        return Response.json({"ok": status == 200}, status=status)

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/modal"

    @property
    def deliveries(self) -> list[Request]:
        return [r for r in self.server.requests if r.method == "POST"]

    async def wait(self) -> Request:
        assert await asyncio.to_thread(self.arrived.wait, 60), "no webhook arrived"
        return self.deliveries[-1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.stop()


def modal_config(secret: str | None = SECRET) -> dict[str, Any]:
    section: dict[str, Any] = {
        "type": "modal",
        "models": {
            "sdxl": {
                "endpoint": "sdxl",
                "capabilities": ["text-to-image"],
                "limits": {"max_outputs_per_call": 4, "width": [16, 2048], "height": [16, 2048]},
                "price": {"per_gpu_second": "0.001097"},
                "gpu_seconds_per_output": 1.0,
            }
        },
    }
    if secret is not None:
        section["webhook_secret"] = secret
    return {"version": 1, "providers": {"gpu": section}}


def modal_router(transport: InProcessModalTransport, secret: str | None = SECRET) -> AsyncRouter:
    backend = ModalBackend(name="gpu", settings={}, transport=transport)
    return AsyncRouter.from_config(modal_config(secret), backends={"gpu": backend})


def deployment_transport(secret: str = SECRET) -> InProcessModalTransport:
    return InProcessModalTransport.from_service_file(models=("sdxl",), webhook_secret=secret)


REQUEST = GenerationRequest(model="sdxl", prompt="a lighthouse", width=32, height=32, seed=3)


async def test_submit_with_a_webhook_url_sends_a_signed_event_the_router_verifies(receiver: Receiver) -> None:
    """submit(webhook_url=) on the Modal route ends in a delivery that handle_webhook turns into an event."""
    transport = deployment_transport()
    async with modal_router(transport) as router:
        handle = await router.submit(REQUEST, webhook_url=receiver.url)
        delivery = await receiver.wait()
        event = await router.handle_webhook("gpu", delivery.headers, delivery.body)
        result = await router.result(handle, timeout=30)
    await transport.aclose()
    assert handle.job.warnings == []
    assert transport.spawned[0][1]["webhook_url"] == receiver.url
    assert event.provider == "gpu"
    assert event.provider_request_id == handle.provider_request_id
    assert event.state is JobState.SUCCEEDED
    assert event.delivery_id == f"msg_{handle.provider_request_id}"
    assert event.result is None
    assert event.error is None
    assert not event.duplicate
    assert result.provider_request_id == handle.provider_request_id


async def test_delivery_carries_the_result_with_outputs_as_base64(receiver: Receiver) -> None:
    """The delivered event's data holds the result dict, its outputs base64-encoded images."""
    transport = deployment_transport()
    async with modal_router(transport) as router:
        await router.submit(REQUEST, webhook_url=receiver.url)
        delivery = await receiver.wait()
    await transport.aclose()
    envelope = json.loads(delivery.body)
    assert envelope["type"] == "job.succeeded"
    data = envelope["data"]
    assert data["status"] == "succeeded"
    assert data["error"] is None
    assert base64.b64decode(data["result"]["outputs"][0]).startswith(b"\x89PNG")
    assert data["result"]["seed"] == 3


async def test_a_failed_job_sends_a_failed_event_with_its_error(receiver: Receiver) -> None:
    """A request the deployment rejects is announced as failed, with the reason."""
    transport = deployment_transport()
    bad = REQUEST.model_copy(update={"width": 36})  # not a multiple of the model's size step
    async with modal_router(transport) as router:
        await router.submit(bad, webhook_url=receiver.url)
        delivery = await receiver.wait()
        event = await router.handle_webhook("gpu", delivery.headers, delivery.body)
    await transport.aclose()
    assert event.state is JobState.FAILED
    assert event.error is not None
    assert "36" in event.error


async def test_forged_delivery_is_rejected(receiver: Receiver) -> None:
    """A body changed after signing, or one signed with another secret, fails verification."""
    transport = deployment_transport()
    async with modal_router(transport) as router:
        await router.submit(REQUEST, webhook_url=receiver.url)
        delivery = await receiver.wait()
        tampered = delivery.body.replace(b'"succeeded"', b'"failed"', 1)
        with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
            await router.handle_webhook("gpu", delivery.headers, tampered)
    async with modal_router(transport, secret=OTHER_SECRET) as other:
        with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
            await other.handle_webhook("gpu", delivery.headers, delivery.body)
    await transport.aclose()


async def test_replayed_delivery_changes_nothing(receiver: Receiver) -> None:
    """The same delivery handled twice is flagged as a duplicate the second time."""
    transport = deployment_transport()
    async with modal_router(transport) as router:
        await router.submit(REQUEST, webhook_url=receiver.url)
        delivery = await receiver.wait()
        first = await router.handle_webhook("gpu", delivery.headers, delivery.body)
        again = await router.handle_webhook("gpu", delivery.headers, delivery.body)
    await transport.aclose()
    assert not first.duplicate
    assert again.duplicate


def test_expired_delivery_is_rejected() -> None:
    """A delivery signed longer ago than the tolerance (a captured one replayed later) is refused."""
    body = webhooks.job_body("fc-1", {"outputs": [], "seed": 1})
    stale = int(time.time()) - 3600
    headers = webhooks.signed_headers(SECRET, "msg_fc-1", body, timestamp=stale)
    with pytest.raises(WebhookVerificationError, match="old, more than"):
        verify_modal_webhook(headers, body, secret=SECRET)


def test_deployment_signature_matches_the_standard_webhooks_package() -> None:
    """What the deployment's stdlib signer writes is what the standardwebhooks package computes."""
    body = webhooks.job_body("fc-7", {"outputs": [b"x"], "seed": 1})
    headers = webhooks.signed_headers(SECRET, "msg_fc-7", body, timestamp=1_800_000_000)
    expected = Webhook(SECRET).sign("msg_fc-7", datetime.fromtimestamp(1_800_000_000, tz=UTC), body.decode())
    assert headers["webhook-signature"] == expected


async def test_handle_webhook_without_a_configured_secret_is_a_config_error(receiver: Receiver) -> None:
    """A Modal section without webhook_secret cannot verify deliveries and says which key to set."""
    from genrouter.errors import ConfigError

    body = webhooks.job_body("fc-1", {"outputs": []})
    headers = webhooks.signed_headers(SECRET, "msg_fc-1", body)
    transport = InProcessModalTransport(service=object())  # type: ignore[arg-type]
    async with modal_router(transport, secret=None) as router:
        with pytest.raises(ConfigError, match=r"providers\.gpu\.webhook_secret"):
            await router.handle_webhook("gpu", headers, body)


async def test_deployment_without_a_signing_secret_warns_instead_of_sending(receiver: Receiver) -> None:
    """A deployment lacking GENROUTER_WEBHOOK_SECRET serves the request and says no webhook was sent."""
    transport = InProcessModalTransport.from_service_file(models=("sdxl",))
    async with modal_router(transport) as router:
        result = await router.generate(REQUEST.model_copy(update={"providers": ["gpu"]}))
        handle = await router.submit(REQUEST, webhook_url=receiver.url)
        with_hook = await router.result(handle, timeout=30)
    await transport.aclose()
    assert result.outputs
    assert any("GENROUTER_WEBHOOK_SECRET" in w for w in with_hook.warnings)
    assert receiver.deliveries == []


def test_sender_retries_server_errors_then_stops_on_success() -> None:
    """A 503 and a refused connection are retried with the same webhook-id; a 2xx ends it."""
    seen: list[urllib.request.Request] = []
    answers: list[int | OSError] = [503, ConnectionRefusedError("down"), 204]
    waits: list[float] = []

    def opener(request: urllib.request.Request, timeout_s: float) -> int:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    sender = webhooks.WebhookSender(SECRET, sleep=waits.append, opener=opener)
    status = sender.deliver("http://127.0.0.1:9/hook", b"{}", "msg_fc-1")
    sender.close()
    assert status == 204
    assert waits == [1.0, 5.0]
    assert {r.get_header("Webhook-id") for r in seen} == {"msg_fc-1"}


def test_sender_does_not_retry_a_refusal() -> None:
    """A 4xx other than 429 means the receiver will never take it: one attempt only."""
    calls: list[int] = []

    def opener(request: urllib.request.Request, timeout_s: float) -> int:
        calls.append(1)
        return 400

    sender = webhooks.WebhookSender(SECRET, sleep=lambda s: None, opener=opener)
    assert sender.deliver("http://127.0.0.1:9/hook", b"{}", "msg_fc-1") == 400
    sender.close()
    assert calls == [1]


def test_malformed_signing_secret_is_refused_at_start() -> None:
    """A deployment secret that is not whsec_ + base64 fails when the sender is made, naming the variable."""
    with pytest.raises(ValueError, match="GENROUTER_WEBHOOK_SECRET"):
        webhooks.WebhookSender("not base64 !!")


def test_large_outputs_are_left_out_of_the_body() -> None:
    """Outputs over max_inline_bytes are omitted and counted; the receiver fetches them by call id."""
    body = json.loads(webhooks.job_body("fc-2", {"outputs": [b"x" * 100]}, max_inline_bytes=10))
    assert body["data"]["result"]["outputs"] == []
    assert body["data"]["result"]["outputs_omitted"] == 1
