"""genrouter's self-hosted ComfyUI class, a thin Modal wrapper over ``service.py``.

Deploy: ``modal deploy deploy/modal/comfy/app.py``.

Shape (Modal's ComfyUI pattern): ``ComfyUI`` is an ``@app.cls`` on an L40S with
``@modal.concurrent(max_inputs=5)`` and ``scaledown_window=300``. ComfyUI is installed in
the image with ``comfy-cli`` and launched once per container in ``@modal.enter``; the
service then talks to it over ``http://127.0.0.1:8188``. Workflows (API-format JSON),
models and custom nodes are read from one Volume mounted at ``/comfy-data``::

    /comfy-data/workflows/<name>.json     # the workflow a deployment's endpoint names
    /comfy-data/models/checkpoints/...     # ComfyUI's model folders (via extra_model_paths.yaml)
    /comfy-data/custom_nodes/...           # custom nodes without extra pip dependencies

``model_id`` (a ``modal.parameter``) is the workflow name, so each workflow autoscales as
its own pool and its checkpoints stay loaded in that pool's ComfyUI. genrouter's Modal
backend calls ``ComfyUI(model_id=<workflow>).generate`` (the same method name as the
diffusion class); ``run_workflow`` is the same call for direct users. ``health`` is a web
endpoint (behind Modal's proxy auth) reporting ComfyUI's queue and devices.

Snapshots: ComfyUI checks for a GPU at start-up, which fails in the CPU-only snapshot
phase (modal-client #1997), so by default the server starts in a plain ``@modal.enter``.
``GENROUTER_COMFY_GPU_SNAPSHOT=1`` launches it inside ``@modal.enter(snap=True)`` with
Modal's (alpha) GPU snapshots, so restored containers skip ComfyUI's start and model load.

Deploy-time settings are ``GENROUTER_COMFY_*`` variables read at import (``README.md``).
Importing this file needs ``modal`` but no credentials, no network and no ComfyUI. (No
``from __future__ import annotations``: modal reads ``modal.parameter`` types at import.)
"""

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
DATA_PATH = "/comfy-data"
COMFY_PORT = 8188
EXTRA_MODEL_PATHS = "/root/extra_model_paths.yaml"


def _shared(name: str) -> Path:
    """A file shared with the diffusion app: beside this file in a container, one folder up in a checkout."""
    return HERE / name if (HERE / name).is_file() else HERE.parent / name


DEPLOY_FILE = _shared("_deploy.py")
WEBHOOKS_FILE = _shared("_webhooks.py")
# _deploy.py: the module loader and settings parsing both Modal apps share (stateless, so run here).
_deploy_spec = importlib.util.spec_from_file_location("genrouter_modal.deploy", DEPLOY_FILE)
assert _deploy_spec is not None
assert _deploy_spec.loader is not None
_deploy = importlib.util.module_from_spec(_deploy_spec)
_deploy_spec.loader.exec_module(_deploy)
_flag, _int = _deploy.env_flag, _deploy.env_int
service = _deploy.load_file("genrouter_modal.comfy_service", HERE / "service.py")


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    """Deploy-time settings: ``GENROUTER_COMFY_*`` variables (see README.md)."""

    app_name: str = "genrouter-comfy"
    gpu: str = "L40S"
    max_inputs: int = 5
    scaledown_window_s: int = 300
    timeout_s: int = 900
    startup_timeout_s: int = 900
    min_containers: int = 0
    max_containers: int = 4
    volume: str = "genrouter-comfy"
    secret: str = ""
    """A Modal Secret with ``GENROUTER_WEBHOOK_SECRET`` (and e.g. ``HF_TOKEN``); empty: none."""
    gpu_snapshot: bool = False
    python_version: str = "3.11"
    comfy_cli_version: str = "1.5.1"
    comfyui_version: str = "0.3.47"
    nodes: tuple[str, ...] = ()
    """Custom nodes installed into the image with ``comfy node install`` (with their pip deps)."""
    service_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DeploySettings":
        """Settings from the environment; unset variables keep the defaults above."""
        env = os.environ if environ is None else environ
        d = cls()
        nodes = tuple(x.strip() for x in env.get("GENROUTER_COMFY_NODES", "").split(",") if x.strip())
        return cls(
            app_name=env.get("GENROUTER_COMFY_APP", d.app_name),
            gpu=env.get("GENROUTER_COMFY_GPU", d.gpu),
            max_inputs=_int(env, "GENROUTER_COMFY_MAX_INPUTS", d.max_inputs),
            scaledown_window_s=_int(env, "GENROUTER_COMFY_SCALEDOWN_WINDOW_S", d.scaledown_window_s),
            timeout_s=_int(env, "GENROUTER_COMFY_TIMEOUT_S", d.timeout_s),
            startup_timeout_s=_int(env, "GENROUTER_COMFY_STARTUP_TIMEOUT_S", d.startup_timeout_s),
            min_containers=_int(env, "GENROUTER_COMFY_MIN_CONTAINERS", d.min_containers),
            max_containers=_int(env, "GENROUTER_COMFY_MAX_CONTAINERS", d.max_containers),
            volume=env.get("GENROUTER_COMFY_VOLUME", d.volume),
            secret=env.get("GENROUTER_COMFY_SECRET", d.secret),
            gpu_snapshot=_flag(env, "GENROUTER_COMFY_GPU_SNAPSHOT", d.gpu_snapshot),
            python_version=env.get("GENROUTER_COMFY_PYTHON", d.python_version),
            comfy_cli_version=env.get("GENROUTER_COMFY_CLI_VERSION", d.comfy_cli_version),
            comfyui_version=env.get("GENROUTER_COMFYUI_VERSION", d.comfyui_version),
            nodes=nodes,
            service_env={
                k: v
                for k, v in env.items()
                if k in service.ENV_VARIABLES and k != "GENROUTER_WEBHOOK_SECRET"  # secrets via a Secret
            },
        )


