"""A stateful fake of Replicate's HTTP API, for :mod:`tests.fakes.server`.

It speaks the wire protocol of ``shared/reference/replicate.md`` §2 closely enough for
the real ``replicate`` client to parse it:

- creates (``POST /v1/models/{o}/{n}/predictions``, ``/v1/predictions`` with a
  ``version``, ``/v1/deployments/{o}/{n}/predictions``) answer 201 with a 26-character
  lowercase id, ``model``, ``version``, ``created_at`` and absolute ``urls.get``/``cancel``;
- ``Prefer: wait[=N]`` holds the create and answers the final status (or ``starting``
  when the wait "expires"), with ``Preference-Applied``;
- ``GET /v1/predictions/{id}`` walks a :class:`Plan`: by default ``starting`` →
  ``processing`` → ``succeeded`` over successive GETs;
- ``POST /v1/predictions/{id}/cancel`` cancels an unfinished prediction (and records it);
- ``GET /v1/predictions`` lists predictions newest first, honouring ``created_after``,
  :attr:`FakeReplicate.page_size` (100) a page with a ``next`` URL (``?cursor=``) to the
  following page (``lists`` counts calls; ``list_faults`` makes the next ones answer
  those statuses); :meth:`FakeReplicate.add_other_predictions` fills the account with
  other keys' predictions (a busy account);
- ``POST /v1/files`` (``multipart/form-data``, the file in part ``content``) stores a file
  and answers 201 with the file object and ``urls.get`` (``/v1/files/{id}``, served with
  the token); ``uploads`` lists each (name, content type, bytes);
- ``GET /v1/models/{o}/{n}/versions/{id}`` (which ``replicate.run`` calls for version refs);
- RFC 7807 errors: 401 for a wrong token, 422 with ``invalid_fields`` for bad inputs, and
  whatever :attr:`FakeReplicate.create_faults` scripts (429s, 5xx, dropped connections);
- video models (:func:`is_video_model`: ``minimax/video-01``, ``google/veo-3``, Kling, Wan,
  LTX, Seedance, Hailuo) answer one ``.mp4`` URL, as Replicate's video models do; image
  models a list of ``.webp`` (or ``output_format``) URLs;
- output files at ``/files/...`` (a tiny PNG, or a tiny MP4 for ``.mp4``), served WITHOUT
  auth; any Authorization header sent there is recorded in
  :attr:`FakeReplicate.leaked_auth` (tests assert it is empty).

Each prediction's behaviour is the next of :attr:`FakeReplicate.next_plans` (consumed one
per prediction), else the :class:`Plan` registered for its prompt in
:attr:`FakeReplicate.plans`, else :attr:`FakeReplicate.default_plan`.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from genrouter.util._png import placeholder_png

from .server import Request, Response

__all__ = [
    "FLUX_RATIOS",
    "SDXL_VERSION",
    "TINY_PNG",
    "TOKEN",
    "FakeReplicate",
    "Plan",
    "is_video_model",
    "problem",
    "rate_limited",
]

TOKEN = "r8_FAKEtoken0123456789abcdefghijklmnop"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
TINY_PNG = placeholder_png(4, 4, seed=1)
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
THROTTLED = "Request was throttled. Your rate limit resets in ~2s."

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TERMINAL = ("succeeded", "failed", "canceled", "aborted")
_VIDEO_MODEL = re.compile(r"video|veo|kling|wan-2|ltx|seedance|hailuo", re.IGNORECASE)
_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)
_VERSIONED = re.compile(r"^(?:(?P<model>[\w.-]+/[\w.-]+):)?(?P<version>[0-9a-f]{64})$")


def is_video_model(model: str) -> bool:
    """Whether the fake answers ``model`` (``owner/name``) with a video, as Replicate would."""
    return _VIDEO_MODEL.search(model) is not None


@dataclass
class Plan:
    """How one prediction behaves.

    ``statuses``: the status after the 1st, 2nd, ... GET (the last one sticks; a create
    answers ``starting``). ``outputs``: how many output URLs (None: the input's
    ``num_outputs``, default 1; fewer is what the NSFW filter does). ``shape``: a list of
    URLs, a ``single`` URL, or a list of ``data:`` URIs. ``get_faults``: HTTP statuses the
    first GETs answer instead. ``wait``: what ``Prefer: wait`` does (``terminal``: answer
    the final status at once; ``expire``: answer ``starting`` after ``hold_s``).
    """

    statuses: tuple[str, ...] = ("starting", "processing", "succeeded")
    outputs: int | None = None
    shape: Literal["list", "single", "data"] = "list"
    error: str | None = None
    get_faults: tuple[int, ...] = ()
    predict_time: float = 1.25
    queue_s: float = 0.5
    wait: Literal["terminal", "expire"] = "terminal"
    hold_s: float = 0.0


def problem(status: int, detail: str, *, title: str | None = None, **extra: Any) -> Response:
    """An RFC 7807 error response (``headers=`` sets HTTP headers)."""
    headers = extra.pop("headers", {})
    body = {"detail": detail, "status": status, **extra}
    if title is not None:
        body["title"] = title
    return Response(status=status, body=body, headers={"content-type": "application/problem+json", **headers})


def rate_limited(retry_after: str | None = None) -> Response:
    """A 429 as Replicate sends it; with a ``Retry-After`` header when given."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return problem(429, THROTTLED, headers=headers)


