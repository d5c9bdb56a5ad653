"""Answers a stopped caller no longer reads, and who still wants to hear them.

A lane stopped mid-request (a lost hedge, a deadline) abandons the HTTP call, not its
answer: a 429 in that answer still holds the request's later calls to that provider,
cancels included. A request's :class:`~genrouter.engine._attempts.JobWaiter` sets
:data:`ABANDONED_ANSWERS` around its provider calls; the HTTP layer reports there any
request that was sent and then abandoned. No import of httpx here: ``import genrouter``
stays light.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx

__all__ = ["ABANDONED_ANSWERS", "AbandonedAnswers"]


class AbandonedAnswers(Protocol):
    """Told of requests that were sent but whose caller stopped waiting for the answer."""

    def abandoned(self, provider: str, answer: asyncio.Future[httpx.Response]) -> None:
        """``answer`` will settle with the response the caller no longer reads."""


ABANDONED_ANSWERS: ContextVar[AbandonedAnswers | None] = ContextVar(
    "genrouter_abandoned_answers", default=None
)
"""Where the current request's abandoned answers are reported (None: nowhere)."""
