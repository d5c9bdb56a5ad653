"""The exception tree: hierarchy, retryable defaults, facts, pickling, secret redaction."""

from __future__ import annotations

import pickle
import secrets
from typing import Any

import pytest

from genrouter import (
    AllProvidersFailedError,
    AsyncRouter,
    Attempt,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    GenRouterError,
    InvalidRequestError,
    JobFailedError,
    NoRouteError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RoutePlan,
)
from genrouter.errors import describe_error
from genrouter.testing import FailJob, FakeBackend, set_testing
from genrouter.util._secrets import REDACTED, register_secret, scrub

# -- hierarchy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (ConfigError, GenRouterError),
        (InvalidRequestError, GenRouterError),
        (NoRouteError, GenRouterError),
        (ProviderError, GenRouterError),
        (RateLimitedError, ProviderError),
        (ProviderUnavailableError, ProviderError),
        (AuthenticationError, ProviderError),
        (JobFailedError, ProviderError),
        (DeadlineExceededError, GenRouterError),
        (BudgetExceededError, GenRouterError),
        (AllProvidersFailedError, GenRouterError),
    ],
)
def test_error_hierarchy(error: type[Exception], parent: type[Exception]) -> None:
    """Each error sits under its documented parent in the tree."""
    assert issubclass(error, parent)
    assert issubclass(error, Exception)


def test_deadline_exceeded_is_also_a_builtin_timeout_error() -> None:
    """DeadlineExceededError can be caught as the builtin TimeoutError."""
    with pytest.raises(TimeoutError):
        raise DeadlineExceededError("too slow", deadline_s=1.0)


def test_invalid_request_is_not_a_provider_error() -> None:
    """InvalidRequestError sits directly under GenRouterError, not ProviderError."""
    assert not issubclass(InvalidRequestError, ProviderError)


# -- retryable defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (RateLimitedError("429"), True),
        (ProviderUnavailableError("503"), True),
        (AuthenticationError("401"), False),
        (JobFailedError("nsfw"), False),
        (InvalidRequestError("422"), False),
        (ProviderError("odd"), False),
        (ConfigError("bad"), False),
        (NoRouteError("none"), False),
        (DeadlineExceededError("late"), False),
    ],
)
def test_retryable_defaults(error: GenRouterError, retryable: bool) -> None:
    """Rate limits and unavailability are retryable by default; the rest are not."""
    assert error.retryable is retryable


def test_retryable_can_be_overridden_per_error() -> None:
    """A job failure can be marked retryable (runner disconnected) and a 503 not."""
    assert JobFailedError("runner_disconnected", retryable=True).retryable is True
    assert ProviderUnavailableError("503", retryable=False).retryable is False
    assert JobFailedError("nsfw").retryable is False


def test_invalid_request_is_never_retryable() -> None:
    """InvalidRequestError always has retryable False."""
    assert InvalidRequestError("422", status_code=422).retryable is False


def test_every_error_carries_the_common_facts() -> None:
    """Every error has retryable, retry_after, provider and provider_request_id."""
    for error in (ConfigError("x"), NoRouteError("x"), BudgetExceededError("x"), ProviderError("x")):
        assert error.retry_after is None
        assert error.provider is None
        assert error.provider_request_id is None
        assert isinstance(error.retryable, bool)


def test_retry_after_is_float_seconds() -> None:
    """retry_after is stored as float seconds."""
    error = RateLimitedError("429", retry_after=2)
    assert error.retry_after == 2.0
    assert isinstance(error.retry_after, float)


def test_provider_error_facts() -> None:
    """ProviderError keeps provider, status_code and provider_request_id."""
    error = ProviderUnavailableError("502", provider="fal", status_code=502, provider_request_id="r1")
    assert (error.provider, error.status_code, error.provider_request_id) == ("fal", 502, "r1")


def test_job_failed_error_has_a_state() -> None:
    """JobFailedError.state is 'failed' by default, or 'cancelled'."""
    assert JobFailedError("x").state == "failed"
    assert JobFailedError("x", state="cancelled").state == "cancelled"


def test_all_providers_failed_takes_its_facts_from_the_errors() -> None:
    """AllProvidersFailedError names the last provider and is retryable if any error was."""
    errors = [
        AuthenticationError("401", provider="a"),
        ProviderUnavailableError("503", provider="b", provider_request_id="b-1"),
    ]
    error = AllProvidersFailedError("all failed", errors=errors)
    assert error.errors == errors
    assert (error.provider, error.provider_request_id) == ("b", "b-1")
    assert error.retryable is True
    assert AllProvidersFailedError("x", errors=[AuthenticationError("401")]).retryable is False


def test_str_and_repr_show_the_message() -> None:
    """str() is the message; repr() names the type."""
    error = ProviderUnavailableError("gateway timeout")
    assert str(error) == "gateway timeout"
    assert repr(error) == "ProviderUnavailableError('gateway timeout')"


