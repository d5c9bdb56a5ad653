"""A small fake of ComfyUI's HTTP API, served over loopback by :mod:`fakes.server`.

It speaks the endpoints genrouter's ComfyUI service uses:

- ``POST /prompt`` ``{prompt: <API-format workflow>, client_id}`` → ``{prompt_id, number,
  node_errors: {}}``; a prompt without an output node, a node without ``class_type`` or a
  ``LoadImage`` of a file never uploaded answers 400 ``{error, node_errors}`` as ComfyUI does;
- ``GET /history/<prompt_id>`` → ``{}`` for ``history_polls`` polls (queued, running),
  then ``{<id>: {prompt, outputs: {<node id>: {images: [{filename, subfolder, type}]}},
  status: {status_str, completed, messages}}}``. ``SaveImage`` nodes write ``output``
  files, ``PreviewImage`` ``temp`` ones, ``VHS_VideoCombine`` an MP4 under ``gifs``. A
  prompt whose ``CLIPTextEncode`` text contains one of ``fail_texts`` ends
  ``status_str: "error"`` with an ``execution_error`` message from its ``KSampler`` node;
- ``GET /view?filename=&subfolder=&type=`` → the file's PNG bytes (size from
  ``EmptyLatentImage``, pixels seeded from the sampler's seed), 404 for an unknown file;
- ``POST /upload/image`` (multipart ``image``) → ``{name, subfolder, type: "input"}``;
- ``GET /system_stats`` and ``GET /queue``.

``prompts`` records every accepted workflow as received; ``uploads`` every uploaded file;
``unavailable`` answers the next N ``POST /prompt`` with 503.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from genrouter.util._png import placeholder_png

from .server import LoopbackServer, Request, Response

__all__ = ["FakeComfy", "start_comfy"]

_OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp", "VHS_VideoCombine": "output"}
_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)


@dataclass
class _Run:
    prompt_id: str
    number: int
    prompt: dict[str, Any]
    polls: int = 0


@dataclass
class FakeComfy:
    """The fake ComfyUI server: a callable ``Request -> Response`` (see the module docstring)."""

    history_polls: int = 1
    """History polls answered ``{}`` before a prompt shows as finished."""
    fail_texts: Iterable[str] = ()
    unavailable: int = 0
    prompts: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    views: int = 0
    _runs: dict[str, _Run] = field(default_factory=dict)
    _files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> Response:
        path, method = request.path, request.method
        with self._lock:
            if method == "POST" and path == "/prompt":
                return self._prompt(request)
            if method == "GET" and path.startswith("/history/"):
                return self._history(path.removeprefix("/history/"))
            if method == "GET" and path == "/view":
                return self._view(request)
            if method == "POST" and path == "/upload/image":
                return self._upload(request)
            if method == "GET" and path == "/system_stats":
                return Response.json(
                    {"system": {"comfyui_version": "fake"}, "devices": [{"name": "cpu", "type": "cpu"}]}
                )
            if method == "GET" and path == "/queue":
                running = [r for r in self._runs.values() if r.polls < self.history_polls]
                return Response.json(
                    {
                        "queue_running": [[r.number, r.prompt_id] for r in running[:1]],
                        "queue_pending": [[r.number, r.prompt_id] for r in running[1:]],
                    }
                )
        return Response.json({"error": "not found"}, status=404)

    # -- routes ----------------------------------------------------------------------------

    def _prompt(self, request: Request) -> Response:
        if self.unavailable > 0:
            self.unavailable -= 1
            return Response(status=503, raw=b"Service Unavailable", headers={"content-type": "text/plain"})
        body = request.json() or {}
        prompt = body.get("prompt")
        if not isinstance(prompt, dict) or not prompt:
            return _invalid("invalid_prompt", "Invalid prompt: no nodes", {})
        node_errors: dict[str, Any] = {}
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return _invalid(
                    "invalid_prompt", f"Cannot execute because node {node_id} has no class_type", {}
                )
            image = node.get("inputs", {}).get("image")
            if node["class_type"] == "LoadImage" and image not in self.uploads:
                node_errors[node_id] = {
                    "errors": [
                        {
                            "type": "custom_validation_failed",
                            "message": "Invalid image file",
                            "details": f"image - Invalid image file: {image}",
                        }
                    ],
                    "class_type": "LoadImage",
                }
        if not any(n["class_type"] in _OUTPUT_NODES for n in prompt.values()):
            return _invalid("prompt_no_outputs", "Prompt has no outputs", {})
        if node_errors:
            return _invalid(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", node_errors
            )
        run = _Run(prompt_id=str(uuid.uuid4()), number=next(self._numbers), prompt=prompt)
        self._runs[run.prompt_id] = run
        self.prompts.append(prompt)
        return Response.json({"prompt_id": run.prompt_id, "number": run.number, "node_errors": {}})

    def _history(self, prompt_id: str) -> Response:
        run = self._runs.get(prompt_id)
        if run is None:
            return Response.json({})
        run.polls += 1
        if run.polls <= self.history_polls:
            return Response.json({})
        start = {"prompt_id": prompt_id, "timestamp": 1_700_000_000_000}
        texts = [
            str(n["inputs"].get("text", ""))
            for n in run.prompt.values()
            if n["class_type"] == "CLIPTextEncode"
        ]
        failing = next((t for t in self.fail_texts if any(t in text for text in texts)), None)
        if failing is not None:
            sampler = next((i for i, n in run.prompt.items() if n["class_type"] == "KSampler"), "?")
            error = {
                "prompt_id": prompt_id,
                "node_id": sampler,
                "node_type": "KSampler",
                "exception_message": f"Allocation on device failed ({failing})",
                "exception_type": "torch.OutOfMemoryError",
                "traceback": [],
                "timestamp": 1_700_000_001_000,
            }
            status = {
                "status_str": "error",
                "completed": False,
                "messages": [["execution_start", start], ["execution_error", error]],
            }
            return Response.json(
                {
                    prompt_id: {
                        "prompt": [run.number, prompt_id, run.prompt, {}, []],
                        "outputs": {},
                        "status": status,
                    }
                }
            )
        outputs: dict[str, Any] = {}
        for node_id, node in run.prompt.items():
            kind = _OUTPUT_NODES.get(node["class_type"])
            if kind is None:
                continue
            prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
            if node["class_type"] == "VHS_VideoCombine":  # video nodes report under "gifs"
                filename = f"{prefix}_{run.number:05d}.mp4"
                self._files[(filename, "", kind)] = _MP4
                item = {"filename": filename, "subfolder": "", "type": kind, "format": "video/h264-mp4"}
                outputs[node_id] = {"gifs": [item]}
                continue
            filename = f"{prefix}_{run.number:05d}_.png"
            self._files[(filename, "", kind)] = self._render(run.prompt)
            outputs[node_id] = {"images": [{"filename": filename, "subfolder": "", "type": kind}]}
        done = {"prompt_id": prompt_id, "timestamp": 1_700_000_002_500}
        status = {
            "status_str": "success",
            "completed": True,
            "messages": [
                ["execution_start", start],
                ["execution_cached", {"nodes": []}],
                ["execution_success", done],
            ],
        }
        return Response.json(
            {
                prompt_id: {
                    "prompt": [run.number, prompt_id, run.prompt, {}, list(outputs)],
                    "outputs": outputs,
                    "status": status,
                }
            }
        )

    def _view(self, request: Request) -> Response:
        def arg(name: str) -> str:
            return request.query.get(name, [""])[0]

        data = self._files.get((arg("filename"), arg("subfolder"), arg("type") or "output"))
        if data is None:
            return Response(status=404, raw=b"", headers={"content-type": "text/plain"})
        self.views += 1
        kind = "video/mp4" if arg("filename").endswith(".mp4") else "image/png"
        return Response(raw=data, headers={"content-type": kind})

    def _upload(self, request: Request) -> Response:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {request.header('content-type')}\r\n\r\n".encode() + request.body
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "image":
                name = str(part.get_filename())
                self.uploads[name] = part.get_payload(decode=True)
                return Response.json({"name": name, "subfolder": "", "type": "input"})
        return Response(status=400, raw=b"no image", headers={"content-type": "text/plain"})

    @staticmethod
    def _render(prompt: dict[str, Any]) -> bytes:
        width = height = 64
        seed = 0
        for node in prompt.values():
            inputs = node.get("inputs", {})
            if node["class_type"] == "EmptyLatentImage":
                width, height = int(inputs.get("width", 64)) // 8, int(inputs.get("height", 64)) // 8
            if node["class_type"] == "KSampler":
                seed = int(inputs.get("seed", 0))
        return placeholder_png(max(width, 1), max(height, 1), seed)


def _invalid(kind: str, message: str, node_errors: dict[str, Any]) -> Response:
    error = {"type": kind, "message": message, "details": "", "extra_info": {}}
    return Response.json({"error": error, "node_errors": node_errors}, status=400)


def start_comfy(fake: FakeComfy | None = None) -> LoopbackServer:
    """A started loopback server for ``fake`` (swap ``server.handler`` for a fresh fake)."""
    return LoopbackServer(fake or FakeComfy()).start()
