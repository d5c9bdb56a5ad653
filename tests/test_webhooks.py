"""Webhook signature verification: Replicate (Standard Webhooks) and fal (Ed25519).

Signatures are made by the real libraries: ``standardwebhooks`` for Replicate's
scheme and ``cryptography``'s Ed25519 keys for fal's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from fakes.server import LoopbackServer, Request, Response
from genrouter import GenRouterError, JobState
from genrouter.errors import ConfigError
from genrouter.webhooks import (
    JwksCache,
    WebhookVerificationError,
    load_public_keys,
    verify_fal_webhook,
    verify_replicate_webhook,
)

NOW = 1_750_000_000

# -- Replicate helpers -------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


SECRET = new_secret()


def prediction(status: str = "succeeded", **extra: Any) -> bytes:
    body = {"id": "p8kz3x9y2hrma0cmnq1tq3yd1r", "status": status, "output": ["https://x/out-0.webp"], **extra}
    return json.dumps(body).encode()


def replicate_headers(
    body: bytes, *, secret: str = SECRET, stamp: int = NOW, msg_id: str = "msg_2x9Ab"
) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


# -- fal helpers -----------------------------------------------------------------------------------


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def jwk(key: Ed25519PrivateKey, kid: str = "k1") -> dict[str, str]:
    x = base64.urlsafe_b64encode(raw_public(key)).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}


FAL_KEY = Ed25519PrivateKey.generate()
JWKS = {"keys": [jwk(FAL_KEY)]}


def fal_body(status: str = "OK", request_id: str = "req-0001", **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": status,
        "payload": {"images": [{"url": "https://v3.fal.media/files/x.png"}]},
        "error": None,
        **extra,
    }
    return json.dumps(body).encode()


def fal_headers(
    body: bytes,
    *,
    key: Ed25519PrivateKey = FAL_KEY,
    stamp: int = NOW,
    request_id: str = "req-0001",
    user_id: str = "user-42",
) -> dict[str, str]:
    message = "\n".join((request_id, user_id, str(stamp), hashlib.sha256(body).hexdigest())).encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(stamp),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


# -- Replicate ----------------------------------------------------------------------------------------


def test_replicate_reference_vector_verifies() -> None:
    """The verified test vector of the reference (secret, id, timestamp, body, signature) is accepted."""
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    with pytest.raises(WebhookVerificationError, match="not a prediction"):
        # The vector's body is not a prediction: getting past the MAC to the body check proves the match.
        verify_replicate_webhook(
            headers, b'{"test": 2432232314}', secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", now=1614265330
        )


def test_replicate_reference_vector_with_one_changed_byte_fails() -> None:
    """The same vector with the body altered fails on the signature."""
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify_replicate_webhook(
            headers, b'{"test": 2432232315}', secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", now=1614265330
        )


def test_replicate_signature_from_standardwebhooks_is_accepted() -> None:
    """A delivery signed by the standardwebhooks package verifies and is normalised."""
    body = prediction()
    event = verify_replicate_webhook(replicate_headers(body), body, secret=SECRET, now=NOW)
    assert event.provider == "replicate"
    assert event.provider_request_id == "p8kz3x9y2hrma0cmnq1tq3yd1r"
    assert event.state is JobState.SUCCEEDED
    assert event.delivery_id == "msg_2x9Ab"
    assert event.timestamp == NOW
    assert event.raw["output"] == ["https://x/out-0.webp"]
    assert event.result is None
    assert event.error is None


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("starting", JobState.QUEUED),
        ("processing", JobState.RUNNING),
        ("succeeded", JobState.SUCCEEDED),
        ("failed", JobState.FAILED),
        ("canceled", JobState.CANCELLED),
        ("aborted", JobState.CANCELLED),
    ],
)
def test_replicate_statuses_map_to_job_states(status: str, state: JobState) -> None:
    """Every prediction status maps to a genrouter job state."""
    body = prediction(status)
    assert verify_replicate_webhook(replicate_headers(body), body, secret=SECRET, now=NOW).state is state


def test_replicate_failed_prediction_carries_its_error() -> None:
    """A failed prediction's error text is on the event."""
    body = prediction("failed", error="CUDA out of memory")
    event = verify_replicate_webhook(replicate_headers(body), body, secret=SECRET, now=NOW)
    assert event.error == "CUDA out of memory"