def _timestamp(epoch: float, digits: int) -> str:
    """RFC 3339 UTC with ``digits`` fractional digits (Replicate sends 3 to 8) and ``Z``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    fraction = f"{moment.microsecond:06d}".ljust(digits, "0")[:digits]
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction}Z"


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    plan: Plan
    base: str
    created: float
    webhook: str | None = None
    status: str = "starting"
    gets: int = 0
    faults: list[int] = field(default_factory=list)
    cancelled_while: str | None = None

    def finish(self, status: str) -> None:
        self.status = status

    def advance(self) -> None:
        if self.status not in _TERMINAL:
            statuses = self.plan.statuses
            self.status = statuses[min(self.gets, len(statuses) - 1)]
        self.gets += 1

    def outputs(self) -> Any:
        plan = self.plan
        # FLUX and SDXL name the count num_outputs; OpenAI's GPT Image models number_of_images.
        asked = self.input.get("num_outputs") or self.input.get("number_of_images") or 1
        count = plan.outputs if plan.outputs is not None else int(asked)
        if plan.shape == "data":
            data = "data:image/png;base64," + base64.b64encode(TINY_PNG).decode()
            return [data] * count
        if is_video_model(self.model):
            return f"{self.base}/files/{self.id}/output.mp4"  # one video, as a single URL
        ext = "png" if self.model == "stability-ai/sdxl" else str(self.input.get("output_format") or "webp")
        urls = [f"{self.base}/files/{self.id}/out-{i}.{ext}" for i in range(count)]
        return urls[0] if plan.shape == "single" and urls else urls

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        started = self.created + plan.queue_s
        ran = plan.predict_time
        status = self.status
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": "",
            "output": None,
            "error": None,
            "status": status,
            "source": "api",
            "data_removed": False,
            "created_at": _timestamp(self.created, 6),
            "started_at": None,
            "completed_at": None,
            "metrics": {},
            "urls": {
                "get": f"{self.base}/v1/predictions/{self.id}",
                "cancel": f"{self.base}/v1/predictions/{self.id}/cancel",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        if self.webhook is not None:
            body["webhook"] = self.webhook
        has_started = status in ("processing", "succeeded", "failed") or (
            status == "canceled" and self.cancelled_while == "processing"
        )
        if has_started:
            body["started_at"] = _timestamp(started, 3)
            body["logs"] = "Using seed: 7\n0%|          | 0/28\n100%|██████████| 28/28"
        if status in _TERMINAL:
            ran = ran if status != "canceled" else ran / 2
            body["completed_at"] = _timestamp(started + ran if has_started else self.created + 1, 8)
            if has_started:
                body["metrics"] = {"predict_time": ran, "total_time": plan.queue_s + ran}
        if status == "succeeded":
            body["output"] = self.outputs()
        elif status == "failed":
            body["error"] = plan.error or "Prediction failed"
        return body


class FakeReplicate:
    """A Replicate API as a request handler (see the module docstring).

    Inspect ``creations`` (prompt → predictions created), ``creates`` (every create
    request, refused or not), ``cancels`` (prediction ids), ``gets`` (id → GET count),
    ``version_gets`` and ``leaked_auth`` in assertions.
    """

    def __init__(self, token: str = TOKEN, *, plan: Plan | None = None) -> None:
        self.token = token
        self.default_plan = plan or Plan()
        self.plans: dict[str, Plan] = {}
        self.next_plans: list[Plan] = []
        self.create_faults: list[Response | str] = []
        self.versions: dict[str, str] = {SDXL_VERSION: "stability-ai/sdxl"}
        self.predictions: dict[str, _Prediction] = {}
        self.creations: Counter[str] = Counter()
        self.creates: list[Request] = []
        self.cancels: list[str] = []
        self.gets: Counter[str] = Counter()
        self.version_gets: list[str] = []
        self.files_served: list[str] = []
        self.leaked_auth: list[str] = []
        self.lists = 0
        self.list_faults: list[int] = []
        self.page_size = 100
        self.uploads: list[tuple[str, str, bytes]] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    # -- routing -----------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        with self._lock:
            return self._route(request)

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path.startswith("/files/"):
            return self._file(request)
        if request.header("authorization") != f"Bearer {self.token}":
            return problem(401, "You did not pass a valid authentication token", title="Unauthenticated")
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 5 and parts[1] == "models" and parts[4] == "predictions":
            return self._create(request, model=f"{parts[2]}/{parts[3]}", version="hidden")
        if method == "POST" and len(parts) == 5 and parts[1] == "deployments" and parts[4] == "predictions":
            return self._create(request, model=f"{parts[2]}/{parts[3]}", version="d" * 64)
        if method == "POST" and parts == ["v1", "predictions"]:
            return self._create_versioned(request)
        if method == "GET" and parts == ["v1", "predictions"]:
            return self._list(request)
        if method == "POST" and parts == ["v1", "files"]:
            return self._upload(request)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "files"] and parts[2] in self.files:
            content_type, data = self.files[parts[2]]
            return Response(raw=data, headers={"content-type": content_type})
        if len(parts) == 3 and parts[1] == "predictions" and method == "GET":
            return self._get(parts[2])
        if len(parts) == 4 and parts[1] == "predictions" and parts[3] == "cancel" and method == "POST":
            return self._cancel(parts[2])
        if method == "GET" and len(parts) == 6 and parts[1] == "models" and parts[4] == "versions":
            return self._version(f"{parts[2]}/{parts[3]}", parts[5])
        return problem(404, "Not found.", title="Not found")

    # -- endpoints -----------------------------------------------------------------------------

    def _create_versioned(self, request: Request) -> Response:
        body = request.json() or {}
        match = _VERSIONED.match(str(body.get("version", "")))
        if match is None or match["version"] not in self.versions:
            self.creates.append(request)
            return self._invalid([("version", "invalid_version", "Invalid version or not permitted")])
        return self._create(request, model=self.versions[match["version"]], version=match["version"])

    def _create(self, request: Request, *, model: str, version: str) -> Response:
        self.creates.append(request)
        fault = self.create_faults.pop(0) if self.create_faults else None
        if isinstance(fault, Response):
            return fault
        if fault == "drop":
            return Response(drop=True)
        body = request.json() or {}
        inputs = body.get("input")
        problems = _validate(inputs)
        if problems:
            return self._invalid(problems)
        assert isinstance(inputs, dict)
        prompt = str(inputs.get("prompt"))
        plan = self.next_plans.pop(0) if self.next_plans else self.plans.get(prompt, self.default_plan)
        prediction = _Prediction(
            id="".join(self._rng.choice(_ID_ALPHABET) for _ in range(26)),
            model=model,
            version=version,
            input=inputs,
            plan=plan,
            base=f"http://{request.header('host')}",
            created=round(time.time(), 3),
            webhook=body.get("webhook"),
            faults=list(plan.get_faults),
        )
        self.predictions[prediction.id] = prediction
        self.creations[prompt] += 1
        if fault == "drop_after_create":
            return Response(drop=True)
        headers = {"content-type": "application/json; charset=UTF-8", "ratelimit-remaining": "599"}
        delay = 0.0
        prefer = request.header("prefer")
        if prefer is not None and prefer.strip().startswith("wait"):
            _, _, seconds = prefer.partition("=")
            wait = int(seconds) if seconds.strip().isdigit() else 60
            headers["preference-applied"] = f"wait={wait}"
            delay = min(prediction.plan.hold_s, wait)
            if prediction.plan.wait == "terminal":
                prediction.finish(prediction.plan.statuses[-1])
        return Response(status=201, body=prediction.to_json(), headers=headers, delay_s=delay)

    def _list(self, request: Request) -> Response:
        """``GET /v1/predictions``: newest first, 100 a page, ``created_after`` honoured."""
        self.lists += 1
        if self.list_faults:
            return problem(self.list_faults.pop(0), "Service temporarily unavailable")
        after = request.query.get("created_after", [None])[0]
        since = None
        if after is not None:
            since = datetime.fromisoformat(after.replace("Z", "+00:00")).timestamp()
        found = [p for p in self.predictions.values() if since is None or p.created > since]
        found.sort(key=lambda p: p.created, reverse=True)
        start = int(request.query.get("cursor", ["0"])[0])
        page = found[start : start + self.page_size]
        following = start + self.page_size
        next_url = None
        if following < len(found):
            query = f"cursor={following}" + (f"&created_after={after}" if after else "")
            next_url = f"http://{request.header('host')}/v1/predictions?{query}"
        return Response.json({"next": next_url, "previous": None, "results": [p.to_json() for p in page]})

    def _upload(self, request: Request) -> Response:
        """``POST /v1/files``: the multipart part ``content`` becomes a file."""
        head = f"Content-Type: {request.header('content-type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + request.body)
        for part in message.iter_parts() if message.is_multipart() else ():
            if part.get_param("name", header="content-disposition") != "content":
                continue
            data = part.get_payload(decode=True) or b""
            content_type = part.get_content_type()
            name = part.get_filename() or "upload"
            file_id = hashlib.sha256(data).hexdigest()[:24]
            self.files[file_id] = (content_type, data)
            self.uploads.append((name, content_type, data))
            body = {
                "id": file_id,
                "name": name,
                "content_type": content_type,
                "size": len(data),
                "etag": file_id,
                "checksums": {"sha256": hashlib.sha256(data).hexdigest()},
                "metadata": {},
                "created_at": _timestamp(time.time(), 6),
                "expires_at": _timestamp(time.time() + 86400, 6),
                "urls": {"get": f"http://{request.header('host')}/v1/files/{file_id}"},
            }
            return Response(status=201, body=body)
        return problem(400, "missing multipart part 'content'")

    def add_other_predictions(self, count: int, *, model: str = "someone/else") -> None:
        """``count`` predictions made by other keys of the account, created just now."""
        with self._lock:
            now = time.time()
            for index in range(count):
                prediction = _Prediction(
                    id="".join(self._rng.choice(_ID_ALPHABET) for _ in range(26)),
                    model=model,
                    version="hidden",
                    input={"prompt": f"someone else's {index}"},
                    plan=self.default_plan,
                    base="http://127.0.0.1",
                    created=round(now + 1.0 + index * 1e-3, 3),
                )
                self.predictions[prediction.id] = prediction

    def _get(self, prediction_id: str) -> Response:
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return problem(404, "The requested prediction does not exist.", title="Not found")
        self.gets[prediction_id] += 1
        if prediction.faults:
            status = prediction.faults.pop(0)
            return problem(status, "Service temporarily unavailable", headers={"retry-after": "0"})
        prediction.advance()
        return Response.json(prediction.to_json())

    def _cancel(self, prediction_id: str) -> Response:
        prediction = self.predictions.get(prediction_id)
        self.cancels.append(prediction_id)
        if prediction is None:
            return problem(404, "The requested prediction does not exist.", title="Not found")
        if prediction.status not in _TERMINAL:
            prediction.cancelled_while = prediction.status
            prediction.finish("canceled")
        return Response.json(prediction.to_json())

    def _version(self, model: str, version: str) -> Response:
        self.version_gets.append(version)
        if self.versions.get(version) != model:
            return problem(404, "The specified version does not exist.", title="Not found")
        return Response.json(
            {
                "id": version,
                "created_at": "2023-07-26T17:32:09.366384Z",
                "cog_version": "0.8.1",
                "openapi_schema": {
                    "components": {
                        "schemas": {"Output": {"type": "array", "items": {"type": "string", "format": "uri"}}}
                    }
                },
            }
        )

    def _file(self, request: Request) -> Response:
        auth = request.header("authorization")
        if auth is not None:
            self.leaked_auth.append(auth)
            return problem(400, "delivery hosts take no credentials")
        self.files_served.append(request.path)
        if request.path.endswith(".mp4"):
            return Response(status=200, raw=_MP4, headers={"content-type": "video/mp4"})
        return Response(status=200, raw=TINY_PNG, headers={"content-type": "image/png"})

    def _invalid(self, problems: list[tuple[str, str, str]]) -> Response:
        return problem(
            422,
            "\n".join(f"- {field}: {text}" for field, _, text in problems),
            title="Input validation failed",
            invalid_fields=[
                {"type": kind, "field": field, "description": text} for field, kind, text in problems
            ],
        )

    # -- helpers for tests -------------------------------------------------------------------

    def status_of(self, prediction_id: str) -> str:
        """A prediction's status as the fake holds it (without counting a GET)."""
        with self._lock:
            return self.predictions[prediction_id].status

    @property
    def create_count(self) -> int:
        """How many create requests arrived (accepted, refused or dropped)."""
        return len(self.creates)


