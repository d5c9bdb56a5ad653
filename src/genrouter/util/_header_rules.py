"""Which extra HTTP headers genrouter can send (data only; used by requests and provider sections).

A header name must be an HTTP token and its value one line; the headers genrouter sets
itself (``Authorization``, ``Host``, ``Content-Type``, ``Content-Length``) cannot be
replaced. Kept apart from :mod:`genrouter.backends._headers` so that the request model
(:mod:`genrouter.types`) can check a request's ``provider_headers`` when it is validated.
"""

from __future__ import annotations

import re

__all__ = ["RESERVED_HEADERS", "header_problem"]

RESERVED_HEADERS = frozenset({"authorization", "host", "content-type", "content-length"})
"""Headers genrouter sets itself; ``provider_headers`` may not replace them."""

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def header_problem(name: str, value: object) -> str | None:
    """Why header ``name: value`` cannot be sent (the fix included), or None when it can."""
    if not _TOKEN.match(name):
        return f"{name!r} is not a valid HTTP header name"
    if name.lower() in RESERVED_HEADERS:
        return (
            f"{name} is set by genrouter itself and cannot be replaced "
            "(credentials go in the provider section's api_key/api_token)"
        )
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        return f"the value of {name} must be a one-line string"
    return None
