"""genrouter's Modal GPU class, a thin wrapper over ``service.py``: ``modal deploy deploy/modal/app.py``.

Everything that shapes the deployment is read from ``GENROUTER_MODAL_*`` environment
variables when this file is imported (at deploy time): Modal fixes decorator arguments
per deploy. Service settings (``GENROUTER_*``, see ``service.py``) are copied into the
image's environment. ``README.md`` beside this file documents each one.

Shape: ``Diffusion`` is an ``@app.cls`` with one ``@modal.batched`` method,
``generate(requests: list[dict]) -> list[dict]``; callers spawn it with one request
dict each and Modal batches them. ``model_id`` (a ``modal.parameter``) selects the
model a container loads, so each model autoscales as its own pool. With memory
snapshots on, ``@modal.enter(snap=True)`` loads weights into CPU memory (no GPU
exists in that phase) and ``@modal.enter(snap=False)`` moves them to the GPU; with GPU
snapshots (alpha; off by default) both happen before the snapshot. An optional web
endpoint (``GENROUTER_MODAL_WEB=1``) accepts JSON behind Modal's proxy auth.

Importing this file needs ``modal`` but no credentials, no network and no torch. (No
``from __future__ import annotations``: modal reads ``modal.parameter`` types at import.)
"""

import base64
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import modal

HERE = Path(__file__).resolve().parent
"""This folder locally; ``/root`` in the container, where the service files are copied."""
SERVICE_FILES = ("service.py", "_batching.py", "_loras.py", "_media.py", "_requests.py", "random_models.py")
WEIGHTS_PATH = "/weights"
LORAS_PATH = "/loras"
COMPILE_CACHE_PATH = "/compile-cache"


def _load_service() -> Any:
    """``service.py`` beside this file (``deploy/`` is not a package, and need not be installed)."""
    name = "genrouter_modal.service"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "service.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"service.py not found beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