SETTINGS = DeploySettings.from_env()

app = modal.App(SETTINGS.app_name)
volume = modal.Volume.from_name(SETTINGS.volume, create_if_missing=True)

image = (
    modal.Image.debian_slim(python_version=SETTINGS.python_version)
    .apt_install("git")
    .uv_pip_install(f"comfy-cli=={SETTINGS.comfy_cli_version}", "fastapi[standard]")
    .run_commands(f"comfy --skip-prompt install --fast-deps --nvidia --version {SETTINGS.comfyui_version}")
)
if SETTINGS.nodes:
    image = image.run_commands(f"comfy node install --fast-deps {' '.join(SETTINGS.nodes)}")
image = (
    image.env(
        {
            "GENROUTER_COMFY_URL": f"http://127.0.0.1:{COMFY_PORT}",
            "GENROUTER_COMFY_WORKFLOWS_DIR": f"{DATA_PATH}/workflows",
            "GENROUTER_COMFY_LAUNCH": (
                f"comfy launch -- --listen 127.0.0.1 --port {COMFY_PORT} "
                f"--extra-model-paths-config {EXTRA_MODEL_PATHS}"
            ),
            **SETTINGS.service_env,
        }
    )
    .add_local_file(HERE / "service.py", "/root/service.py")
    .add_local_file(WEBHOOKS_FILE, "/root/_webhooks.py")
    .add_local_file(DEPLOY_FILE, "/root/_deploy.py")
)

CLS_OPTIONS: dict[str, Any] = {
    "image": image,
    "gpu": SETTINGS.gpu,
    "volumes": {DATA_PATH: volume},
    "secrets": [modal.Secret.from_name(SETTINGS.secret)] if SETTINGS.secret else [],
    "timeout": SETTINGS.timeout_s,
    "startup_timeout": SETTINGS.startup_timeout_s,
    "scaledown_window": SETTINGS.scaledown_window_s,
    "min_containers": SETTINGS.min_containers,
    "max_containers": SETTINGS.max_containers,
}
"""The arguments of ``@app.cls``: modal 1.6 names only (a test checks them against the SDK)."""
if SETTINGS.gpu_snapshot:
    CLS_OPTIONS["enable_memory_snapshot"] = True
    CLS_OPTIONS["experimental_options"] = {"enable_gpu_snapshot": True}

CONCURRENT_OPTIONS: dict[str, Any] = {"max_inputs": SETTINGS.max_inputs}
"""The arguments of ``@modal.concurrent``."""


def write_extra_model_paths(path: str = EXTRA_MODEL_PATHS, data: str = DATA_PATH) -> None:
    """Point ComfyUI's model folders and custom nodes at the Volume."""
    folders = (
        "checkpoints",
        "loras",
        "vae",
        "controlnet",
        "clip",
        "clip_vision",
        "unet",
        "diffusion_models",
        "text_encoders",
        "upscale_models",
        "embeddings",
    )
    lines = [
        "genrouter:",
        f"  base_path: {data}/models",
        *(f"  {f}: {f}" for f in folders),
        f"  custom_nodes: {data}/custom_nodes",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _reload_volume() -> None:
    """Make workflows uploaded after the container started visible (called on a miss)."""
    try:
        volume.reload()
    except Exception as exc:  # a local run has no Volume
        print(f"genrouter comfy: volume reload failed: {exc}", file=sys.stderr)


@app.cls(**CLS_OPTIONS)
@modal.concurrent(**CONCURRENT_OPTIONS)
class ComfyUI:
    """The class genrouter's Modal backend calls: ``ComfyUI(model_id=<workflow>).generate``."""

    model_id: str = modal.parameter(default="")
    """The workflow this container's pool serves (any workflow on the Volume runs)."""

    def _launch(self) -> None:
        write_extra_model_paths()
        self.service = service.ComfyService(
            service.ComfyConfig.from_env(), on_workflow_miss=_reload_volume
        ).start()

    if SETTINGS.gpu_snapshot:

        @modal.enter(snap=True)
        def launch(self) -> None:
            """Start ComfyUI (on the GPU, which GPU snapshots provide) before the snapshot."""
            self._launch()

    else:

        @modal.enter()
        def launch(self) -> None:
            """Start ComfyUI once per container and wait until it answers."""
            self._launch()

    @modal.method()
    def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """One workflow run (``service.ComfyService.run_workflow``): the entry point genrouter calls."""
        result: dict[str, Any] = self.service.run_workflow(request, call_id=modal.current_function_call_id())
        return result

    @modal.method()
    def run_workflow(self, request: dict[str, Any]) -> dict[str, Any]:
        """The same as :meth:`generate`, under the name the service gives it."""
        result: dict[str, Any] = self.service.run_workflow(request, call_id=modal.current_function_call_id())
        return result

    @modal.fastapi_endpoint(method="GET", requires_proxy_auth=True)
    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "queue_running", "queue_pending", "devices"}`` from ComfyUI."""
        report: dict[str, Any] = self.service.health()
        return report

    @modal.exit()
    def stop(self) -> None:
        """Finish running workflows and stop ComfyUI."""
        self.service.close()
