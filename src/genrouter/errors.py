"""The exception tree. Every error genrouter raises is a :class:`GenRouterError`.

::

    GenRouterError
    ├── ConfigError                   bad YAML or values, unknown provider/model,
    │                                 missing credential or extra
    ├── InvalidRequestError           rejected before or by a provider (422);
    │                                 never retried on that provider
    ├── NoRouteError                  no deployment can serve the request; .plan says why for each
    ├── ProviderError                 .status_code, plus the facts every error has
    │   ├── RateLimitedError          429 or quota; retryable, honours .retry_after
    │   ├── ProviderUnavailableError  5xx, connection failures, circuit open; retryable
    │   │   ├── SubmitOutcomeUnknownError  a submit may have been accepted; never resent there
    │   │   └── AttemptTimedOutError  an accepted job outlived timeouts.attempt_s; cancelled,
    │   │                             the plan moves on (not retried on that deployment)
    │   ├── AuthenticationError       401/402/403; provider disabled, never retried
    │   └── JobFailedError            the job ran and failed; .retryable says if worth retrying
    ├── DeadlineExceededError         the one request deadline passed (also a builtin TimeoutError)
    ├── BudgetExceededError           a spend cap leaves nothing to route to
    ├── MediaError                    an artifact or media input could not be read: bad URL
    │                                 scheme, too large, wrong content type, download failed
    ├── WebhookVerificationError      a webhook's signature, timestamp or headers are wrong
    │                                 (also importable from genrouter.webhooks; never touches job state)
    └── AllProvidersFailedError       every route failed; .errors and .attempts hold each, in order

Every error carries the same facts: ``retryable``, ``retry_after`` (float seconds or
None), ``provider`` and ``provider_request_id`` (None when not applicable). Messages
pass through secret redaction, so a provider echoing a key never leaks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from genrouter.util._secrets import scrub

if TYPE_CHECKING:
    from genrouter.types import Attempt, RoutePlan

__all__ = [
    "AllProvidersFailedError",
    "AttemptTimedOutError",
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "DeadlineExceededError",
    "GenRouterError",
    "InvalidRequestError",
    "JobFailedError",
    "MediaError",
    "NoRouteError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "SubmitOutcomeUnknownError",
    "WebhookVerificationError",
]


class GenRouterError(Exception):
    """Root of every genrouter error.

    Attributes:
        message: the human-readable explanation, secrets redacted.
        retryable: whether trying the same thing again may succeed.
        retry_after: seconds to wait before retrying, when the provider said so.
        provider: the provider's config key, when one is involved.
        provider_request_id: the provider's id for the job, when one exists.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        provider_request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = scrub(str(message))
        self.provider = provider
        self.provider_request_id = provider_request_id
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = float(retry_after) if retry_after is not None else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only facts survive pickling (multiprocessing, job queues).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[GenRouterError], message: str, state: dict[str, Any]) -> GenRouterError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ConfigError(GenRouterError):
    """The configuration is wrong or incomplete.

    ``key_path`` names the offending key (``routing.default.retry.max_attempts``) when
    there is one; ``problems`` lists every problem found, one line each, when several
    were collected (``str()`` joins them with ``"; "``).
    """

    def __init__(self, message: str, *, key_path: str | None = None, problems: Sequence[str] = ()) -> None:
        self.key_path = key_path
        self.problems = [scrub(p) for p in problems] or [scrub(message)]
        super().__init__(message)


class InvalidRequestError(GenRouterError):
    """The request is invalid: rejected by genrouter's validation or by a provider (422).

    ``field`` names the first offending request field when known; ``fields`` lists
    every ``(field, problem)`` pair the validator or provider reported.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        fields: Sequence[tuple[str, str]] = (),
        provider: str | None = None,
        provider_request_id: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.field = field
        self.fields = list(fields)
        self.status_code = status_code
        super().__init__(
            message,
            provider=provider,
            provider_request_id=provider_request_id,
            retryable=False,
        )


class NoRouteError(GenRouterError):
    """No configured deployment can serve the request; ``plan`` says why for each candidate."""

    def __init__(self, message: str, *, plan: RoutePlan | None = None) -> None:
        self.plan = plan
        super().__init__(message)


class ProviderError(GenRouterError):
    """A provider refused or failed a call. ``status_code`` is the HTTP status when one applies."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        provider_request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        super().__init__(
            message,
            provider=provider,
            provider_request_id=provider_request_id,
            retryable=retryable,
            retry_after=retry_after,
        )


