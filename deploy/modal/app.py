"""genrouter's Modal GPU classes, thin wrappers over ``service.py``: ``modal deploy deploy/modal/app.py``.

Everything that shapes the deployment is read from ``GENROUTER_MODAL_*`` environment
variables when ``modal deploy`` imports this file, resolved once into :class:`DeploySettings`
and **baked into the images' environment** (``GENROUTER_MODAL_SETTINGS``, JSON), together
with the service's own variables. A container imports this file again with only the image's
environment; :meth:`DeploySettings.from_env` then reads the baked JSON, so every container
defines the same functions, with the same dependencies, as the deploy did. ``README.md``
beside this file documents each setting.

Shape: ``Diffusion`` (images) is an ``@app.cls`` under ``@modal.concurrent``: each input is
one asyncio task awaiting :meth:`DiffusionService.agenerate`, and the service's in-process
batcher groups concurrent inputs into pipeline batches. Cancelling one input cancels its
task only (modal 1.6 cancels an async input's task; a sync ``@modal.batched`` input shares
one IOContext with its whole batch, so a cancel would terminate every batch-mate); the
cancelled request is dropped if queued, or finished with its batch and discarded.
``Video`` serves the video models one request per input, with its own long timeout.
``model_id`` (a ``modal.parameter``) selects the model a container loads, so each model
autoscales as its own pool. With memory snapshots on, ``@modal.enter(snap=True)`` loads the
weights into CPU memory in bfloat16 (no GPU exists in that phase, and nothing touches CUDA)
and ``@modal.enter(snap=False)`` resolves the device, moves them to the GPU and warms up.
Optional web endpoints (``GENROUTER_MODAL_WEB=1``): ``web`` (POST JSON), ``health`` (GET)
behind Modal's proxy auth, and ``downloads`` (GET, signed links) with an output Volume.

Importing this file needs ``modal`` but no credentials, no network and no torch. (No
``from __future__ import annotations``: modal reads ``modal.parameter`` types at import.)
"""

import base64
import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import modal

HERE = Path(__file__).resolve().parent
"""This folder locally; ``/root`` in the container, where the service files are copied."""
SERVICE_FILES = (
    "service.py",
    "_batching.py",
    "_checkpoints.py",
    "_config.py",
    "_deploy.py",
    "_loras.py",
    "_media.py",
    "_models.py",
    "_outputs.py",
    "_requests.py",
    "_webhooks.py",
    "random_models.py",
)
"""What both images carry besides this file (the web functions import ``service.py`` too)."""
WEIGHTS_PATH = "/weights"
LORAS_PATH = "/loras"
CHECKPOINTS_PATH = f"{WEIGHTS_PATH}/checkpoints"
COMPILE_CACHE_PATH = "/compile-cache"
OUTPUTS_PATH = "/outputs"
SETTINGS_ENV = "GENROUTER_MODAL_SETTINGS"
"""The image environment variable holding the deploy-time settings as JSON."""
VIDEO_MODELS = ("wan-t2v", "wan-i2v")


