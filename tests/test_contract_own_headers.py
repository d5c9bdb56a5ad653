"""README "Provider headers": headers genrouter sets itself (``Authorization``, ``Host``,
``Content-Type``, ``Content-Length``) cannot be replaced, in a section or in a request."""

from __future__ import annotations

import pytest

from fakes.fal import FakeFal
from fakes.server import LoopbackServer
from genrouter import AsyncRouter, ConfigError, InvalidRequestError
from genrouter.testing import set_testing

FAL_KEY = "fal-key-own-headers-0001"
OWN = ["Authorization", "host", "Content-Type", "content-length"]


@pytest.fixture
def fal(fal_server: LoopbackServer) -> FakeFal:
    fake = FakeFal(api_key=FAL_KEY)
    fal_server.handler = fake
    set_testing()
    return fake


@pytest.mark.parametrize("name", OWN)
def test_a_section_cannot_set_a_header_genrouter_sets(name: str, fal_server: LoopbackServer) -> None:
    """``providers.fal.provider_headers`` naming one of genrouter's own headers is a ConfigError naming it."""
    section = {"api_key": FAL_KEY, "base_url": fal_server.url, "provider_headers": {name: "x"}}
    with pytest.raises(ConfigError, match=name):
        AsyncRouter.from_config({"version": 1, "providers": {"fal": section}})


@pytest.mark.parametrize("name", OWN)
async def test_a_request_cannot_set_a_header_genrouter_sets(
    name: str, fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """A request naming one of them is an InvalidRequestError naming provider_headers.fal; nothing is sent."""
    config = {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url}}}
    async with AsyncRouter.from_config(config) as router:
        with pytest.raises(InvalidRequestError) as refused:
            await router.generate("a fox", model="flux-dev", provider_headers={"fal": {name: "x"}})
    assert refused.value.field == "provider_headers.fal"
    assert name in str(refused.value)
    assert fal.jobs == {}


async def test_a_refused_authorization_header_keeps_its_value_secret(
    fal_server: LoopbackServer, fal: FakeFal
) -> None:
    """The value of a refused ``Authorization`` request header is in neither the error text nor its repr."""
    secret = "Bearer own-headers-secret-0042"
    config = {"version": 1, "providers": {"fal": {"api_key": FAL_KEY, "base_url": fal_server.url}}}
    async with AsyncRouter.from_config(config) as router:
        with pytest.raises(InvalidRequestError) as refused:
            await router.generate(
                "a fox", model="flux-dev", provider_headers={"fal": {"Authorization": secret}}
            )
    assert "own-headers-secret" not in f"{refused.value} {refused.value!r}"
