"""A FastAPI app that submits generation jobs and learns their results by webhook.

Run it (needs ``pip install 'genrouter[server]' fastapi uvicorn``)::

    GENROUTER_CONFIG=genrouter.yaml PUBLIC_URL=https://app.example \\
        uvicorn examples.fastapi_app:app

The config needs a provider that signs its webhooks: Replicate with
``webhook_secret: ${REPLICATE_WEBHOOK_SECRET}``, or fal (its public keys are fetched
from fal's JWKS). Without ``PUBLIC_URL`` jobs are still tracked, by polling only.

- ``POST /jobs`` with request fields (``{"prompt": "...", "model": "flux-dev"}``) submits
  a job whose webhook points at ``PUBLIC_URL/webhooks``; routing picks the provider,
  so the receiver tells providers apart by their signature headers.
- ``POST /webhooks`` (and ``/webhooks/{provider}``) verify and record deliveries:
  forged or replayed ones get 401 and change nothing; repeats are harmless.
- ``GET /jobs/{id}`` says where the job is: from a verified webhook if one came,
  else by asking the provider.
- ``GET /jobs/{id}/result?wait=30`` waits for the result; a webhook wakes the wait at
  once, and polling is the backstop for a delivery that never arrives.

Handles live in memory here; a real app stores ``handle.model_dump_json()`` in its
database so jobs survive a restart (``JobHandle.model_validate_json`` resumes them).
Instead of the two webhook routes, ``app.mount("/hooks", genrouter.webhooks.asgi_app(router, path=""))``
serves the same receiver.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from genrouter import AsyncRouter, DeadlineExceededError, GenRouterError, InvalidRequestError, JobHandle
from genrouter.backends.base import Backend
from genrouter.webhooks import respond_to_webhook


def create_app(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    public_url: str | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> FastAPI:
    """The app; ``config`` as for ``AsyncRouter.from_config`` (None: ``GENROUTER_CONFIG``)."""
    base_url = (public_url or os.environ.get("PUBLIC_URL") or "").rstrip("/")
    jobs: dict[str, JobHandle] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncRouter.from_config(config, backends=backends) as router:
            app.state.router = router
            yield

    app = FastAPI(title="genrouter webhooks example", lifespan=lifespan)

    def router_of(request: Request) -> AsyncRouter:
        router: AsyncRouter = request.app.state.router
        return router

    def handle_of(job_id: str) -> JobHandle:
        handle = jobs.get(job_id)
        if handle is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return handle

    @app.post("/jobs", status_code=202)
    async def submit(request: Request, fields: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        webhook_url = f"{base_url}/webhooks" if base_url else None
        try:
            handle = await router_of(request).submit(webhook_url=webhook_url, **fields)
        except InvalidRequestError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except GenRouterError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        jobs[handle.id] = handle
        return {
            "job_id": handle.id,
            "provider": handle.provider,
            "provider_request_id": handle.provider_request_id,
            "webhook_url": webhook_url,
        }

    @app.post("/webhooks")
    @app.post("/webhooks/{provider}")
    async def webhook(request: Request, provider: str | None = None) -> JSONResponse:
        body = await request.body()
        status, payload = await respond_to_webhook(router_of(request), provider, request.headers, body)
        return JSONResponse(payload, status_code=status)

    @app.get("/jobs/{job_id}")
    async def job_state(request: Request, job_id: str) -> dict[str, Any]:
        handle = handle_of(job_id)
        router = router_of(request)
        event = router.webhooks.latest(handle.provider, handle.provider_request_id)
        if event is not None:
            return {"job_id": job_id, "state": event.state.value, "source": "webhook", "error": event.error}
        status = await router.status(handle)
        return {"job_id": job_id, "state": status.state.value, "source": "poll", "error": status.error}

    @app.get("/jobs/{job_id}/result")
    async def job_result(request: Request, job_id: str, wait: float = 30.0) -> JSONResponse:
        handle = handle_of(job_id)
        try:
            result = await router_of(request).result(handle, timeout=wait)
        except DeadlineExceededError:
            return JSONResponse({"job_id": job_id, "state": "running"}, status_code=202)
        except GenRouterError as exc:
            return JSONResponse({"job_id": job_id, "state": "failed", "error": str(exc)}, status_code=502)
        cost = result.cost.amount_usd
        return JSONResponse(
            {
                "job_id": job_id,
                "state": "succeeded",
                "provider": result.provider,
                "outputs": [artifact.url for artifact in result.outputs],
                "cost_usd": None if cost is None else str(cost),
                "latency_s": result.timings.total_s,
            }
        )

    return app


app = create_app()
"""For ``uvicorn examples.fastapi_app:app``: the config comes from ``GENROUTER_CONFIG``."""