# _deploy.py: the module loader and settings parsing both Modal apps share (stateless, so run here).
_deploy_spec = importlib.util.spec_from_file_location("genrouter_modal.deploy", HERE / "_deploy.py")
assert _deploy_spec is not None
assert _deploy_spec.loader is not None
_deploy = importlib.util.module_from_spec(_deploy_spec)
_deploy_spec.loader.exec_module(_deploy)
_flag, _int = _deploy.env_flag, _deploy.env_int
service = _deploy.load_file("genrouter_modal.service", HERE / "service.py")


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    """Deploy-time settings: ``GENROUTER_MODAL_*`` variables (see README.md for each)."""

    app_name: str = "genrouter-diffusion"
    gpus: tuple[str, ...] = ("H100", "A100-80GB")
    region: tuple[str, ...] = ()
    cpu: float = 4.0
    memory_mib: int = 32768
    timeout_s: int = 600
    video_timeout_s: int = 1800
    startup_timeout_s: int = 1800
    scaledown_window_s: int = 300
    min_containers: int = 0
    max_containers: int = 4
    buffer_containers: int = 0
    retries: int = 0
    memory_snapshot: bool = True
    gpu_snapshot: bool = False
    max_batch_size: int = 4
    wait_ms: int = 50
    max_inputs: int = 0
    """Inputs one image container takes at once (``@modal.concurrent``); 0: twice ``max_batch_size``."""
    video: bool = True
    video_max_containers: int = 2
    weights_volume: str = "genrouter-weights"
    loras_volume: str = "genrouter-loras"
    compile_cache_volume: str = "genrouter-compile-cache"
    secret: str = "genrouter-hf"
    webhook_secret: str = ""
    outputs_volume: str = ""
    public_url: str = ""
    web: bool = False
    web_proxy_auth: bool = True
    python_version: str = "3.11"
    packages: tuple[str, ...] = (
        "torch==2.13.0",
        "diffusers==0.42.1",
        "transformers==5.24.0",
        "peft==0.21.2",
        "accelerate==1.15.0",
        "safetensors==0.8.0",
        "pillow==13.0.0",
        "numpy<3",
        "av",
        "ftfy",
    )
    service_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def concurrent_inputs(self) -> int:
        """``max_inputs`` of the image class: as set, else twice the batch (one batch runs, one gathers)."""
        return self.max_inputs or 2 * self.max_batch_size

    def to_json(self) -> str:
        """These settings as JSON (what the images carry in ``GENROUTER_MODAL_SETTINGS``)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DeploySettings":
        """The settings :meth:`to_json` wrote."""
        values = json.loads(text)
        for field in dataclasses.fields(cls):
            if isinstance(values.get(field.name), list):
                values[field.name] = tuple(values[field.name])
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DeploySettings":
        """Settings from the environment; unset variables keep the defaults above.

        Inside a container the image's ``GENROUTER_MODAL_SETTINGS`` holds the deploy's
        settings, and wins over everything else: a container must define exactly what was
        deployed (the same functions and dependencies), whatever else its environment holds.
        """
        env = os.environ if environ is None else environ
        baked = env.get(SETTINGS_ENV)
        if baked:
            return cls.from_json(baked)
        d = cls()

        def items(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = env.get(key)
            return default if value is None else tuple(x.strip() for x in value.split(",") if x.strip())

        gpus = items("GENROUTER_MODAL_GPU", d.gpus)
        if not gpus:
            raise ValueError("GENROUTER_MODAL_GPU is empty; name a GPU type such as H100")

        max_batch_size = _int(env, "GENROUTER_MODAL_MAX_BATCH_SIZE", d.max_batch_size)
        service_env = {
            k: v for k, v in env.items() if k in service.ENV_VARIABLES or k.startswith("GENROUTER_SOURCE_")
        }
        service_env.setdefault("GENROUTER_MAX_BATCH_SIZE", str(max_batch_size))
        wait_ms = _int(env, "GENROUTER_MODAL_WAIT_MS", d.wait_ms)
        service_env.setdefault("GENROUTER_BATCH_WAIT_MS", str(wait_ms))
        public_url = env.get("GENROUTER_MODAL_PUBLIC_URL", d.public_url)
        if public_url:
            service_env.setdefault("GENROUTER_PUBLIC_URL", public_url)
        return cls(
            app_name=env.get("GENROUTER_MODAL_APP", d.app_name),
            gpus=gpus,
            region=items("GENROUTER_MODAL_REGION", d.region),
            cpu=float(env.get("GENROUTER_MODAL_CPU", d.cpu)),
            memory_mib=_int(env, "GENROUTER_MODAL_MEMORY_MIB", d.memory_mib),
            timeout_s=_int(env, "GENROUTER_MODAL_TIMEOUT_S", d.timeout_s),
            video_timeout_s=max(1800, _int(env, "GENROUTER_MODAL_VIDEO_TIMEOUT_S", d.video_timeout_s)),
            startup_timeout_s=_int(env, "GENROUTER_MODAL_STARTUP_TIMEOUT_S", d.startup_timeout_s),
            scaledown_window_s=_int(env, "GENROUTER_MODAL_SCALEDOWN_WINDOW_S", d.scaledown_window_s),
            min_containers=_int(env, "GENROUTER_MODAL_MIN_CONTAINERS", d.min_containers),
            max_containers=_int(env, "GENROUTER_MODAL_MAX_CONTAINERS", d.max_containers),
            buffer_containers=_int(env, "GENROUTER_MODAL_BUFFER_CONTAINERS", d.buffer_containers),
            retries=_int(env, "GENROUTER_MODAL_RETRIES", d.retries),
            memory_snapshot=_flag(env, "GENROUTER_MODAL_MEMORY_SNAPSHOT", d.memory_snapshot),
            gpu_snapshot=_flag(env, "GENROUTER_MODAL_GPU_SNAPSHOT", d.gpu_snapshot),
            max_batch_size=max_batch_size,
            wait_ms=wait_ms,
            max_inputs=_int(env, "GENROUTER_MODAL_MAX_INPUTS", d.max_inputs),
            video=_flag(env, "GENROUTER_MODAL_VIDEO", d.video),
            video_max_containers=_int(env, "GENROUTER_MODAL_VIDEO_MAX_CONTAINERS", d.video_max_containers),
            weights_volume=env.get("GENROUTER_MODAL_WEIGHTS_VOLUME", d.weights_volume),
            loras_volume=env.get("GENROUTER_MODAL_LORAS_VOLUME", d.loras_volume),
            compile_cache_volume=env.get("GENROUTER_MODAL_COMPILE_CACHE_VOLUME", d.compile_cache_volume),
            secret=env.get("GENROUTER_MODAL_SECRET", d.secret),
            webhook_secret=env.get("GENROUTER_MODAL_WEBHOOK_SECRET", d.webhook_secret),
            outputs_volume=env.get("GENROUTER_MODAL_OUTPUTS_VOLUME", d.outputs_volume),
            public_url=public_url,
            web=_flag(env, "GENROUTER_MODAL_WEB", d.web),
            web_proxy_auth=_flag(env, "GENROUTER_MODAL_WEB_PROXY_AUTH", d.web_proxy_auth),
            python_version=env.get("GENROUTER_MODAL_PYTHON", d.python_version),
            packages=items("GENROUTER_MODAL_PACKAGES", d.packages),
            service_env=service_env,
        )


SETTINGS = DeploySettings.from_env()

app = modal.App(SETTINGS.app_name)

weights_volume = modal.Volume.from_name(SETTINGS.weights_volume, create_if_missing=True)
loras_volume = modal.Volume.from_name(SETTINGS.loras_volume, create_if_missing=True)
compile_cache_volume = modal.Volume.from_name(SETTINGS.compile_cache_volume, create_if_missing=True)
outputs_volume = (
    modal.Volume.from_name(SETTINGS.outputs_volume, create_if_missing=True)
    if SETTINGS.outputs_volume
    else None
)

IMAGE_ENV: dict[str, str] = {
    "HF_HUB_CACHE": f"{WEIGHTS_PATH}/hf",
    "HF_XET_HIGH_PERFORMANCE": "1",
    "TORCHINDUCTOR_CACHE_DIR": f"{COMPILE_CACHE_PATH}/inductor",
    "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
    "TRITON_CACHE_DIR": f"{COMPILE_CACHE_PATH}/triton",
    "GENROUTER_WEIGHTS_DIR": WEIGHTS_PATH,
    "GENROUTER_LORA_DIR": LORAS_PATH,
    "GENROUTER_CHECKPOINT_DIR": CHECKPOINTS_PATH,
    **({"GENROUTER_OUTPUT_DIR": OUTPUTS_PATH} if SETTINGS.outputs_volume else {}),
    **SETTINGS.service_env,
    SETTINGS_ENV: SETTINGS.to_json(),
}
"""The environment both images carry: what a container reads instead of the deploy's environment."""


