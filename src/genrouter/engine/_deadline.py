"""The time a submission has left, as the router sees it, for backends to pass on.

The router sets :data:`SUBMIT_DEADLINE` around each ``backend.submit`` call to a
function of no arguments returning the seconds left before the request's one deadline
(on the router's injected clock). A backend reads it with :func:`remaining_s` right
before it sends, so a failover or retry submission carries the time left then, not the
original deadline. Outside a routed submission (a backend driven directly) it is None.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["SUBMIT_DEADLINE", "remaining_s"]

SUBMIT_DEADLINE: ContextVar[Callable[[], float] | None] = ContextVar(
    "genrouter_submit_deadline", default=None
)


def remaining_s() -> float | None:
    """Seconds left before the current submission's deadline (may be ≤ 0), or None."""
    remaining = SUBMIT_DEADLINE.get()
    return None if remaining is None else remaining()
