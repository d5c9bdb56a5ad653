"""A stateful fake of fal.ai's queue API, served over loopback by :mod:`fakes.server`.

It speaks the protocol of ``shared/reference/fal.md`` §2 closely enough for the
real ``fal_client`` to drive it (``tests/test_fal_sdk_agreement.py`` proves that):

- ``POST /{endpoint_id}[?fal_webhook=...]`` enqueues a job and answers ``request_id``
  and absolute ``status_url`` / ``response_url`` / ``cancel_url`` pointing at the
  fake itself, at the owner/alias path (``fal-ai/kling-video`` for a subpath id);
- ``GET .../requests/{id}/status`` plays ``IN_QUEUE(queue_position)`` →
  ``IN_PROGRESS(logs)`` → ``COMPLETED(logs, metrics[, error, error_type])``, one
  step per poll (202 while pending, 200 when complete);
- ``GET .../requests/{id}`` answers the model output: ``images`` of the requested
  ``image_size`` (no dimensions for Recraft), a ``video``, or for ``comfy/`` endpoints
  ComfyUI's per-node ``outputs`` (a saved image and a ``temp`` preview), with file URLs served
  by the fake itself under ``/files/`` so ``Artifact.aread()`` works;
- ``PUT .../requests/{id}/cancel`` answers 202 ``CANCELLATION_REQUESTED`` (the job then
  shows ``COMPLETED`` with ``error_type: client_cancelled``) or 400 ``ALREADY_COMPLETED``.

What a job does is a :class:`Behaviour`: the default one, or one chosen by prompt.
It scripts submit rejections (429 with or without ``Retry-After``, 503, 422, 401),
a dropped connection after the job was accepted, a slow submit, status polls that
fail with 503, jobs that never finish, jobs that complete with an error, and a 422
on the result. Every submit is counted per prompt (``submit_count``) so tests can
assert that nothing was resubmitted; every cancel is recorded in ``cancels``.
The ``Authorization`` header must be ``Key <api_key>`` (else 401).

It also speaks fal's storage API (as fal_client 1.0.3 does): ``POST
/storage/auth/token?storage_type=fal-cdn-v3`` (API key) answers ``{token, token_type,
base_url, expires_at}`` with ``base_url`` = ``<server>/cdn``; ``POST /cdn/files/upload``
(``Authorization: Bearer <token>`` only) stores the body and answers ``access_url``;
multipart is ``POST /cdn/files/upload/multipart`` → ``{access_url, uploadId}``,
``PUT <access_url>/multipart/<uploadId>/<n>`` → ``ETag``, ``POST
<access_url>/multipart/<uploadId>/complete``. Uploaded files are served at their
``access_url``. ``uploads`` lists each stored file; ``cdn_authorizations`` every
Authorization header the upload host saw (tests assert the API key is never among them).
A result answer carries ``x-fal-billable-units`` when the job's behaviour sets
``billable_units``; every submit's headers are kept on its job.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genrouter.util._png import placeholder_png

from .server import LoopbackServer, Request, Response

__all__ = ["DEFAULT_KEY", "PRESETS", "Behaviour", "FakeFal", "FakeJob", "start_server"]

DEFAULT_KEY = "fal-fake-key-0123456789"

PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_IMAGE_SIZE = "landscape_4_3"

_PNG = placeholder_png(8, 8, 0)
_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)
_NAMESPACES = ("workflows", "comfy")


@dataclass(frozen=True)
class Behaviour:
    """How the fake treats a job (see the module docstring)."""

    queue_polls: int = 1
    """Status polls answered IN_QUEUE (queue_position counts down to 0)."""
    progress_polls: int = 1
    """Then status polls answered IN_PROGRESS, before COMPLETED."""
    hang: bool = False
    """Never complete: IN_PROGRESS until cancelled."""
    error: str | None = None
    """COMPLETED carries this ``error`` (the job failed)."""
    error_type: str | None = None
    retryable_header: str | None = None
    """``X-Fal-Retryable`` sent with the COMPLETED status."""
    result_status: int = 200
    """Status of the result GET (422: a validation error body)."""
    status_failures: int = 0
    """The first status polls of each job answer 503."""
    submit_errors: Sequence[int] = ()
    """Statuses answering the first submits of this prompt (no job is created)."""
    submit_status: int | None = None
    """Status answering every submit of this prompt (no job is created)."""
    retry_after: str | None = None
    """``Retry-After`` sent with a 429."""
    drop_submit: bool = False
    """Create the job, then close the connection without answering."""
    submit_delay_s: float = 0.0
    inference_time: float = 1.25
    urls_in_submit: bool = True
    """Include status/response/cancel URLs in the submit answer."""
    billable_units: str | None = None
    """``x-fal-billable-units`` sent with the result answer (None: not sent)."""


@dataclass
class FakeJob:
    """One enqueued request."""

    request_id: str
    endpoint: str
    app: str
    input: dict[str, Any]
    behaviour: Behaviour
    webhook: str | None = None
    headers: dict[str, str] | None = None
    polls: int = 0
    failures_left: int = 0
    completed: bool = False
    cancelled: bool = False


def start_server(fake: FakeFal | None = None) -> LoopbackServer:
    """A started loopback server for ``fake``; tests swap ``server.handler`` for a fresh fake.

    TCP_NODELAY on its sockets: the harness writes headers and body separately, and
    Nagle's algorithm plus delayed ACKs would otherwise add ~40 ms to every request.
    Connections reset by a client that cancelled a request are not reported as errors.
    """
    server = LoopbackServer(fake or FakeFal())
    http = server._server
    http.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    report = http.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        # A client that cancels a request mid-flight resets its connection: not a fake error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, client_address)

    http.handle_error = handle_error  # type: ignore[method-assign]
    return server.start()


def app_path(endpoint: str) -> str:
    """The owner/alias part of an endpoint id (three parts for namespaced apps)."""
    parts = endpoint.strip("/").split("/")
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


class FakeFal:
    """The fake queue API: a callable ``Request -> Response`` for :class:`fakes.server.LoopbackServer`."""

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_KEY,
        behaviour: Behaviour | None = None,
        by_prompt: Mapping[str, Behaviour] | None = None,
    ) -> None:
        self.api_key = api_key
        self.behaviour = behaviour or Behaviour()
        self.by_prompt = dict(by_prompt or {})
        self.jobs: dict[str, FakeJob] = {}
        self.submissions: Counter[str] = Counter()
        self.cancels: list[str] = []
        self.unauthorised: int = 0
        self._rejections: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.token = "cdn-token-0123456789abcdef"
        self.token_requests = 0
        self.uploads: list[tuple[str, str, bytes]] = []
        """(access_url path, content type, bytes) of each stored file."""
        self.cdn_authorizations: list[str] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self._multipart: dict[str, dict[str, Any]] = {}
        self.cdn_faults: list[int] = []
        """Statuses the next uploads answer instead (the file is not stored)."""
        self.cdn_delay_s = 0.0
        """How long each upload answer is held back (the file is stored at once)."""

    # -- inspection ------------------------------------------------------------------

    def submit_count(self, prompt: str | None = None) -> int:
        """Submits received (all, or for one prompt), accepted or not."""
        return self.submissions[prompt] if prompt is not None else sum(self.submissions.values())

    def job_for(self, prompt: str) -> FakeJob:
        """The (last) job created for ``prompt``."""
        return [job for job in self.jobs.values() if job.input.get("prompt") == prompt][-1]

    # -- dispatch --------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        if request.method == "GET" and request.path.startswith("/files/"):
            return self._file(request.path)
        if request.path.startswith("/cdn/"):
            with self._lock:
                return self._cdn(request)
        if self.api_key is not None and request.header("authorization") != f"Key {self.api_key}":
            with self._lock:
                self.unauthorised += 1
            return Response.json({"detail": "Invalid or missing fal API key"}, status=401)
        if request.path == "/storage/auth/token" and request.method == "POST":
            with self._lock:
                self.token_requests += 1
            return Response.json(
                {
                    "token": self.token,
                    "token_type": "Bearer",
                    "base_url": f"http://{request.header('host')}/cdn",
                    "expires_at": "2099-01-01T00:00:00+00:00",
                }
            )
        head, sep, tail = request.path.strip("/").partition("/requests/")
        if not sep:
            if request.method != "POST":
                return Response.json({"detail": "Method not allowed"}, status=405)
            return self._submit(request, request.path.strip("/"))
        request_id, _, action = tail.partition("/")
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or job.app != head:
                return Response.json({"detail": f"Request {request_id} not found"}, status=404)
            if request.method == "GET" and action == "status":
                return self._status(job, request)
            if request.method == "GET" and not action:
                return self._result(job, request)
            if request.method == "PUT" and action == "cancel":
                return self._cancel(job)
        return Response.json({"detail": "Not found"}, status=404)

    # -- routes ------------------------------------------------------------------------

    def _submit(self, request: Request, endpoint: str) -> Response:
        body = request.json() or {}
        prompt = str(body.get("prompt", ""))
        behaviour = self.by_prompt.get(prompt, self.behaviour)
        with self._lock:
            self.submissions[prompt] += 1
            rejected = self._rejections[prompt]
            status = behaviour.submit_status
            if status is None and rejected < len(behaviour.submit_errors):
                status = behaviour.submit_errors[rejected]
            if status is not None:
                self._rejections[prompt] += 1
                return _error(status, behaviour)
            request_id = f"req-{next(self._ids):04d}"
            webhook = request.query.get("fal_webhook", [None])[0]
            job = FakeJob(
                request_id=request_id,
                endpoint=endpoint,
                app=app_path(endpoint),
                input=body,
                behaviour=behaviour,
                webhook=webhook,
                headers=dict(request.headers),
                failures_left=behaviour.status_failures,
            )
            self.jobs[request_id] = job
        if behaviour.drop_submit:
            return Response(drop=True)
        base = f"http://{request.header('host')}/{job.app}/requests/{request_id}"
        answer: dict[str, Any] = {
            "status": "IN_QUEUE",
            "request_id": request_id,
            "gateway_request_id": request_id,
            "queue_position": behaviour.queue_polls,
        }
        if behaviour.urls_in_submit:
            answer |= {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}
        return Response(
            status=200,
            body=answer,
            headers={"x-fal-request-id": request_id},
            delay_s=behaviour.submit_delay_s,
        )

    def _status(self, job: FakeJob, request: Request) -> Response:
        behaviour = job.behaviour
        if job.failures_left > 0:
            job.failures_left -= 1
            return Response.json({"detail": "Service temporarily unavailable"}, status=503)
        job.polls += 1
        with_logs = request.query.get("logs", ["false"])[0].lower() in ("1", "true")
        logs = [_log(f"poll {job.polls}")] if with_logs else None
        if job.cancelled:
            job.completed = True
            return Response.json(
                {
                    "status": "COMPLETED",
                    "logs": logs,
                    "metrics": {},
                    "error": "Request was cancelled by the client",
                    "error_type": "client_cancelled",
                }
            )
        if job.polls <= behaviour.queue_polls:
            position = behaviour.queue_polls - job.polls
            return Response.json({"status": "IN_QUEUE", "queue_position": position}, status=202)
        if behaviour.hang or job.polls <= behaviour.queue_polls + behaviour.progress_polls:
            return Response.json({"status": "IN_PROGRESS", "logs": logs}, status=202)
        job.completed = True
        answer: dict[str, Any] = {
            "status": "COMPLETED",
            "logs": logs,
            "metrics": {"inference_time": behaviour.inference_time},
        }
        if behaviour.error is not None:
            answer["error"] = behaviour.error
        if behaviour.error_type is not None:
            answer["error_type"] = behaviour.error_type
        headers = {}
        if behaviour.retryable_header is not None:
            headers["x-fal-retryable"] = behaviour.retryable_header
        return Response.json(answer, headers=headers)

    def _result(self, job: FakeJob, request: Request) -> Response:
        behaviour = job.behaviour
        if not job.completed:
            return Response.json({"detail": "Request is still in progress"}, status=400)
        if job.cancelled:
            return Response.json({"detail": "Request was cancelled", "error_type": "client_cancelled"}, 499)
        if behaviour.error is not None or behaviour.error_type is not None:
            status = 503 if (behaviour.error_type or "").startswith("runner_") else 500
            return Response.json({"detail": behaviour.error, "error_type": behaviour.error_type}, status)
        if behaviour.result_status == 422:
            detail = [{"loc": ["body", "image_size"], "msg": "image is too large", "type": "value_error"}]
            return Response.json({"detail": detail}, status=422)
        if behaviour.result_status != 200:
            return Response.json({"detail": f"HTTP {behaviour.result_status}"}, behaviour.result_status)
        headers = {}
        if behaviour.billable_units is not None:
            headers["x-fal-billable-units"] = behaviour.billable_units
        return Response.json(self.output(job, f"http://{request.header('host')}"), headers=headers)

    # -- storage -----------------------------------------------------------------------

    def _cdn(self, request: Request) -> Response:
        auth = request.header("authorization") or ""
        self.cdn_authorizations.append(auth)
        host = f"http://{request.header('host')}"
        path, method = request.path, request.method
        if method == "GET" and path in self.files:
            content_type, data = self.files[path]
            return Response(raw=data, headers={"content-type": content_type})
        if auth != f"Bearer {self.token}":
            return Response.json({"detail": "invalid upload token"}, status=401)
        content_type = request.header("content-type") or "application/octet-stream"
        name = request.header("x-fal-file-name") or "upload.bin"
        if method == "POST" and path == "/cdn/files/upload" and self.cdn_faults:
            return Response.json({"detail": "upload failed"}, status=self.cdn_faults.pop(0))
        if method == "POST" and path == "/cdn/files/upload":
            stored = f"/cdn/files/{hashlib.sha256(request.body).hexdigest()[:16]}/{name}"
            self.files[stored] = (content_type, request.body)
            self.uploads.append((stored, content_type, request.body))
            return Response(body={"access_url": host + stored}, delay_s=self.cdn_delay_s)
        if method == "POST" and path == "/cdn/files/upload/multipart":
            upload_id = f"mp-{len(self._multipart) + 1}"
            stored = f"/cdn/files/{upload_id}/{name}"
            self._multipart[upload_id] = {"path": stored, "type": content_type, "parts": {}}
            return Response.json({"access_url": host + stored, "uploadId": upload_id})
        head, sep, tail = path.partition("/multipart/")
        upload = self._multipart.get(tail.split("/")[0]) if sep else None
        if upload is None or head != upload["path"]:
            return Response.json({"detail": "Not found"}, status=404)
        action = tail.split("/", 1)[1] if "/" in tail else ""
        if method == "PUT" and action.isdigit():
            upload["parts"][int(action)] = request.body
            return Response(status=200, headers={"etag": f'"etag-{action}"'})
        if method == "POST" and action == "complete":
            listed = [int(p["partNumber"]) for p in (request.json() or {}).get("parts", [])]
            if sorted(listed) != sorted(upload["parts"]):
                return Response.json({"detail": "parts do not match"}, status=400)
            data = b"".join(upload["parts"][n] for n in sorted(upload["parts"]))
            self.files[upload["path"]] = (upload["type"], data)
            self.uploads.append((upload["path"], upload["type"], data))
            return Response.json({"access_url": host + upload["path"]})
        return Response.json({"detail": "Not found"}, status=404)

    def _cancel(self, job: FakeJob) -> Response:
        self.cancels.append(job.request_id)
        if job.completed:
            return Response.json({"status": "ALREADY_COMPLETED"}, status=400)
        job.cancelled = True
        return Response.json({"status": "CANCELLATION_REQUESTED"}, status=202)

    def _file(self, path: str) -> Response:
        if path.endswith(".mp4"):
            return Response(raw=_MP4, headers={"content-type": "video/mp4"})
        kind = "image/jpeg" if path.endswith(".jpg") else "image/png"
        return Response(raw=_PNG, headers={"content-type": kind})

    # -- outputs -----------------------------------------------------------------------

    def output(self, job: FakeJob, base: str) -> dict[str, Any]:
        """The model output fal would return for ``job``."""
        files = f"{base}/files/{job.request_id}"
        seed = job.input.get("seed", 42)
        if job.endpoint.startswith("comfy/"):  # ComfyUI endpoints answer files per output node
            return {
                "outputs": {
                    "9": {
                        "images": [
                            {
                                "url": f"{files}/0.png",
                                "filename": "ComfyUI_00001_.png",
                                "subfolder": "",
                                "type": "output",
                            }
                        ]
                    },
                    "12": {"images": [{"url": f"{files}/p.png", "filename": "preview.png", "type": "temp"}]},
                },
                "timings": {"inference": job.behaviour.inference_time},
            }
        if "video" in job.endpoint or "veo" in job.endpoint:
            return {
                "video": {
                    "url": f"{files}/0.mp4",
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": len(_MP4),
                },
                "seed": seed,
            }
        count = int(job.input.get("num_images", 1))
        if "recraft" in job.endpoint:
            return {
                "images": [
                    {"url": f"{files}/{i}.png", "content_type": "image/png", "file_name": f"{i}.png"}
                    for i in range(count)
                ]
            }
        width, height = _size(job.input.get("image_size", DEFAULT_IMAGE_SIZE))
        fmt = job.input.get("output_format") or job.input.get("format") or "jpeg"
        ext = "png" if fmt == "png" else "jpg"
        return {
            "images": [
                {
                    "url": f"{files}/{i}.{ext}",
                    "width": width,
                    "height": height,
                    "content_type": f"image/{fmt}",
                }
                for i in range(count)
            ],
            "seed": seed,
            "has_nsfw_concepts": [False] * count,
            "prompt": job.input.get("prompt"),
            "timings": {"inference": job.behaviour.inference_time},
        }


def _size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, dict):
        return int(image_size["width"]), int(image_size["height"])
    return PRESETS[str(image_size)]


def _log(message: str) -> dict[str, str]:
    return {"message": message, "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:00Z"}


def _error(status: int, behaviour: Behaviour) -> Response:
    headers: dict[str, str] = {}
    if status == 422:
        detail: Any = [
            {"loc": ["body", "prompt"], "msg": "prompt is not allowed", "type": "value_error"},
            {"loc": ["body", "num_inference_steps"], "msg": "ensure this value is at most 50", "type": "le"},
        ]
        return Response.json({"detail": detail}, status=422)
    if status == 429:
        if behaviour.retry_after is not None:
            headers["retry-after"] = behaviour.retry_after
        return Response.json({"detail": "Too many concurrent requests"}, status=429, headers=headers)
    if status == 401:
        return Response.json({"detail": "Invalid or missing fal API key"}, status=401)
    if status == 503:
        return Response.json({"detail": "Service temporarily unavailable"}, status=503)
    return Response.json({"detail": f"HTTP {status}"}, status=status)