def _with_service_files(base: Any) -> Any:
    for name in SERVICE_FILES:
        base = base.add_local_file(HERE / name, f"/root/{name}")
    return base


image = _with_service_files(
    modal.Image.debian_slim(python_version=SETTINGS.python_version)
    .apt_install("gcc", "g++")  # Triton builds its launcher with the system compiler (torch.compile)
    .uv_pip_install(*SETTINGS.packages)
    .env(IMAGE_ENV)
)

VOLUMES: dict[str, Any] = {
    WEIGHTS_PATH: weights_volume,
    LORAS_PATH: loras_volume,
    COMPILE_CACHE_PATH: compile_cache_volume,
    **({OUTPUTS_PATH: outputs_volume} if outputs_volume is not None else {}),
}
SECRETS: list[Any] = [
    modal.Secret.from_name(name) for name in (SETTINGS.secret, SETTINGS.webhook_secret) if name
]
"""The HF token secret and the webhook signing secret (``GENROUTER_WEBHOOK_SECRET``), when named."""

CLS_OPTIONS: dict[str, Any] = {
    "image": image,
    "gpu": list(SETTINGS.gpus) if len(SETTINGS.gpus) > 1 else SETTINGS.gpus[0],
    "volumes": VOLUMES,
    "secrets": SECRETS,
    "cpu": SETTINGS.cpu,
    "memory": SETTINGS.memory_mib,
    "timeout": SETTINGS.timeout_s,
    "startup_timeout": SETTINGS.startup_timeout_s,
    "scaledown_window": SETTINGS.scaledown_window_s,
    "min_containers": SETTINGS.min_containers,
    "max_containers": SETTINGS.max_containers,
    "buffer_containers": SETTINGS.buffer_containers,
    "enable_memory_snapshot": SETTINGS.memory_snapshot,
}
"""The image class's ``@app.cls`` arguments: modal 1.6 names only (a test checks them against the SDK)."""
if SETTINGS.retries:
    CLS_OPTIONS["retries"] = modal.Retries(max_retries=SETTINGS.retries, initial_delay=1.0)