service = _load_service()


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    value = env.get(key)
    return default if not value else value.strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    return default if not value else int(value)


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    """Deploy-time settings: ``GENROUTER_MODAL_*`` variables (see README.md for each)."""

    app_name: str = "genrouter-diffusion"
    gpus: tuple[str, ...] = ("H100", "A100-80GB")
    region: tuple[str, ...] = ()
    cpu: float = 4.0
    memory_mib: int = 32768
    timeout_s: int = 600
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
    weights_volume: str = "genrouter-weights"
    loras_volume: str = "genrouter-loras"
    compile_cache_volume: str = "genrouter-compile-cache"
    secret: str = "genrouter-hf"
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
    )
    service_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DeploySettings":
        """Settings from the environment; unset variables keep the defaults above."""
        env = os.environ if environ is None else environ
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
        return cls(
            app_name=env.get("GENROUTER_MODAL_APP", d.app_name),
            gpus=gpus,
            region=items("GENROUTER_MODAL_REGION", d.region),
            cpu=float(env.get("GENROUTER_MODAL_CPU", d.cpu)),
            memory_mib=_int(env, "GENROUTER_MODAL_MEMORY_MIB", d.memory_mib),
            timeout_s=_int(env, "GENROUTER_MODAL_TIMEOUT_S", d.timeout_s),
            startup_timeout_s=_int(env, "GENROUTER_MODAL_STARTUP_TIMEOUT_S", d.startup_timeout_s),
            scaledown_window_s=_int(env, "GENROUTER_MODAL_SCALEDOWN_WINDOW_S", d.scaledown_window_s),
            min_containers=_int(env, "GENROUTER_MODAL_MIN_CONTAINERS", d.min_containers),
            max_containers=_int(env, "GENROUTER_MODAL_MAX_CONTAINERS", d.max_containers),
            buffer_containers=_int(env, "GENROUTER_MODAL_BUFFER_CONTAINERS", d.buffer_containers),
            retries=_int(env, "GENROUTER_MODAL_RETRIES", d.retries),
            memory_snapshot=_flag(env, "GENROUTER_MODAL_MEMORY_SNAPSHOT", d.memory_snapshot),
            gpu_snapshot=_flag(env, "GENROUTER_MODAL_GPU_SNAPSHOT", d.gpu_snapshot),
            max_batch_size=max_batch_size,
            wait_ms=_int(env, "GENROUTER_MODAL_WAIT_MS", d.wait_ms),
            weights_volume=env.get("GENROUTER_MODAL_WEIGHTS_VOLUME", d.weights_volume),
            loras_volume=env.get("GENROUTER_MODAL_LORAS_VOLUME", d.loras_volume),
            compile_cache_volume=env.get("GENROUTER_MODAL_COMPILE_CACHE_VOLUME", d.compile_cache_volume),
            secret=env.get("GENROUTER_MODAL_SECRET", d.secret),
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

image = (
    modal.Image.debian_slim(python_version=SETTINGS.python_version)
    .apt_install("gcc", "g++")  # Triton builds its launcher with the system compiler (torch.compile)
    .uv_pip_install(*SETTINGS.packages)
    .env(
        {
            "HF_HUB_CACHE": f"{WEIGHTS_PATH}/hf",
            "HF_XET_HIGH_PERFORMANCE": "1",
            "TORCHINDUCTOR_CACHE_DIR": f"{COMPILE_CACHE_PATH}/inductor",
            "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
            "TRITON_CACHE_DIR": f"{COMPILE_CACHE_PATH}/triton",
            "GENROUTER_WEIGHTS_DIR": WEIGHTS_PATH,
            "GENROUTER_LORA_DIR": LORAS_PATH,
            **SETTINGS.service_env,
        }
    )
)
for _name in SERVICE_FILES:
    image = image.add_local_file(HERE / _name, f"/root/{_name}")

CLS_OPTIONS: dict[str, Any] = {
    "image": image,
    "gpu": list(SETTINGS.gpus) if len(SETTINGS.gpus) > 1 else SETTINGS.gpus[0],
    "volumes": {
        WEIGHTS_PATH: weights_volume,
        LORAS_PATH: loras_volume,
        COMPILE_CACHE_PATH: compile_cache_volume,
    },
    "secrets": [modal.Secret.from_name(SETTINGS.secret)] if SETTINGS.secret else [],
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
"""The arguments of ``@app.cls``: modal 1.6 names only (a test checks them against the SDK)."""
if SETTINGS.retries:
    CLS_OPTIONS["retries"] = modal.Retries(max_retries=SETTINGS.retries, initial_delay=1.0)
if SETTINGS.region:
    CLS_OPTIONS["region"] = list(SETTINGS.region)
if SETTINGS.gpu_snapshot:
    CLS_OPTIONS["experimental_options"] = {"enable_gpu_snapshot": True}

BATCH_OPTIONS: dict[str, Any] = {"max_batch_size": SETTINGS.max_batch_size, "wait_ms": SETTINGS.wait_ms}
"""The arguments of ``@modal.batched``."""


def _reload_loras() -> None:
    """Make LoRAs uploaded after the container started visible (called on a LoRA miss)."""
    try:
        loras_volume.reload()
    except Exception as exc:  # a local run has no Volume; a busy one retries on the next miss
        print(f"genrouter: LoRA volume reload failed: {exc}", file=sys.stderr)


@app.cls(**CLS_OPTIONS)
class Diffusion:
    """The GPU class genrouter's Modal backend calls: ``Diffusion(model_id=...).generate``."""

    model_id: str = modal.parameter(default="")
    """The model this container serves; empty: every model in ``GENROUTER_MODELS``."""

    def _create(self) -> None:
        overrides = {"models": (self.model_id,)} if self.model_id else {}
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
        self.service.to_device()
        self.service.start()
        if self.service.config.compile:
            try:  # keep the compiled kernels for the next container
                compile_cache_volume.commit()
            except Exception as exc:
                print(f"genrouter: compile cache commit failed: {exc}", file=sys.stderr)

    if SETTINGS.memory_snapshot:

        @modal.enter(snap=True)
        def load(self) -> None:
            """Load weights into CPU memory (and onto the GPU with GPU snapshots) before the snapshot."""
            self._create()
            if SETTINGS.gpu_snapshot:
                self.service.to_device()

        @modal.enter(snap=False)
        def start(self) -> None:
            """After the restore: move to the GPU (unless the snapshot has it) and start serving."""
            self._start()

    else:

        @modal.enter()
        def load_and_start(self) -> None:
            """Load the weights, move them to the GPU and start serving."""
            self._create()
            self._start()

    @modal.batched(**BATCH_OPTIONS)
    def generate(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result dict per request dict (an ``{"error": ...}`` dict for a failed one)."""
        results: list[dict[str, Any]] = self.service.generate_many(requests)
        return results

    @modal.exit()
    def stop(self) -> None:
        """Finish queued work and stop the service's threads."""
        self.service.close()


if SETTINGS.web:
    web_image = modal.Image.debian_slim(python_version=SETTINGS.python_version).uv_pip_install(
        "fastapi[standard]"
    )

    @app.function(image=web_image, timeout=SETTINGS.timeout_s)
    @modal.fastapi_endpoint(method="POST", requires_proxy_auth=SETTINGS.web_proxy_auth, docs=False)
    async def web(body: dict[str, Any]) -> Any:
        """JSON in (``image`` as base64), JSON out (``outputs`` as base64): the class over HTTP."""
        from fastapi.responses import JSONResponse

        request = dict(body)
        if isinstance(request.get("image"), str):
            request["image"] = base64.b64decode(request["image"])
        result = await Diffusion(model_id=str(request.get("model", ""))).generate.remote.aio(request)
        if "error" in result:
            status = 422 if result["error"].get("type") == "ValueError" else 500
            return JSONResponse(result, status_code=status)
        result["outputs"] = [base64.b64encode(data).decode("ascii") for data in result["outputs"]]
        return result