def test_replicate_headers_are_case_insensitive() -> None:
    """Header names in any case, and httpx's Headers type, verify the same."""
    body = prediction()
    upper = {k.title(): v for k, v in replicate_headers(body).items()}
    assert verify_replicate_webhook(upper, body, secret=SECRET, now=NOW).state is JobState.SUCCEEDED
    headers = httpx.Headers(upper)
    assert verify_replicate_webhook(headers, body, secret=SECRET, now=NOW).state is JobState.SUCCEEDED


def test_replicate_any_of_several_signatures_may_match() -> None:
    """A rotated secret: one of several space-separated v1 signatures matches."""
    body = prediction()
    headers = replicate_headers(body)
    stale = replicate_headers(body, secret=new_secret())["webhook-signature"]
    headers["webhook-signature"] = f"v1a,bm90LWEtbWFj {stale} {headers['webhook-signature']} v1,!!!"
    assert verify_replicate_webhook(headers, body, secret=SECRET, now=NOW).state is JobState.SUCCEEDED


def test_replicate_signatures_of_other_versions_are_ignored() -> None:
    """A correct MAC labelled with another version than v1 does not count."""
    body = prediction()
    headers = replicate_headers(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW)


def test_replicate_tampered_body_is_rejected() -> None:
    """Changing the body after signing fails verification."""
    body = prediction()
    headers = replicate_headers(body)
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify_replicate_webhook(headers, prediction("failed"), secret=SECRET, now=NOW)


def test_replicate_wrong_secret_is_rejected() -> None:
    """A delivery signed with another secret fails verification."""
    body = prediction()
    with pytest.raises(WebhookVerificationError):
        verify_replicate_webhook(replicate_headers(body, secret=new_secret()), body, secret=SECRET, now=NOW)


def test_replicate_changed_webhook_id_is_rejected() -> None:
    """The webhook id is signed: replaying a body under another id fails."""
    body = prediction()
    headers = replicate_headers(body)
    headers["webhook-id"] = "msg_other"
    with pytest.raises(WebhookVerificationError):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW)


def test_replicate_expired_timestamp_is_rejected() -> None:
    """A delivery signed more than the tolerance ago is a replay and is rejected."""
    body = prediction()
    headers = replicate_headers(body, stamp=NOW - 301)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW, tolerance_s=300)


def test_replicate_future_timestamp_is_rejected() -> None:
    """A delivery signed further in the future than the tolerance is rejected."""
    body = prediction()
    headers = replicate_headers(body, stamp=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW, tolerance_s=300)


def test_replicate_timestamp_within_tolerance_is_accepted() -> None:
    """A delivery signed within the tolerance (either way) verifies."""
    body = prediction()
    for stamp in (NOW - 299, NOW + 299):
        event = verify_replicate_webhook(replicate_headers(body, stamp=stamp), body, secret=SECRET, now=NOW)
        assert event.timestamp == stamp


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_replicate_missing_header_is_rejected(missing: str) -> None:
    """Each of the three Standard Webhooks headers is required."""
    body = prediction()
    headers = replicate_headers(body)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW)


def test_replicate_malformed_timestamp_is_rejected() -> None:
    """A timestamp that is not Unix seconds is rejected before any MAC is computed."""
    body = prediction()
    headers = replicate_headers(body)
    headers["webhook-timestamp"] = "2026-01-01T00:00:00Z"
    with pytest.raises(WebhookVerificationError, match="Unix seconds"):
        verify_replicate_webhook(headers, body, secret=SECRET, now=NOW)


def test_replicate_errors_never_show_the_secret() -> None:
    """Neither a failed check nor a bad secret puts the secret in the error."""
    body = prediction()
    with pytest.raises(WebhookVerificationError) as failed:
        verify_replicate_webhook(replicate_headers(body, secret=new_secret()), body, secret=SECRET, now=NOW)
    assert SECRET not in str(failed.value)
    assert SECRET[6:] not in repr(failed.value)
    with pytest.raises(ConfigError) as bad:
        verify_replicate_webhook(replicate_headers(body), body, secret="whsec_", now=NOW)
    assert "whsec_" not in str(bad.value).replace("'whsec_' + base64", "")


def test_verification_error_is_a_genrouter_error() -> None:
    """WebhookVerificationError sits in the genrouter exception tree."""
    assert issubclass(WebhookVerificationError, GenRouterError)


def test_verification_error_survives_pickling_with_its_facts() -> None:
    """The error pickles (job queues, multiprocessing) and keeps ``retryable``."""
    error = WebhookVerificationError("keys unavailable", retryable=True)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is WebhookVerificationError
    assert copy.retryable
    assert str(copy) == "keys unavailable"


