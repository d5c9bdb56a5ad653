"""genrouter's self-hosted ComfyUI service in plain Python (no ``modal`` import): ``app.py`` wraps it.

One :class:`ComfyService` per container talks to one ComfyUI server over its HTTP API
(started by :meth:`ComfyService.start` when ``launch`` names a command, else already
running). :meth:`ComfyService.run_workflow` serves one request::

    {"workflow": "portrait",                       # <workflows_dir>/portrait.json (API format)
     "inputs": {"6.inputs.text": "a red fox",      # <node id>.inputs.<name> -> value
                "3.inputs.seed": 7,
                "10.inputs.image": b"\\x89PNG..."}} # bytes: uploaded to ComfyUI, then its file name

1. loads the API-format workflow JSON (cached) and patches each value into a copy; a
   path naming a missing node or input is a ``ValueError`` (a typo would do nothing);
2. uploads image bytes with ``POST /upload/image`` (named by content hash, so a retry
   reuses the file);
3. submits ``POST /prompt`` with ``{"prompt": <workflow>, "client_id": ...}``; ComfyUI's
   validation error (HTTP 400 with ``node_errors``) is a ``ValueError``;
4. polls ``GET /history/<prompt_id>`` until ``status.completed``, or until
   ``status_str == "error"``: the ``execution_error`` message becomes a
   :class:`WorkflowError` naming the node, its type and ComfyUI's exception;
5. reads every output file (``images``, ``gifs``, ``videos`` of each output node;
   ``temp`` previews skipped) with ``GET /view?filename=&subfolder=&type=``.

The result: ``{"outputs": [bytes...], "files": [{filename, content_type, kind, node}...],
"kind": "workflow", "prompt_id", "seed", "gpu_seconds", "finished_at", "warnings"}``.
``gpu_seconds`` is ComfyUI's own execution time (``execution_start`` to
``execution_success``), so time queued behind another prompt on the same GPU is not
billed to this one. Errors are builtin exceptions, so they unpickle anywhere.

:meth:`ComfyService.submit` runs requests on ``max_concurrent`` threads (the class's
``@modal.concurrent(max_inputs=5)``); ComfyUI itself executes one prompt at a time
and queues the rest. :meth:`ComfyService.health` reports ComfyUI's queue and devices.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import importlib.util
import json
import mimetypes
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["ENV_VARIABLES", "ComfyConfig", "ComfyService", "WorkflowError", "patch_workflow"]


def _webhooks_module() -> Any:
    """``_webhooks.py`` (Standard Webhooks delivery), shared with the diffusion class: beside this
    file in the container, one folder up (``deploy/modal/``) in a checkout."""
    name = "genrouter_modal.webhooks"
    if name in sys.modules:
        return sys.modules[name]
    here = Path(__file__).resolve().parent
    path = next((p for p in (here / "_webhooks.py", here.parent / "_webhooks.py") if p.is_file()), None)
    spec = importlib.util.spec_from_file_location(name, path) if path else None
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot find _webhooks.py beside {__file__} or one folder up")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_webhooks = _webhooks_module()

ENV_VARIABLES = (
    "GENROUTER_COMFY_URL",
    "GENROUTER_COMFY_WORKFLOWS_DIR",
    "GENROUTER_COMFY_LAUNCH",
    "GENROUTER_COMFY_START_TIMEOUT_S",
    "GENROUTER_COMFY_RUN_TIMEOUT_S",
    "GENROUTER_COMFY_MAX_CONCURRENT",
    _webhooks.SECRET_ENV,
)
"""Environment variables :meth:`ComfyConfig.from_env` reads (``app.py`` copies them into the image)."""

_WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_OUTPUT_LISTS = ("images", "gifs", "videos")
_VIDEO_TYPES = ("video/",)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"RIFF", ".webp"),
)


class WorkflowError(RuntimeError):
    """ComfyUI ran the workflow and a node failed (or it never finished in time)."""


@dataclass(frozen=True)
class ComfyConfig:
    """Service settings; :meth:`from_env` reads the ``GENROUTER_COMFY_*`` variables."""

    url: str = "http://127.0.0.1:8188"
    """ComfyUI's HTTP API."""
    workflows_dir: str = "/comfy-data/workflows"
    """Where ``<name>.json`` API-format workflows live (on the Volume in the container)."""
    launch: tuple[str, ...] = ()
    """Command that starts ComfyUI (empty: it is already running at ``url``)."""
    start_timeout_s: float = 600.0
    run_timeout_s: float = 900.0
    poll_s: float = 0.2
    http_timeout_s: float = 60.0
    max_concurrent: int = 5
    webhook_secret: str | None = field(default=None, repr=False)
    """``whsec_...`` that signs webhook deliveries (``GENROUTER_WEBHOOK_SECRET``, from a Modal Secret);
    None: a request's ``webhook_url`` is ignored with a warning."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ComfyConfig:
        """Settings from ``GENROUTER_COMFY_*``; unset variables keep the defaults."""
        env = os.environ if environ is None else environ
        d = cls()
        config = cls(
            url=env.get("GENROUTER_COMFY_URL", d.url),
            workflows_dir=env.get("GENROUTER_COMFY_WORKFLOWS_DIR", d.workflows_dir),
            launch=tuple(shlex.split(env.get("GENROUTER_COMFY_LAUNCH", ""))),
            start_timeout_s=float(env.get("GENROUTER_COMFY_START_TIMEOUT_S", d.start_timeout_s)),
            run_timeout_s=float(env.get("GENROUTER_COMFY_RUN_TIMEOUT_S", d.run_timeout_s)),
            max_concurrent=int(env.get("GENROUTER_COMFY_MAX_CONCURRENT", d.max_concurrent)),
            webhook_secret=env.get(_webhooks.SECRET_ENV) or None,
        )
        return replace(config, **overrides)


def patch_workflow(workflow: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an API-format ``workflow`` with each ``"<node id>.inputs.<name>": value`` set.

    Raises ``ValueError`` naming the path when the node does not exist, the path is not
    of that form, or the node has no such input (a typo would otherwise do nothing).
    """
    patched: dict[str, Any] = copy.deepcopy(dict(workflow))
    for path, value in inputs.items():
        node_id, sep, rest = path.partition(".inputs.")
        if not sep or not node_id or not rest:
            raise ValueError(f"input path {path!r} is not of the form '<node id>.inputs.<name>'")
        node = patched.get(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            nodes = ", ".join(sorted(patched, key=_node_order)[:20])
            raise ValueError(f"input path {path!r}: the workflow has no node {node_id!r} (nodes: {nodes})")
        if rest not in node["inputs"]:
            names = ", ".join(sorted(node["inputs"]))
            raise ValueError(
                f"input path {path!r}: node {node_id} ({node.get('class_type', '?')}) has no input "
                f"{rest!r} (inputs: {names})"
            )
        node["inputs"][rest] = value
    return patched


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def _extension(data: bytes) -> str:
    return next((ext for magic, ext in _SIGNATURES if data.startswith(magic)), ".png")


class ComfyService:
    """Runs API-format workflows on one ComfyUI server (see the module docstring).

    A request with a ``webhook_url`` gets the diffusion class's Standard Webhooks delivery
    (``deploy/modal/_webhooks.py``: a signed ``job.succeeded``/``job.failed`` event, sent
    from background threads with retries, ``webhook-id`` = ``msg_<call id>``) when the run
    ends, if ``webhook_secret`` is set; without it the result carries a warning.
    """

    def __init__(
        self, config: ComfyConfig | None = None, *, on_workflow_miss: Callable[[], None] | None = None
    ) -> None:
        self.config = config or ComfyConfig()
        self.on_workflow_miss = on_workflow_miss
        """Called once before a missing workflow file is reported (``app.py`` reloads the Volume)."""
        self.client_id = uuid.uuid4().hex
        secret = self.config.webhook_secret
        self._webhooks: Any = _webhooks.WebhookSender(secret) if secret else None
        self._process: subprocess.Popen[bytes] | None = None
        self._workflows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._pause = threading.Event()  # never set: a sleep that blocks only this worker thread
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_concurrent, thread_name_prefix="comfy"
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ComfyService:
        """Launch ComfyUI when ``launch`` is set, then wait until it answers (``start_timeout_s``)."""
        if self.config.launch and self._process is None:
            self._process = subprocess.Popen(self.config.launch)
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self._process.returncode} while starting")
            try:
                self._get_json("/system_stats")
                return self
            except OSError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"ComfyUI did not answer at {self.config.url} within {self.config.start_timeout_s:g}s"
                    ) from None
                self._pause.wait(0.5)

    def close(self) -> None:
        """Stop taking requests, finish running ones, and stop a ComfyUI this service launched."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._webhooks is not None:
            self._webhooks.close()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "queue_running", "queue_pending", "devices"}``, or ``unavailable`` with why."""
        try:
            stats = self._get_json("/system_stats")
            queue = self._get_json("/queue")
        except OSError as exc:
            return {"status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
        devices = [str(d.get("name", "?")) for d in stats.get("devices", []) if isinstance(d, dict)]
        return {
            "status": "ok",
            "queue_running": len(queue.get("queue_running", [])),
            "queue_pending": len(queue.get("queue_pending", [])),
            "devices": devices,
        }

    # -- serving -------------------------------------------------------------------------

    def submit(
        self, request: Mapping[str, Any], *, call_id: str | None = None
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """Run ``request`` on one of ``max_concurrent`` threads; the future holds the result.

        A cancelled future that had not started never runs, and sends no webhook.
        """
        return self._pool.submit(self.run_workflow, request, call_id=call_id)

    def workflow(self, name: str) -> dict[str, Any]:
        """The API-format workflow ``<workflows_dir>/<name>.json`` (read once, then cached)."""
        if not isinstance(name, str) or not _WORKFLOW_NAME.match(name):
            raise ValueError(f"workflow name {name!r} must be letters, digits, '.', '_' or '-'")
        with self._lock:
            cached = self._workflows.get(name)
        if cached is not None:
            return cached
        path = Path(self.config.workflows_dir) / f"{name.removesuffix('.json')}.json"
        if not path.is_file() and self.on_workflow_miss is not None:
            self.on_workflow_miss()  # a workflow uploaded after this container started
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"no workflow {name!r}: {path} does not exist") from None
        if not isinstance(loaded, dict) or not all(
            isinstance(n, dict) and "class_type" in n for n in loaded.values()
        ):
            raise ValueError(
                f"{path} is not an API-format workflow (export it with 'Export (API)' in ComfyUI)"
            )
        with self._lock:
            self._workflows[name] = loaded
        return loaded

    def run_workflow(self, request: Mapping[str, Any], *, call_id: str | None = None) -> dict[str, Any]:
        """Patch, submit, wait and collect one workflow run (see the module docstring).

        ``call_id`` (Modal's function call id) names the job in its webhook event.
        """
        url = request.get("webhook_url")
        if url is not None:
            _webhooks.check_url(url)
        job_id = call_id or f"req-{os.urandom(8).hex()}"
        try:
            result = self._run(request)
        except Exception as exc:
            if url is not None and self._webhooks is not None:
                self._announce(url, _webhooks.job_body(job_id, error=f"{type(exc).__name__}: {exc}"), job_id)
            raise
        if url is not None:
            if self._webhooks is None:
                result["warnings"].append(
                    f"no webhook sent: {_webhooks.SECRET_ENV} is not set in this deployment (see its README)"
                )
            else:
                self._announce(url, _webhooks.job_body(job_id, result), job_id)
        return result

    def _announce(self, url: str, body: bytes, job_id: str) -> None:
        try:
            self._webhooks.send(url, body, _webhooks.message_id(job_id))
        except RuntimeError:  # closing: the sender's threads are gone; polling is the backstop
            print(f"genrouter comfy: webhook for {job_id} not sent: the service is closing")

    def _run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        name = request.get("workflow") or request.get("model")
        inputs = request.get("inputs") or {}
        if not isinstance(inputs, Mapping):
            raise TypeError("inputs must be a mapping of '<node id>.inputs.<name>' to values")
        patch_workflow(self.workflow(str(name)), inputs)  # every path checked before any upload
        values = {
            path: self._upload(value) if isinstance(value, bytes) else value for path, value in inputs.items()
        }
        prompt = patch_workflow(self.workflow(str(name)), values)
        queued = self._post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        prompt_id = str(queued["prompt_id"])
        entry = self._wait(prompt_id, started)
        outputs, files = self._collect(entry.get("outputs") or {})
        seed = next(
            (v for p, v in inputs.items() if p.endswith(".inputs.seed") or p.endswith(".inputs.noise_seed")),
            None,
        )
        return {
            "outputs": outputs,
            "files": files,
            "kind": "workflow",
            "prompt_id": prompt_id,
            "seed": seed if isinstance(seed, int) else None,
            "gpu_seconds": _execution_s(entry) or (time.monotonic() - started),
            "finished_at": time.time(),
            "warnings": [],
        }

    def _upload(self, data: bytes) -> str:
        name = hashlib.sha256(data).hexdigest()[:32] + _extension(data)
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="image"; filename="{name}"\r\n'.encode(),
                f"Content-Type: {mimetypes.guess_type(name)[0] or 'image/png'}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}\r\n".encode(),
                b'Content-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n',
                f"--{boundary}--\r\n".encode(),
            ]
        )
        answer = self._request(
            "POST", "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        uploaded = json.loads(answer[0])
        subfolder = uploaded.get("subfolder") or ""
        return f"{subfolder}/{uploaded['name']}" if subfolder else str(uploaded["name"])

    def _wait(self, prompt_id: str, started: float) -> dict[str, Any]:
        deadline = started + self.config.run_timeout_s
        while True:
            history = self._get_json(f"/history/{urllib.parse.quote(prompt_id)}")
            entry = history.get(prompt_id)
            if isinstance(entry, dict):
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    raise WorkflowError(_execution_error(prompt_id, status))
                if status.get("completed"):
                    return entry
            if time.monotonic() >= deadline:
                raise WorkflowError(
                    f"ComfyUI prompt {prompt_id} did not finish within {self.config.run_timeout_s:g}s"
                )
            self._pause.wait(self.config.poll_s)

    def _collect(self, node_outputs: Mapping[str, Any]) -> tuple[list[bytes], list[dict[str, Any]]]:
        outputs: list[bytes] = []
        files: list[dict[str, Any]] = []
        for node_id in sorted(node_outputs, key=_node_order):
            node = node_outputs[node_id]
            for listed_as in _OUTPUT_LISTS:
                items = node.get(listed_as) if isinstance(node, dict) else None
                for item in items if isinstance(items, list) else []:
                    if not isinstance(item, dict) or item.get("type") == "temp":
                        continue
                    query = urllib.parse.urlencode(
                        {
                            "filename": item.get("filename", ""),
                            "subfolder": item.get("subfolder", ""),
                            "type": item.get("type", "output"),
                        }
                    )
                    data, content_type = self._request("GET", f"/view?{query}")
                    filename = str(item.get("filename", ""))
                    content_type = (
                        content_type
                        if content_type and content_type != "application/octet-stream"
                        else mimetypes.guess_type(filename)[0] or "application/octet-stream"
                    )
                    video = content_type.startswith(_VIDEO_TYPES) or listed_as == "videos"
                    outputs.append(data)
                    files.append(
                        {
                            "filename": filename,
                            "content_type": content_type,
                            "kind": "video" if video else "image",
                            "node": node_id,
                        }
                    )
        if not outputs:
            raise WorkflowError("the workflow finished without any output file (add a SaveImage node)")
        return outputs, files

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[bytes, str | None]:
        url = self.config.url.rstrip("/") + path
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=self.config.http_timeout_s) as response:
                return response.read(), response.headers.get("Content-Type")
        except urllib.error.HTTPError as exc:
            detail = exc.read()
            if exc.code == 400:
                raise ValueError(
                    f"ComfyUI rejected {method} {path.split('?')[0]}: {_rejection(detail)}"
                ) from None
            raise ConnectionError(
                f"ComfyUI answered {method} {path.split('?')[0]} with HTTP {exc.code}"
            ) from None
        except urllib.error.URLError as exc:  # refused, reset, timed out: ComfyUI is not answering
            raise ConnectionError(f"ComfyUI at {self.config.url} is not answering: {exc.reason}") from None

    def _get_json(self, path: str) -> dict[str, Any]:
        data, _ = self._request("GET", path)
        loaded = json.loads(data or b"{}")
        return loaded if isinstance(loaded, dict) else {}

    def _post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data, _ = self._request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise ConnectionError(f"ComfyUI answered POST {path} with {type(loaded).__name__}, not an object")
        return loaded


