"""One completion path for an accepted job: read → merge → observe → price.

Both ways a job ends go through it: a lane of :class:`~genrouter.engine._execution.Execution`
(``generate``), and :meth:`genrouter.AsyncRouter.result` (which batch re-attach and
webhook wake-ups use). So the latency recorded into a deployment's health window means
one thing whoever collects the job (:func:`job_latency`), and a result is merged, priced
and stamped the same way. Recording the attempt and settling the budget stay with the
caller: a lane records into its request's attempt list and settles its reservation, the
jobs API records one attempt and settles the spend pinned to the job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from genrouter.engine._attempts import finalise_result, merge_results

if TYPE_CHECKING:
    from genrouter.backends.base import Backend
    from genrouter.catalog import Deployment
    from genrouter.engine._attempts import JobWaiter
    from genrouter.routing.store import StateStore
    from genrouter.types import Attempt, GenerationRequest, GenerationResult, ProviderJob

__all__ = ["complete", "job_latency", "read_results"]


def job_latency(result: GenerationResult, watched_s: float, *, watched_from_submit: bool) -> float:
    """A job's latency: from its submission to its end at the provider.

    Watched from the submission (a lane), that is the time watched, queue included.
    Collected later (the jobs API, a re-attached batch line, a webhook wake-up), the
    time watched is not it: the job may have finished long before anyone asked. Then it
    is the provider's own account (queued + running) when it gives one, else the time
    watched (a lower bound when the job was still running)."""
    if watched_from_submit:
        return watched_s
    timings = result.timings
    own = [t for t in (timings.queued_s, timings.running_s) if t is not None]
    return sum(own) if own else watched_s


async def read_results(
    waiter: JobWaiter,
    backend: Backend,
    jobs: Sequence[ProviderJob],
    until: float,
    succeeded: Mapping[int, bool],
    *,
    max_reads: int | None = None,
    on_read: Callable[[ProviderJob], None] | None = None,
) -> list[GenerationResult]:
    """Each finished job's result, in order (``succeeded``: ``id(job)`` → whether it
    succeeded; a job missing from it is read as succeeded). ``on_read`` is told each job
    whose result is in (it no longer needs a cancel)."""
    results = []
    for job in jobs:
        ok = succeeded.get(id(job), True)
        results.append(await waiter.fetch(backend, job, until, succeeded=ok, max_reads=max_reads))
        if on_read is not None:
            on_read(job)
    return results


def complete(
    results: Sequence[GenerationResult],
    *,
    store: StateStore,
    deployment: Deployment,
    request: GenerationRequest,
    jobs: Sequence[ProviderJob],
    attempts: list[Attempt],
    watched_s: float,
    watched_from_submit: bool,
    now: float,
    total_s: float,
    estimated_cost: Decimal | None = None,
) -> GenerationResult:
    """Merge the jobs' results, record the success (latency per :func:`job_latency`) in
    the deployment's health, and return the priced, stamped result."""
    merged = merge_results(results)
    timings = merged.timings
    store.observe_success(
        deployment.key,
        job_latency(merged, watched_s, watched_from_submit=watched_from_submit),
        now,
        queued_s=timings.queued_s,
        running_s=timings.running_s,
    )
    return finalise_result(
        merged,
        request=request,
        deployment=deployment,
        jobs=jobs,
        attempts=attempts,
        total_s=total_s,
        estimated_cost=estimated_cost,
    )
