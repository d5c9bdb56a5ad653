"""Fuzzing what fal's queue API and Replicate's API answer (respx), through each backend's
submit → poll → fetch_result, and through the router under a short deadline.

Malformed JSON, missing or wrong-typed fields, unknown statuses, 1 MB bodies, wrong
content types, non-UTF-8 bytes, odd status codes and Retry-After values: every call ends
in a valid result or a typed GenRouterError, never another exception type and never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from genrouter import AsyncRouter, GenerationRequest, GenerationResult, GenRouterError
from genrouter.backends.fal import FalBackend
from genrouter.backends.replicate import ReplicateBackend
from genrouter.catalog import Catalog, Deployment, build_deployment
from genrouter.testing import set_testing

# Failing examples with 1 MB bodies have huge reprs; hypothesis warns about that.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

FAL = "https://queue.fal.run"
REPLICATE = "https://api.replicate.com"
PID = "kr2d2jhqbsrj60cjb2vtmekgh4"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

Reply = tuple[int, dict[str, str], bytes]


@functools.cache
def _catalog() -> Catalog:
    return Catalog.load()


def _deployment(provider_type: str, model: str = "flux-dev") -> Deployment:
    catalog = _catalog()
    return build_deployment(
        provider=provider_type,
        provider_type=provider_type,
        model=model,
        entry=catalog.entries_for(provider_type)[model],
        spec=catalog.models[model],
    )


REQUEST = GenerationRequest(model="flux-dev", prompt="a red fox")

# -- canonical bodies -------------------------------------------------------------------------------

FAL_BASE = f"{FAL}/fal-ai/flux/requests/req-1"
FAL_SUBMIT = {
    "status": "IN_QUEUE",
    "request_id": "req-1",
    "queue_position": 0,
    "status_url": f"{FAL_BASE}/status",
    "response_url": FAL_BASE,
    "cancel_url": f"{FAL_BASE}/cancel",
}
FAL_STATUS = {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 1.5}}
FAL_IMAGE = {
    "url": "https://v3.fal.media/files/fox.jpg",
    "width": 1024,
    "height": 768,
    "content_type": "image/jpeg",
}
FAL_RESULT = {"images": [FAL_IMAGE], "seed": 7, "has_nsfw_concepts": [False], "timings": {"inference": 2.5}}

REPLICATE_PREDICTION: dict[str, Any] = {
    "id": PID,
    "model": "black-forest-labs/flux-dev",
    "version": "hidden",
    "status": "starting",
    "input": {"prompt": "a red fox"},
    "output": None,
    "error": None,
    "logs": "",
    "created_at": "2024-10-09T17:53:41.582Z",
    "started_at": None,
    "completed_at": None,
    "metrics": {},
    "urls": {
        "get": f"{REPLICATE}/v1/predictions/{PID}",
        "cancel": f"{REPLICATE}/v1/predictions/{PID}/cancel",
    },
}
REPLICATE_DONE = {
    **REPLICATE_PREDICTION,
    "status": "succeeded",
    "output": ["https://replicate.delivery/xezq/out-0.webp"],
    "started_at": "2024-10-09T17:53:43.08235812Z",
    "completed_at": "2024-10-09T17:53:45.582358Z",
    "metrics": {"predict_time": 2.25},
}

# -- strategies -------------------------------------------------------------------------------------

json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "COMPLETED",
            "IN_QUEUE",
            "IN_PROGRESS",
            "FAILED",
            "succeeded",
            "failed",
            "canceled",
            "aborted",
            "processing",
            "starting",
            "weird",
            "",
            "https://v3.fal.media/x.png",
            "data:image/png;base64,AAAA",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def mutated(
    base: dict[str, Any], nested: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """``base`` with some keys dropped and some replaced by junk (or by ``nested`` strategies)."""
    keys = sorted(base)
    replacement = st.sampled_from([*keys, "unknown_key"]).flatmap(
        lambda key: st.tuples(st.just(key), (nested or {}).get(key, json_junk) | json_junk)
    )

    def build(drop: set[str], replace: list[tuple[str, Any]]) -> dict[str, Any]:
        body = {k: v for k, v in base.items() if k not in drop}
        body.update(replace)
        return body

    return st.builds(build, st.sets(st.sampled_from(keys), max_size=3), st.lists(replacement, max_size=3))


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


RAW_BODIES = st.sampled_from(
    [
        b"",
        b"{",
        b'{"status":',
        b"null",
        b"[]",
        b"42",
        b'"COMPLETED"',
        b"\xff\xfe\x00garbage\x80",
        b'{"status": "COMPLETED", "logs": "\xff\xfe"}',
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"detail": NaN}',
    ]
)


def huge_bodies(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    mega = "x" * 1_000_000
    return st.sampled_from(sorted(base)).map(lambda key: _encode({**base, key: mega})) | st.just(
        b'{"detail": "' + b"\xff" * 1_000_000 + b'"}'
    )


STATUS_CODES = st.sampled_from(
    [200, 201, 202, 204, 301, 400, 401, 402, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504, 599]
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            [
                "application/json",
                "text/html",
                "application/problem+json",
                "text/plain; charset=latin-1",
                "image/png",
            ]
        ),
        "retry-after": st.sampled_from(
            ["1", "0", "-5", "abc", "1e400", "99999999999", "Wed, 21 Oct 2015 07:28:00 GMT", ""]
        ),
        "x-fal-retryable": st.sampled_from(["true", "false", "maybe"]),
        "x-fal-error-type": st.sampled_from(
            ["runner_disconnected", "client_cancelled", "request_timeout", "??"]
        ),
    },
)


def replies(good: dict[str, Any], ok: int, body: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    """The canonical reply, or a fuzzed status, headers and body."""
    fuzzed_body = st.one_of(body.map(_encode), RAW_BODIES, huge_bodies(good), st.binary(max_size=64))
    return st.just((ok, {"content-type": "application/json"}, _encode(good))) | st.tuples(
        st.just(ok) | STATUS_CODES, HEADERS, fuzzed_body
    )


def response(reply: Reply) -> httpx.Response:
    status, headers, content = reply
    return httpx.Response(status, headers=headers, content=content)


async def bounded(run: Callable[[], Any], limit_s: float = 5.0) -> None:
    """Run the scenario: a typed error or a valid result is fine, anything else fails."""
    try:
        result = await asyncio.wait_for(run(), timeout=limit_s)
    except GenRouterError as exc:
        event(type(exc).__name__)
        return
    except TimeoutError as exc:
        pytest.fail(f"hung past {limit_s} s: {exc!r}")
    event("result")
    if result is not None:
        assert isinstance(result, GenerationResult)
        assert result.outputs


# -- fal --------------------------------------------------------------------------------------------

fal_status = replies(FAL_STATUS, 200, mutated(FAL_STATUS))
fal_result = replies(
    FAL_RESULT,
    200,
    mutated(FAL_RESULT, {"images": st.lists(mutated(FAL_IMAGE), max_size=2)}),
)


def fal_api(submit: Reply, status: Reply, result: Reply) -> respx.MockRouter:
    api = respx.MockRouter(base_url=FAL, assert_all_called=False, assert_all_mocked=False)

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if (request.method == "POST" and path.endswith("/cancel")) or request.method == "PUT":
            return httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
        if request.method == "POST":
            return response(submit)
        if path.endswith("/status"):
            return response(status)
        return response(result)

    api.route().mock(side_effect=answer)
    return api


@FUZZ
@given(replies(FAL_SUBMIT, 200, mutated(FAL_SUBMIT)), fal_status, fal_result)
def test_fal_backend_survives_any_queue_reply(submit: Reply, status: Reply, result: Reply) -> None:
    api = fal_api(submit, status, result)

    async def scenario() -> GenerationResult | None:
        backend = FalBackend(
            name="fal", settings={"api_key": "fal-key"}, transport=httpx.MockTransport(api.async_handler)
        )
        try:
            job = await backend.submit(_deployment("fal"), REQUEST)
            await backend.poll(job)
            outcome = await backend.fetch_result(job)
            await backend.cancel(job)
            return outcome
        finally:
            await backend.aclose()

    asyncio.run(bounded(scenario))


# -- Replicate --------------------------------------------------------------------------------------

replicate_get = replies(
    REPLICATE_DONE, 200, mutated(REPLICATE_DONE, {"urls": mutated(REPLICATE_PREDICTION["urls"])})
)


def replicate_api(submit: Reply, poll: Reply, result: Reply) -> respx.MockRouter:
    api = respx.MockRouter(base_url=REPLICATE, assert_all_called=False, assert_all_mocked=False)
    gets = iter([poll])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={**REPLICATE_PREDICTION, "status": "canceled"})
        if request.method == "POST":
            return response(submit)
        return response(next(gets, result))

    api.route().mock(side_effect=answer)
    return api


@FUZZ
@given(replies(REPLICATE_PREDICTION, 201, mutated(REPLICATE_PREDICTION)), replicate_get, replicate_get)
def test_replicate_backend_survives_any_api_reply(submit: Reply, poll: Reply, result: Reply) -> None:
    api = replicate_api(submit, poll, result)

    async def scenario() -> GenerationResult | None:
        backend = ReplicateBackend(
            name="replicate",
            settings={"api_token": "r8_token"},
            transport=httpx.MockTransport(api.async_handler),
        )
        try:
            job = await backend.submit(_deployment("replicate"), REQUEST)
            await backend.poll(job)
            outcome = await backend.fetch_result(job)
            await backend.cancel(job)
            return outcome
        finally:
            await backend.aclose()

    asyncio.run(bounded(scenario))


# -- through the router, under a short deadline -----------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(replies(FAL_SUBMIT, 200, mutated(FAL_SUBMIT)), fal_status, fal_result)
def test_router_ends_typed_within_the_deadline_on_any_fal_reply(
    submit: Reply, status: Reply, result: Reply
) -> None:
    api = fal_api(submit, status, result)

    async def scenario() -> GenerationResult:
        set_testing()
        router = AsyncRouter.from_config(
            {
                "version": 1,
                "providers": {"fal": {"api_key": "fal-key"}},
                "routing": {"default": {"timeouts": {"deadline_s": 1.5, "attempt_s": 1.0}}},
            },
            backends={
                "fal": FalBackend(
                    name="fal",
                    settings={"api_key": "fal-key"},
                    transport=httpx.MockTransport(api.async_handler),
                )
            },
        )
        try:
            return await router.generate(model="flux-dev", prompt="a red fox")
        finally:
            await router.aclose()

    asyncio.run(bounded(scenario, limit_s=5.0))


@pytest.mark.parametrize("value", ["abc", "", "1e400", "inf", "nan", "Mon, 99 Foo 2015 07:28:00 GMT"])
def test_an_unparseable_retry_after_is_ignored(value: str) -> None:
    """Found by the fuzzer: ``Retry-After: abc`` raised a bare ValueError out of the backend."""
    from genrouter.backends._http import parse_retry_after

    assert parse_retry_after({"retry-after": value}) is None


def test_a_numeric_retry_after_is_read() -> None:
    from genrouter.backends._http import parse_retry_after

    assert parse_retry_after({"retry-after": " 2.5 "}) == 2.5
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