def _validate(inputs: Any) -> list[tuple[str, str, str]]:
    """A small part of the models' input schemas: enough to answer 422 like Replicate."""
    if not isinstance(inputs, dict):
        return [("input", "invalid_type", "Invalid type. Expected: object")]
    problems: list[tuple[str, str, str]] = []
    # Image utilities (upscalers, background removers) take an image and no prompt.
    promptless = "prompt" not in inputs and "image" in inputs
    if not promptless and (not isinstance(inputs.get("prompt"), str) or not inputs["prompt"]):
        problems.append(("input.prompt", "required", "prompt is required"))
    for name, low, high in (("seed", 0, 2**32), ("num_outputs", 1, 4), ("num_inference_steps", 1, 500)):
        value = inputs.get(name)
        if name in inputs and (type(value) is not int or not low <= value <= high):
            kind = type(value).__name__ if type(value) is not int else f"out of range {low}-{high}"
            problems.append(
                (f"input.{name}", "invalid_type", f"Invalid value. Expected: integer, given: {kind}")
            )
    ratio = inputs.get("aspect_ratio")
    if ratio is not None and ratio not in (*FLUX_RATIOS, "custom"):
        problems.append(
            ("input.aspect_ratio", "enum", f"aspect_ratio must be one of {', '.join(FLUX_RATIOS)}")
        )
    fmt = inputs.get("output_format")
    if fmt is not None and fmt not in ("webp", "jpg", "png"):
        problems.append(("input.output_format", "enum", "output_format must be one of webp, jpg, png"))
    if "disable_safety_checker" in inputs and type(inputs["disable_safety_checker"]) is not bool:
        problems.append(("input.disable_safety_checker", "invalid_type", "Expected: boolean"))
    return problems