if SETTINGS.region:
    CLS_OPTIONS["region"] = list(SETTINGS.region)
if SETTINGS.gpu_snapshot:
    CLS_OPTIONS["experimental_options"] = {"enable_gpu_snapshot": True}

CONCURRENCY_OPTIONS: dict[str, Any] = {
    "max_inputs": SETTINGS.concurrent_inputs,
    "target_inputs": min(SETTINGS.max_batch_size, SETTINGS.concurrent_inputs),
}
"""The arguments of ``@modal.concurrent``: a batch runs while the next one gathers."""

VIDEO_CLS_OPTIONS: dict[str, Any] = {
    **CLS_OPTIONS,
    "timeout": SETTINGS.video_timeout_s,
    "max_containers": SETTINGS.video_max_containers,
    "min_containers": 0,
    "buffer_containers": 0,
}
"""``Video``: one request per input (no concurrency), with a timeout of at least 30 minutes."""


def _reload_loras() -> None:
    """Make LoRAs and checkpoints uploaded after the container started visible (called on a miss)."""
    for volume in (loras_volume, weights_volume):
        try:
            volume.reload()
        except Exception as exc:  # a local run has no Volume; a busy one retries on the next miss
            print(f"genrouter: volume reload failed: {exc}", file=sys.stderr)


class _Serving:
    """The lifecycle both classes share: plain methods, and the Modal hooks that call them."""

    model_id: str
    service: Any
    _video: bool = False

    def _create(self) -> None:
        self._started = time.monotonic()
        overrides: dict[str, Any] = {"models": (self.model_id,)} if self.model_id else {}
        if self._video:
            overrides.setdefault("models", VIDEO_MODELS)
            overrides["max_batch_size"] = 1
        self.service = service.DiffusionService(
            service.ServiceConfig.from_env(**overrides), on_lora_miss=_reload_loras
        )
        self.service.load_cpu()
        if not self.service.config.random_weights:
            try:  # keep what the first container downloaded into the HF cache on the Volume
                weights_volume.commit()
            except Exception as exc:  # a local run has no Volume
                print(f"genrouter: weights volume commit failed: {exc}", file=sys.stderr)

    def _start(self) -> None:
        started = getattr(self, "_started", None)
        if started is None or SETTINGS.memory_snapshot:
            started = time.monotonic()  # restored from a snapshot: this container's start begins here
        self.service.to_device()
        self.service.start()
        self.service.cold_start_s = time.monotonic() - started
        if self.service.config.compile:
            try:  # keep the compiled kernels for the next container
                compile_cache_volume.commit()
            except Exception as exc:
                print(f"genrouter: compile cache commit failed: {exc}", file=sys.stderr)

    async def _serve(self, request: dict[str, Any]) -> dict[str, Any]:
        call_id = modal.current_function_call_id()
        result: dict[str, Any] = await self.service.agenerate(request, call_id=call_id)
        if outputs_volume is not None and result.get("output_paths"):
            try:  # make the written outputs visible to the downloads endpoint and `modal volume get`
                await outputs_volume.commit.aio()
            except Exception as exc:
                print(f"genrouter: outputs volume commit failed: {exc}", file=sys.stderr)
        return result

    # The Modal lifecycle hooks both classes inherit (modal collects them along the MRO).
    if SETTINGS.memory_snapshot:

        @modal.enter(snap=True)
        def load(self) -> None:
            """Load weights into CPU memory (bf16; no CUDA), and onto the GPU with GPU snapshots."""
            self._create()
            if SETTINGS.gpu_snapshot:
                self.service.to_device()

        @modal.enter(snap=False)
        def start(self) -> None:
            """After the restore: resolve the device, move to it, warm up, start serving."""
            self._start()

    else:

        @modal.enter()
        def load_and_start(self) -> None:
            """Load the weights, move them to the GPU and start serving."""
            self._create()
            self._start()

    @modal.exit()
    def stop(self) -> None:
        """Finish queued or running work and stop the service's threads."""
        self.service.close()