def test_replicate_verified_body_that_is_not_a_prediction_is_rejected() -> None:
    """An authentic body without an id and status is still not an event."""
    body = json.dumps({"hello": "world"}).encode()
    with pytest.raises(WebhookVerificationError, match="not a prediction"):
        verify_replicate_webhook(replicate_headers(body), body, secret=SECRET, now=NOW)


# -- fal ----------------------------------------------------------------------------------------------


def test_fal_signature_from_an_ed25519_key_is_accepted() -> None:
    """A delivery signed with an Ed25519 key whose JWK is in the JWKS verifies and is normalised."""
    body = fal_body()
    event = verify_fal_webhook(fal_headers(body), body, public_keys=JWKS, now=NOW)
    assert event.provider == "fal"
    assert event.provider_request_id == "req-0001"
    assert event.state is JobState.SUCCEEDED
    assert event.timestamp == NOW
    assert event.raw["payload"]["images"][0]["url"].startswith("https://")


def test_fal_every_key_is_tried_for_rotation() -> None:
    """With several keys published, a signature by any of them verifies."""
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = {"keys": [jwk(old, "old"), {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, jwk(new, "new")]}
    body = fal_body()
    for key in (old, new):
        assert verify_fal_webhook(fal_headers(body, key=key), body, public_keys=jwks, now=NOW).state


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(lambda k: [jwk(k)], id="list-of-jwks"),
        pytest.param(lambda k: jwk(k), id="one-jwk"),
        pytest.param(lambda k: raw_public(k), id="raw-bytes"),
        pytest.param(lambda k: base64.urlsafe_b64encode(raw_public(k)).rstrip(b"=").decode(), id="base64url"),
        pytest.param(lambda k: raw_public(k).hex(), id="hex"),
        pytest.param(lambda k: [raw_public(Ed25519PrivateKey.generate()), raw_public(k)], id="list-of-raw"),
    ],
)
def test_fal_public_keys_in_every_accepted_form_verify(keys: Any) -> None:
    """JWKS, JWKs, and raw keys as bytes, base64url or hex are all accepted."""
    body = fal_body()
    event = verify_fal_webhook(fal_headers(body), body, public_keys=keys(FAL_KEY), now=NOW)
    assert event.state is JobState.SUCCEEDED


def test_fal_failed_request_is_a_failed_event_with_its_error() -> None:
    """status ERROR is a failed job carrying fal's error text."""
    body = fal_body("ERROR", error="Invalid status code: 422", payload={"detail": [{"msg": "bad"}]})
    event = verify_fal_webhook(fal_headers(body), body, public_keys=JWKS, now=NOW)
    assert event.state is JobState.FAILED
    assert event.error == "Invalid status code: 422"


def test_fal_cancelled_request_is_a_cancelled_event() -> None:
    """status ERROR with error_type client_cancelled is a cancelled job."""
    body = fal_body("ERROR", error="cancelled", error_type="client_cancelled")
    assert verify_fal_webhook(fal_headers(body), body, public_keys=JWKS, now=NOW).state is JobState.CANCELLED


def test_fal_unserialisable_output_still_succeeds_with_the_payload_error() -> None:
    """status OK with payload null and payload_error: the job succeeded; the reason is kept."""
    body = fal_body(payload=None, payload_error="not JSON serialisable")
    event = verify_fal_webhook(fal_headers(body), body, public_keys=JWKS, now=NOW)
    assert event.state is JobState.SUCCEEDED
    assert event.error == "not JSON serialisable"


def test_fal_tampered_body_is_rejected() -> None:
    """Changing the body after signing breaks the body hash the signature covers."""
    headers = fal_headers(fal_body())
    with pytest.raises(WebhookVerificationError, match="matches none"):
        verify_fal_webhook(headers, fal_body("ERROR"), public_keys=JWKS, now=NOW)


def test_fal_wrong_key_is_rejected() -> None:
    """A delivery signed by a key not in the JWKS fails verification."""
    body = fal_body()
    headers = fal_headers(body, key=Ed25519PrivateKey.generate())
    with pytest.raises(WebhookVerificationError, match="matches none of the 1"):
        verify_fal_webhook(headers, body, public_keys=JWKS, now=NOW)


@pytest.mark.parametrize("header", ["X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id"])
def test_fal_signed_ids_cannot_be_swapped(header: str) -> None:
    """The request and user ids are signed: changing either fails verification."""
    body = fal_body()
    headers = fal_headers(body)
    headers[header] = "someone-else"
    with pytest.raises(WebhookVerificationError):
        verify_fal_webhook(headers, body, public_keys=JWKS, now=NOW)