class RateLimitedError(ProviderError):
    """The provider throttled us (HTTP 429 or a quota). Retryable after ``retry_after``."""

    retryable = True


class ProviderUnavailableError(ProviderError):
    """The provider is down or unreachable (5xx, connection failure, open circuit). Retryable."""

    retryable = True


class SubmitOutcomeUnknownError(ProviderUnavailableError):
    """A submit failed after it may have reached the provider (read timeout, dropped connection).

    The job may exist and run. genrouter never re-sends it to that provider (that could
    create and bill a second job); the router fails over to the next provider knowingly
    and records this error on the attempt.
    """

    retryable = False


class AttemptTimedOutError(ProviderUnavailableError):
    """An accepted job outlived ``timeouts.attempt_s``; it was cancelled and the plan moved on."""

    retryable = False


class AuthenticationError(ProviderError):
    """Credentials were refused or payment is required (401/402/403).

    The provider is disabled until the configuration is reloaded; never retried.
    """

    retryable = False


class JobFailedError(ProviderError):
    """The provider accepted and ran the job, and the job failed or was cancelled.

    ``state`` is ``"failed"`` or ``"cancelled"``. ``retryable`` says whether running it
    again may help (a disconnected runner: yes; a safety filter: no).
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        provider_request_id: str | None = None,
        state: str = "failed",
        retryable: bool | None = None,
        status_code: int | None = None,
    ) -> None:
        self.state = state
        super().__init__(
            message,
            provider=provider,
            status_code=status_code,
            provider_request_id=provider_request_id,
            retryable=retryable,
        )

    @classmethod
    def cancelled(cls, provider: str, provider_request_id: str) -> JobFailedError:
        """The error for fetching the result of a job that was cancelled."""
        return cls(
            f"{provider}: job {provider_request_id} was cancelled",
            provider=provider,
            provider_request_id=provider_request_id,
            state="cancelled",
        )


class DeadlineExceededError(GenRouterError, TimeoutError):
    """The request's one deadline passed. Outstanding provider jobs were cancelled first."""

    def __init__(
        self,
        message: str,
        *,
        deadline_s: float | None = None,
        attempts: Sequence[Attempt] = (),
        provider: str | None = None,
        provider_request_id: str | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.attempts = list(attempts)
        super().__init__(message, provider=provider, provider_request_id=provider_request_id)


class BudgetExceededError(GenRouterError):
    """A spend cap leaves no deployment to route to."""


class MediaError(GenRouterError):
    """An artifact could not be read: bad URL scheme, too large, wrong content type."""


class WebhookVerificationError(GenRouterError):
    """A webhook delivery failed verification: missing or malformed headers, a stale or
    future timestamp, no matching signature, or a body that is not the provider's event.

    Nothing about any job changes. ``retryable`` is True only when the keys to check
    with could not be fetched (answer 5xx, so the provider delivers again later).
    """


class AllProvidersFailedError(GenRouterError):
    """Every route tried failed. ``errors`` and ``attempts`` are in attempt order."""

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[BaseException],
        attempts: Sequence[Attempt] = (),
    ) -> None:
        self.errors = list(errors)
        self.attempts = list(attempts)
        last = self.errors[-1] if self.errors else None
        super().__init__(
            message,
            provider=getattr(last, "provider", None),
            provider_request_id=getattr(last, "provider_request_id", None),
            retryable=any(getattr(e, "retryable", False) for e in self.errors),
        )


def describe_error(error: BaseException) -> str:
    """``"ErrorType: message"`` with secrets redacted, as recorded on an :class:`Attempt`."""
    return scrub(f"{type(error).__name__}: {error}")