@app.cls(**CLS_OPTIONS)
@modal.concurrent(**CONCURRENCY_OPTIONS)
class Diffusion(_Serving):
    """The image class genrouter's Modal backend calls: ``Diffusion(model_id=...).generate``."""

    model_id: str = modal.parameter(default="")
    """The model this container serves; empty: every model in ``GENROUTER_MODELS``."""

    @modal.method()
    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """One result dict per request dict (an ``{"error": ...}`` dict for a failed one)."""
        return await self._serve(request)


if SETTINGS.video:

    @app.cls(**VIDEO_CLS_OPTIONS)
    class Video(_Serving):
        """The video class: one request per input, ``timeout`` ≥ 30 min (``Video(model_id=...).generate``)."""

        model_id: str = modal.parameter(default="")
        """The video model this container serves; empty: ``wan-t2v`` and ``wan-i2v``."""
        _video = True

        @modal.method()
        async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
            """One video request; its result dict (an ``{"error": ...}`` dict when it failed)."""
            return await self._serve(request)


WEB_IMAGE_PACKAGES = ("fastapi[standard]",)
if SETTINGS.web:
    web_image = _with_service_files(
        modal.Image.debian_slim(python_version=SETTINGS.python_version)
        .uv_pip_install(*WEB_IMAGE_PACKAGES)
        .env(IMAGE_ENV)
    )
    """The web functions' image: this file imports ``service.py``, so it carries the service files."""

    @app.function(image=web_image, timeout=max(SETTINGS.timeout_s, SETTINGS.video_timeout_s))
    @modal.fastapi_endpoint(method="POST", requires_proxy_auth=SETTINGS.web_proxy_auth, docs=False)
    async def web(body: dict[str, Any]) -> Any:
        """JSON in (``image`` as base64), JSON out (``outputs`` as base64): the classes over HTTP."""
        from fastapi.responses import JSONResponse

        request = dict(body)
        if isinstance(request.get("image"), str):
            request["image"] = base64.b64decode(request["image"])
        model = str(request.get("model", ""))
        target = Video if SETTINGS.video and model in VIDEO_MODELS else Diffusion
        result = await target(model_id=model).generate.remote.aio(request)
        if "error" in result:
            status = 422 if result["error"].get("type") == "ValueError" else 500
            return JSONResponse(result, status_code=status)
        result["outputs"] = [base64.b64encode(data).decode("ascii") for data in result["outputs"]]
        return result

    @app.function(image=web_image)
    @modal.fastapi_endpoint(method="GET", requires_proxy_auth=SETTINGS.web_proxy_auth, docs=False)
    def health() -> dict[str, Any]:
        """Liveness of the deployment without touching a GPU: its app, classes and settings."""
        return {
            "ok": True,
            "app": SETTINGS.app_name,
            "classes": ["Diffusion", *(["Video"] if SETTINGS.video else [])],
            "gpus": list(SETTINGS.gpus),
            "max_batch_size": SETTINGS.max_batch_size,
            "webhooks": bool(SETTINGS.webhook_secret),
            "outputs_volume": SETTINGS.outputs_volume or None,
        }

    if outputs_volume is not None:

        @app.function(
            image=web_image,
            volumes={OUTPUTS_PATH: outputs_volume},
            secrets=[modal.Secret.from_name(SETTINGS.webhook_secret)] if SETTINGS.webhook_secret else [],
        )
        @modal.fastapi_endpoint(method="GET", docs=False)
        def downloads(path: str, expires: str, sig: str) -> Any:
            """A file of the output Volume, for a signed link (no proxy auth: the link is the key)."""
            from fastapi import HTTPException
            from fastapi.responses import FileResponse

            secret = os.environ.get(service._webhooks.SECRET_ENV, "")
            try:
                outputs_volume.reload()
                target = service._outputs.verify_download(OUTPUTS_PATH, secret, path, expires, sig)
            except PermissionError as exc:
                raise HTTPException(status_code=403, detail=str(exc)) from None
            except FileNotFoundError:
                raise HTTPException(status_code=404, detail="no such output") from None
            return FileResponse(target)
