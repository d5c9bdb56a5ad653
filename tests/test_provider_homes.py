"""One home per provider: the registry is the only list of types, verifiers and hooks are the backends'."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

import genrouter
from genrouter import AsyncRouter, ConfigError, JobState, WebhookEvent, WebhookVerificationError
from genrouter.backends.base import builtin_types
from genrouter.config import config_json_schema, parse_config
from genrouter.testing import FakeBackend
from genrouter.webhooks import providers_for, respond_to_webhook


def custom(**extra: Any) -> dict[str, Any]:
    """A custom provider serving flux-dev inline."""
    return {"type": "custom", "models": {"flux-dev": {"endpoint": "x/flux-dev", **extra}}}


class SelfVerifying(FakeBackend):
    """A backend that verifies its own provider's webhooks: a header carries the job id."""

    def signs_webhook(self, headers: Mapping[str, str]) -> bool:
        return "x-mine-job" in {k.lower() for k in headers}

    async def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, tolerance_s: float
    ) -> WebhookEvent:
        if body != b"signed":
            raise WebhookVerificationError("not signed")
        job = {k.lower(): v for k, v in headers.items()}["x-mine-job"]
        return WebhookEvent(provider=self.name, provider_request_id=job, state=JobState.SUCCEEDED)


# -- the registry is the only list -----------------------------------------------------------------


@pytest.mark.parametrize("provider_type", sorted(builtin_types()))
def test_each_registered_type_is_validated_by_the_settings_model_the_registry_names(
    provider_type: str,
) -> None:
    """A section's ``type`` selects the settings class its registry entry names."""
    config = parse_config({"version": 1, "providers": {"p": {"type": provider_type}}}, env={})
    assert type(config.providers["p"]) is builtin_types()[provider_type].settings


def test_the_config_schema_lists_exactly_the_registered_types() -> None:
    """``genrouter config schema`` offers a section per registered type, no more, no less."""
    providers = config_json_schema()["properties"]["providers"]
    assert set(providers["properties"]) == set(builtin_types())


def test_an_unknown_type_lists_the_registered_types_in_its_error() -> None:
    """A misspelt type is a ConfigError naming every registered type."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"version": 1, "providers": {"p": {"type": "fall"}}}, env={})
    assert all(name in str(caught.value) for name in builtin_types())


# -- capabilities, checked once -------------------------------------------------------------------


def test_a_hook_of_the_wrong_shape_is_a_config_error_when_the_router_is_built() -> None:
    """``eager_start_safe = "yes"`` fails building the router, naming the provider."""
    backend = FakeBackend(name="mine")
    backend.eager_start_safe = "yes"  # type: ignore[misc]
    with pytest.raises(
        ConfigError, match=r"providers\.mine: FakeBackend\.eager_start_safe must be True or False"
    ):
        AsyncRouter.from_config({"version": 1, "providers": {"mine": custom()}}, backends={"mine": backend})


def test_a_latency_hint_that_is_not_callable_is_a_config_error() -> None:
    """A backend whose ``latency_hint`` is a number is refused at build, not on a request."""
    backend = FakeBackend(name="mine")
    backend.latency_hint = 2.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"latency_hint must be a method"):
        AsyncRouter.from_config({"version": 1, "providers": {"mine": custom()}}, backends={"mine": backend})


# -- webhooks are verified by the provider's own verifier ------------------------------------------


async def test_handle_webhook_asks_a_backend_that_verifies_its_own_webhooks() -> None:
    """A custom backend with ``verify_webhook`` verifies its deliveries; the event is recorded."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"mine": custom()}}, backends={"mine": SelfVerifying(name="mine")}
    )
    event = await router.handle_webhook("mine", {"X-Mine-Job": "job-1"}, b"signed")
    assert (event.provider_request_id, event.state, event.duplicate) == ("job-1", JobState.SUCCEEDED, False)
    again = await router.handle_webhook("mine", {"X-Mine-Job": "job-1"}, b"signed")
    assert again.duplicate


async def test_a_bad_delivery_to_a_self_verifying_backend_is_refused() -> None:
    """The backend's WebhookVerificationError reaches the caller; nothing is recorded."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"mine": custom()}}, backends={"mine": SelfVerifying(name="mine")}
    )
    with pytest.raises(WebhookVerificationError, match="not signed"):
        await router.handle_webhook("mine", {"X-Mine-Job": "job-1"}, b"forged")
    status, _ = await respond_to_webhook(router, "mine", {"X-Mine-Job": "job-1"}, b"forged")
    assert status == 401


def test_the_receiver_finds_a_self_verifying_provider_by_its_headers() -> None:
    """``POST /webhooks`` without a provider tries the providers whose scheme the headers carry."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"plain": custom(), "mine": custom()}},
        backends={"plain": FakeBackend(name="plain"), "mine": SelfVerifying(name="mine")},
    )
    assert providers_for(router, {"X-Mine-Job": "job-1"}) == ["mine"]
    assert providers_for(router, {"webhook-signature": "v1,x"}) == []


async def test_a_provider_whose_backend_verifies_nothing_says_so() -> None:
    """A custom provider without ``verify_webhook`` gets a ConfigError at its ``type``."""
    router = AsyncRouter.from_config(
        {"version": 1, "providers": {"plain": custom()}}, backends={"plain": FakeBackend(name="plain")}
    )
    with pytest.raises(ConfigError, match="sends no signed webhooks") as caught:
        await router.handle_webhook("plain", {}, b"{}")
    assert caught.value.key_path == "providers.plain.type"


def test_handling_a_webhook_does_not_import_the_webhooks_module() -> None:
    """The router verifies through the provider's verifier: ``genrouter.webhooks`` stays unloaded."""
    code = (
        "import asyncio, sys, genrouter\n"
        "router = genrouter.AsyncRouter.from_config({'version': 1, 'providers': {'rep': "
        "{'type': 'replicate', 'api_token': 'r8_x', 'webhook_secret': 'whsec_' + 'A' * 32}}})\n"
        "try:\n"
        "    asyncio.run(router.handle_webhook('rep', {}, b'{}'))\n"
        "except genrouter.WebhookVerificationError:\n"
        "    pass\n"
        "print('genrouter.webhooks' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().lower()) is False


def test_the_provider_packages_keep_their_public_import_paths() -> None:
    """``genrouter.backends.modal.ModalBackend`` and the registry's targets still resolve."""
    from genrouter.backends.base import load_backend_class
    from genrouter.backends.modal import ModalBackend

    assert load_backend_class("modal") is ModalBackend
    for name, spec in builtin_types().items():
        if spec.target:
            assert load_backend_class(name).__name__ == spec.target.rpartition(":")[2]
    assert genrouter.__name__ == "genrouter"
