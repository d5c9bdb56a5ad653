"""provider_headers: a provider section's headers on every call, a request's merged over them on
its submit (the request wins), credential-looking values never shown. Through AsyncRouter
against the loopback fakes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from fakes.fal import Behaviour, FakeFal
from fakes.replicate import FakeReplicate
from fakes.server import LoopbackServer, Request, Response
from genrouter import AllProvidersFailedError, AsyncRouter, ConfigError, InvalidRequestError, JobHandle
from genrouter.testing import FakeClock, set_testing
from loopback import Routers, fal_section, install_fal, replicate_section

SECRET = "proxy-secret-value-8472"
Build = Callable[..., AsyncRouter]


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = install_fal(fal_server, behaviour=Behaviour(queue_polls=1, progress_polls=0))
    fal_server.requests.clear()
    return fake


@pytest.fixture
def make(fal_server: LoopbackServer, replicate_server: LoopbackServer, routers: Routers) -> Build:
    set_testing()

    def build(
        fal_headers: dict[str, str] | None = None, replicate_headers: dict[str, str] | None = None
    ) -> AsyncRouter:
        source = {
            "version": 1,
            "providers": {
                "fal": fal_section(fal_server, provider_headers=fal_headers or {}),
                "replicate": replicate_section(replicate_server, provider_headers=replicate_headers or {}),
            },
            "routing": {"default": {"strategy": "priority", "order": ["fal", "replicate"]}},
        }
        return routers(source, clock=FakeClock())

    return build


async def test_section_headers_go_with_every_call_to_the_provider(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """providers.fal.provider_headers reach the submit, the status polls and the result."""
    await make({"X-Fal-Store-IO": "0"}).generate("a fox", model="flux-dev")
    assert len(fal_server.requests) >= 3
    assert {r.header("x-fal-store-io") for r in fal_server.requests} == {"0"}


async def test_request_headers_merge_over_the_section_and_win(
    fal: FakeFal, fal_server: LoopbackServer, make: Build
) -> None:
    """A request's provider_headers["fal"] is merged over the section's: the request wins."""
    router = make({"X-Fal-Queue-Priority": "normal", "X-Fal-Store-IO": "0"})
    await router.generate(
        "a fox", model="flux-dev", provider_headers={"fal": {"x-fal-queue-priority": "low"}}
    )
    (submit,) = [r for r in fal_server.requests if r.method == "POST"]
    assert (submit.header("x-fal-queue-priority"), submit.header("x-fal-store-io")) == ("low", "0")


async def test_request_headers_are_keyed_by_provider(
    fal: FakeFal, fal_server: LoopbackServer, replicate: FakeReplicate, make: Build
) -> None:
    """Headers for another provider key are not sent to this one."""
    await make().generate("a fox", model="flux-dev", provider_headers={"replicate": {"Prefer": "wait=5"}})
    assert all(r.header("prefer") is None for r in fal_server.requests)


async def test_replicate_creates_take_request_headers(replicate: FakeReplicate, make: Build) -> None:
    """Replicate's create gets the request's headers (here Prefer), over the section's."""
    router = make(replicate_headers={"X-Team": "vision"})
    await router.generate(
        "a fox",
        model="flux-dev",
        providers=["replicate"],
        provider_headers={"replicate": {"Prefer": "wait=5"}},
    )
    (create,) = replicate.creates
    assert (create.header("prefer"), create.header("x-team")) == ("wait=5", "vision")


async def test_a_credential_header_is_never_shown(
    fal_server: LoopbackServer, make: Build, caplog: pytest.LogCaptureFixture
) -> None:
    """A header named like a credential: its value is in no log line, repr, error or stored handle."""
    inner = FakeFal()

    def echoing(request: Request) -> Response:
        if request.method == "POST" and request.path.startswith("/fal-ai/"):
            return Response.json({"detail": f"bad proxy token {request.header('x-proxy-token')}"}, 500)
        return inner(request)

    fal_server.handler = echoing
    caplog.set_level(logging.DEBUG, logger="genrouter")
    router = make({"X-Proxy-Token": SECRET})
    with pytest.raises(AllProvidersFailedError) as caught:
        await router.generate("a fox", model="flux-dev", providers=["fal"])
    handle = await make().submit(
        "a fox",
        model="flux-dev",
        providers=["replicate"],
        provider_headers={"replicate": {"X-Api-Key": SECRET}},
    )
    shown = [
        str(caught.value),
        repr(caught.value.errors),
        repr(router),
        caplog.text,
        handle.model_dump_json(),
    ]
    shown.append(repr(JobHandle.model_validate_json(handle.model_dump_json()).request))
    assert all(SECRET not in text for text in shown)
    assert "x-proxy-token" in str(fal_server.requests[-1].headers)


async def test_a_bad_section_header_is_a_config_error_naming_it(make: Build) -> None:
    """A header genrouter sets itself (Authorization) cannot be set in provider_headers."""
    with pytest.raises(ConfigError, match="Authorization"):
        make({"Authorization": "Bearer x"})


async def test_a_bad_request_header_is_an_invalid_request(fal: FakeFal, make: Build) -> None:
    """A request header with a line break: InvalidRequestError naming provider_headers.<key>, nothing sent."""
    with pytest.raises(InvalidRequestError) as caught:
        await make().generate(
            "a fox", model="flux-dev", providers=["fal"], provider_headers={"fal": {"X-Note": "a\r\nb"}}
        )
    assert caught.value.field == "provider_headers.fal"
    assert fal.submit_count() == 0
