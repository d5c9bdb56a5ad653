"""Process-wide redaction of secret values.

Every secret genrouter reads (API keys, tokens, webhook secrets) is registered
here when its config is loaded. :func:`scrub` replaces any registered value in a
piece of text, so error messages, attempt records and log lines can pass
provider text through it without knowing which secrets exist.
"""

from __future__ import annotations

import re
import threading

__all__ = ["REDACTED", "SECRET_KEY_PATTERN", "is_credential_header", "register_secret", "scrub"]

SECRET_KEY_PATTERN = re.compile(r"(key|token|secret|password)", re.IGNORECASE)
"""Setting names whose values are credentials: never shown, always redacted."""

REDACTED = "***"

# Short values would redact ordinary words ("1", "on"); real credentials are long.
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# Credential-shaped strings redacted even when they were never registered:
# "Key abc…"/"Bearer abc…" header values, Replicate "r8_" tokens, Standard Webhooks
# "whsec_" secrets, and credentials in URL query strings.
_SHAPES = re.compile(
    r"(?P<prefix>[?&](?:key|token|api_key|api_token|secret)=)(?P<value>[^&\s#]+)"
    r"|\bwhsec_[A-Za-z0-9+/=_-]+"
    r"|\br8_[A-Za-z0-9]{16,}"
    r"|\b(?:Bearer|Key)\s+[A-Za-z0-9._:+/=-]{12,}"
)


_CREDENTIAL_HEADER = re.compile(r"auth|cookie|key|token|secret|passw|signature|credential|session", re.I)


def is_credential_header(name: str) -> bool:
    """Whether a header's name looks like it carries a credential (``Authorization``,
    ``X-Api-Key``, ``Cookie``, ``X-Session-Token``...): its value is never shown."""
    return bool(_CREDENTIAL_HEADER.search(name))


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`scrub` redacts it from now on."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def scrub(text: str) -> str:
    """Return ``text`` with every registered secret and credential-shaped token redacted."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return _SHAPES.sub(_redact_shape, text)


def _redact_shape(match: re.Match[str]) -> str:
    prefix = match.group("prefix")
    if prefix is not None:
        return prefix + REDACTED
    return REDACTED