def _rejection(detail: bytes) -> str:
    """ComfyUI's 400 body (``{"error": {...}, "node_errors": {...}}``) in one line."""
    try:
        body = json.loads(detail)
    except ValueError:
        return detail.decode("utf-8", "replace")[:300]
    error = body.get("error") or {}
    parts = [str(error.get("message") or error.get("type") or "invalid prompt")]
    for node_id, problem in sorted((body.get("node_errors") or {}).items()):
        for item in problem.get("errors", []):
            where = f"node {node_id} ({problem.get('class_type', '?')})"
            parts.append(f"{where}: {item.get('message')}: {item.get('details', '')}".rstrip(": "))
    return "; ".join(parts)


def _execution_error(prompt_id: str, status: Mapping[str, Any]) -> str:
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            info = message[1]
            return (
                f"ComfyUI prompt {prompt_id} failed in node {info.get('node_id')} ({info.get('node_type')}): "
                f"{info.get('exception_type')}: {info.get('exception_message')}"
            )
    return f"ComfyUI prompt {prompt_id} failed"


def _execution_s(entry: Mapping[str, Any]) -> float | None:
    """``execution_success`` minus ``execution_start`` timestamps (ms) from the history messages."""
    stamps: dict[str, float] = {}
    for message in (entry.get("status") or {}).get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            stamp = message[1].get("timestamp")
            if isinstance(stamp, int | float):
                stamps[str(message[0])] = float(stamp)
    if "execution_start" in stamps and "execution_success" in stamps:
        return max(0.0, (stamps["execution_success"] - stamps["execution_start"]) / 1000.0)
    return None