def test_fal_expired_timestamp_is_rejected() -> None:
    """A delivery signed more than the tolerance ago is rejected."""
    body = fal_body()
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_fal_webhook(fal_headers(body, stamp=NOW - 301), body, public_keys=JWKS, now=NOW)


def test_fal_future_timestamp_is_rejected() -> None:
    """A delivery signed too far in the future is rejected."""
    body = fal_body()
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_fal_webhook(fal_headers(body, stamp=NOW + 301), body, public_keys=JWKS, now=NOW)


@pytest.mark.parametrize(
    "missing",
    [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    ],
)
def test_fal_missing_header_is_rejected(missing: str) -> None:
    """All four fal webhook headers are required."""
    body = fal_body()
    headers = fal_headers(body)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing.lower()):
        verify_fal_webhook(headers, body, public_keys=JWKS, now=NOW)


def test_fal_signature_that_is_not_hex_is_rejected() -> None:
    """A signature header that is not 64 hex-encoded bytes is rejected."""
    body = fal_body()
    headers = fal_headers(body)
    headers["X-Fal-Webhook-Signature"] = "zz" * 64
    with pytest.raises(WebhookVerificationError, match="not hex"):
        verify_fal_webhook(headers, body, public_keys=JWKS, now=NOW)
    headers["X-Fal-Webhook-Signature"] = "ab" * 10
    with pytest.raises(WebhookVerificationError, match="64"):
        verify_fal_webhook(headers, body, public_keys=JWKS, now=NOW)


def test_fal_body_for_another_request_is_rejected() -> None:
    """An authentic signature over a body naming another request id is not accepted."""
    body = fal_body(request_id="req-9999")
    with pytest.raises(WebhookVerificationError, match="differs"):
        verify_fal_webhook(fal_headers(body, request_id="req-0001"), body, public_keys=JWKS, now=NOW)


def test_fal_key_material_that_is_not_ed25519_is_a_config_error() -> None:
    """A JWKS without Ed25519 keys, or a key of the wrong length, is a configuration error."""
    with pytest.raises(ConfigError, match="no Ed25519"):
        load_public_keys({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]})
    with pytest.raises(ConfigError, match="32 bytes"):
        load_public_keys(b"short")


# -- fal's JWKS -------------------------------------------------------------------------------------


class JwksServer:
    """A loopback JWKS endpoint that counts fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.status = 200
        self.server = LoopbackServer(self.handle).start()

    def handle(self, request: Request) -> Response:
        self.fetches += 1
        return Response.json(self.jwks, status=self.status)

    @property
    def url(self) -> str:
        return f"{self.server.url}/.well-known/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(JWKS)
    yield server
    server.server.stop()


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_jwks_is_fetched_once_and_cached(jwks_server: JwksServer) -> None:
    """Two lookups within the cache age fetch the JWKS once."""
    cache = JwksCache()
    first = await cache.keys(jwks_server.url)
    second = await cache.keys(jwks_server.url)
    assert first is second
    assert jwks_server.fetches == 1


async def test_jwks_is_fetched_again_after_24_hours(jwks_server: JwksServer) -> None:
    """Keys are kept at most 24 h."""
    ticks = Ticks()
    cache = JwksCache(clock=ticks)
    await cache.keys(jwks_server.url)
    ticks.now += 24 * 3600 - 1
    await cache.keys(jwks_server.url)
    assert jwks_server.fetches == 1
    ticks.now += 1
    await cache.keys(jwks_server.url)
    assert jwks_server.fetches == 2


async def test_jwks_refresh_is_allowed_only_after_five_minutes(jwks_server: JwksServer) -> None:
    """A failed match may trigger a refetch only when the keys are old enough."""
    ticks = Ticks()
    cache = JwksCache(clock=ticks)
    await cache.keys(jwks_server.url)
    assert not cache.can_refresh(jwks_server.url)
    ticks.now += 300
    assert cache.can_refresh(jwks_server.url)
    await cache.refresh(jwks_server.url)
    assert jwks_server.fetches == 2


async def test_jwks_fetch_failure_is_a_retryable_verification_error(jwks_server: JwksServer) -> None:
    """When keys cannot be fetched the delivery cannot be verified now (retryable)."""
    jwks_server.status = 503
    with pytest.raises(WebhookVerificationError) as failed:
        await JwksCache().keys(jwks_server.url)
    assert failed.value.retryable


def test_importing_genrouter_imports_no_webhook_dependencies() -> None:
    """``import genrouter`` loads neither cryptography, standardwebhooks nor starlette."""
    code = (
        "import sys, genrouter; "
        "print(sorted(m for m in ('cryptography', 'standardwebhooks', 'starlette', 'genrouter.webhooks') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