def test_config_error_keeps_key_path_and_problems() -> None:
    """ConfigError has key_path and one line per problem."""
    error = ConfigError("a; b", key_path="routing.default", problems=["a", "b"])
    assert error.key_path == "routing.default"
    assert error.problems == ["a", "b"]
    assert ConfigError("only").problems == ["only"]


def test_describe_error_is_type_colon_message() -> None:
    """describe_error gives 'ErrorType: message' as recorded on attempts."""
    assert describe_error(JobFailedError("nsfw")) == "JobFailedError: nsfw"
    assert describe_error(ValueError("bad")) == "ValueError: bad"


# -- pickling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RateLimitedError("429", provider="fal", status_code=429, retry_after=3.5, provider_request_id="r"),
        JobFailedError("cancelled", provider="m", state="cancelled", retryable=True),
        InvalidRequestError("bad", field="width", fields=[("width", "too big")], status_code=422),
        ConfigError("bad", key_path="providers.fal", problems=["p1", "p2"]),
        DeadlineExceededError(
            "late",
            deadline_s=5.0,
            attempts=[Attempt(provider="a", endpoint="e", outcome="cancelled")],
            provider="a",
        ),
        NoRouteError(
            "none",
            plan=RoutePlan(model="flux-dev", strategy="cost", candidates=[]),
        ),
    ],
    ids=lambda e: type(e).__name__,
)
def test_pickling_keeps_every_fact(error: GenRouterError) -> None:
    """An error survives pickling with its type, message and every attribute."""
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    assert restored.__dict__ == error.__dict__


def test_pickling_all_providers_failed_keeps_the_nested_errors() -> None:
    """AllProvidersFailedError pickles with its errors and attempts."""
    error = AllProvidersFailedError(
        "all failed",
        errors=[ProviderUnavailableError("503", provider="a", retry_after=1.0)],
        attempts=[Attempt(provider="a", endpoint="e", outcome="failed", error="x")],
    )
    restored = pickle.loads(pickle.dumps(error))
    assert isinstance(restored.errors[0], ProviderUnavailableError)
    assert restored.errors[0].retry_after == 1.0
    assert restored.attempts == error.attempts


# -- secret redaction ------------------------------------------------------------------------------------


@pytest.fixture
def secret() -> str:
    """A fresh secret value registered for redaction."""
    value = "sk-test-" + secrets.token_hex(12)
    register_secret(value)
    return value


def test_registered_secrets_are_scrubbed_from_messages(secret: str) -> None:
    """A registered secret echoed in an error message is replaced by ***."""
    error = AuthenticationError(f"invalid key {secret} for this account")
    assert secret not in str(error)
    assert f"invalid key {REDACTED} for this account" == str(error)


def test_secrets_are_scrubbed_from_every_error_type(secret: str) -> None:
    """Redaction applies to every error, including problems lists."""
    for error in (ConfigError(f"bad {secret}", problems=[f"p {secret}"]), NoRouteError(secret)):
        assert secret not in str(error)
        assert secret not in " ".join(getattr(error, "problems", []))


def test_secrets_stay_scrubbed_after_pickling(secret: str) -> None:
    """A pickled and restored error still has no secret in it."""
    restored = pickle.loads(pickle.dumps(ProviderError(f"echo {secret}")))
    assert secret not in str(restored)


def test_credential_shaped_tokens_are_scrubbed_without_registration() -> None:
    """Bearer/Key headers, r8_ tokens, whsec_ secrets and ?key= query values are redacted."""
    text = (
        "Authorization: Bearer abcdefghijklmnop r8_ABCDEFGHIJKLMNOPQRST whsec_c2VjcmV0 "
        "https://x/y?key=hunter22&z=1"
    )
    scrubbed = scrub(text)
    for leaked in ("abcdefghijklmnop", "r8_ABCDEFGHIJKLMNOPQRST", "whsec_c2VjcmV0", "hunter22"):
        assert leaked not in scrubbed
    assert "?key=***&z=1" in scrubbed


def test_short_values_are_not_registered_as_secrets() -> None:
    """Values shorter than six characters are never redacted (they would hit ordinary words)."""
    register_secret("on")
    assert scrub("turned on") == "turned on"


async def test_secrets_are_scrubbed_from_recorded_attempts(secret: str) -> None:
    """A provider error echoing a secret is recorded on the attempt with the secret redacted."""
    set_testing()

    class Echo(Exception):
        pass

    a = FakeBackend(name="a", script=[FailJob(Echo(f"bad key {secret}"))])
    b = FakeBackend(name="b")
    cfg: dict[str, Any] = {
        "version": 1,
        "providers": {n: {"type": "custom", "models": {"flux-dev": {"endpoint": n}}} for n in "ab"},
        "routing": {"default": {"strategy": "priority"}},
    }
    result = await AsyncRouter.from_config(cfg, backends={"a": a, "b": b}).generate("a fox", model="flux-dev")
    recorded = result.attempts[0].error or ""
    assert secret not in recorded
    assert REDACTED in recorded
