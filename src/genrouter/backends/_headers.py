"""Extra HTTP headers for a provider: the section's ``provider_headers`` and a request's.

A provider section's ``provider_headers: {header: value}`` go with every call to that
provider's API; a request's ``provider_headers: {<provider key>: {header: value}}`` are
merged over them for that request's submits (the request wins, names compared without
case). Header names must be HTTP tokens and values one line; the headers genrouter sets
itself (``Authorization``, ``Host``, ``Content-Type``, ``Content-Length``) cannot be
replaced. A header whose name looks like a credential (see
:func:`genrouter.util._secrets.is_credential_header`) has its value registered for redaction,
so it never shows in logs, reprs or error text, and is left out of stored handles.
"""

from __future__ import annotations

from collections.abc import Mapping

from genrouter.errors import InvalidRequestError
from genrouter.types import GenerationRequest
from genrouter.util._header_rules import RESERVED_HEADERS, header_problem
from genrouter.util._secrets import is_credential_header, register_secret

__all__ = ["RESERVED_HEADERS", "check_headers", "merged", "request_headers", "shown_headers"]


def check_headers(headers: Mapping[str, str], *, field: str) -> dict[str, str]:
    """``headers`` if every name and value is sendable, else ``ValueError`` naming the bad one."""
    for name, value in headers.items():
        if is_credential_header(name) and isinstance(value, str):
            register_secret(value)
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(f"{field}: {problem}")
    return dict(headers)


def request_headers(request: GenerationRequest, provider: str) -> dict[str, str]:
    """The request's ``provider_headers[provider]``, checked (``InvalidRequestError`` when bad)."""
    headers = request.provider_headers.get(provider)
    if not headers:
        return {}
    field = f"provider_headers.{provider}"
    try:
        return check_headers(headers, field=field)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), field=field, provider=provider) from exc


def merged(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """``base`` updated by ``override``, header names compared without case (override wins)."""
    out = {k: v for k, v in base.items() if k.lower() not in {o.lower() for o in override}}
    out.update(override)
    return out


def shown_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as they may be logged: credential-looking values replaced by ``***``."""
    return {k: ("***" if is_credential_header(k) else v) for k, v in headers.items()}
