"""deploy/modal/app.py as its containers run it: re-imported with only the image's environment,
the two snapshot phases, the web image, and cancelling one input without touching its batch."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

modal = pytest.importorskip("modal")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from genrouter.testing._modal import SERVICE_PATH, load_service_module  # noqa: E402
from modal_helpers import DEPLOY_DIR, fresh_import, image_files, offline  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

APP_PATH = DEPLOY_DIR / "app.py"


@dataclasses.dataclass
class Imported:
    """One import of app.py: the module and the environments its images were given (in order)."""

    module: ModuleType
    image_envs: list[dict[str, str]]

    def functions(self) -> dict[str, int]:
        """Each registered function's tag and how many object dependencies it has."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # App.registered_functions is deprecated in 1.6
            registered = self.module.app.registered_functions
        return {tag: len(f._deps_(only_explicit_mounts=True)) for tag, f in registered.items()}

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.module.SETTINGS)


def import_app(monkeypatch: pytest.MonkeyPatch) -> Imported:
    """Import app.py under the current environment, recording every Image.env(...) it calls."""
    envs: list[dict[str, str]] = []
    original = modal.Image.env

    def recording_env(self: Any, vars: dict[str, str]) -> Any:
        envs.append(dict(vars))
        return original(self, vars)

    monkeypatch.setattr(modal.Image, "env", recording_env)
    monkeypatch.delitem(sys.modules, "genrouter_modal.service", raising=False)
    module = fresh_import(monkeypatch, APP_PATH, "genrouter_modal_container")
    monkeypatch.setattr(modal.Image, "env", original)
    return Imported(module, envs)


def deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Imported:
    """app.py as `modal deploy` imports it: the deployer's environment plus ``env``."""
    offline(monkeypatch, tmp_path, **env)
    return import_app(monkeypatch)


def in_container(monkeypatch: pytest.MonkeyPatch, image_env: dict[str, str]) -> Imported:
    """app.py as a container imports it: remote mode, and only the image's environment."""
    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager

    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in {**image_env, "MODAL_IS_REMOTE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(_TaskLifecycleManager, "_singleton", object())
    assert not modal.is_local()
    return import_app(monkeypatch)


DEPLOYS = [
    pytest.param({"GENROUTER_MODAL_SECRET": ""}, id="no-secret"),
    pytest.param(
        {
            "GENROUTER_MODAL_GPU_SNAPSHOT": "1",
            "GENROUTER_MODAL_GPU": "H100!",
            "GENROUTER_MODAL_MAX_BATCH_SIZE": "8",
            "GENROUTER_MODELS": "flux-dev",
            "GENROUTER_COMPILE": "1",
        },
        id="gpu-snapshot-compiled",
    ),
    pytest.param(
        {
            "GENROUTER_MODAL_MEMORY_SNAPSHOT": "0",
            "GENROUTER_MODAL_WEBHOOK_SECRET": "genrouter-webhooks",
            "GENROUTER_MODAL_OUTPUTS_VOLUME": "genrouter-outputs",
            "GENROUTER_MODAL_WEB": "1",
        },
        id="webhooks-outputs-web",
    ),
]


@pytest.mark.parametrize("deploy_env", DEPLOYS)
def test_a_container_defines_the_functions_dependencies_and_settings_of_the_deploy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, deploy_env: dict[str, str]
) -> None:
    """Re-imported with only its image's environment, app.py defines what `modal deploy` did."""
    deployed = deploy(monkeypatch, tmp_path, **deploy_env)
    container = in_container(monkeypatch, deployed.image_envs[0])
    assert container.functions() == deployed.functions()
    assert container.settings() == deployed.settings()
    assert container.module.CLS_OPTIONS.keys() == deployed.module.CLS_OPTIONS.keys()
    assert (
        container.module.CLS_OPTIONS["enable_memory_snapshot"]
        == (deployed.module.CLS_OPTIONS["enable_memory_snapshot"])
    )


def test_an_empty_secret_gives_the_same_dependency_count_in_the_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GENROUTER_MODAL_SECRET="" (no HF token): one dependency fewer at deploy and in the container alike."""
    with_secret = deploy(monkeypatch, tmp_path).functions()
    deployed = deploy(monkeypatch, tmp_path, GENROUTER_MODAL_SECRET="")
    container = in_container(monkeypatch, deployed.image_envs[0])
    assert deployed.functions()["Diffusion.*"] == with_secret["Diffusion.*"] - 1
    assert container.functions()["Diffusion.*"] == deployed.functions()["Diffusion.*"]


def test_the_web_function_exists_in_its_own_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The web image's environment alone is enough for its container to define `web` again."""
    deployed = deploy(monkeypatch, tmp_path, GENROUTER_MODAL_WEB="1")
    web_env = deployed.image_envs[-1]
    container = in_container(monkeypatch, web_env)
    assert "web" in container.functions()
    assert container.functions() == deployed.functions()


def test_the_web_image_carries_the_service_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """app.py imports service.py at import time, so the web image holds every service file."""
    deployed = deploy(monkeypatch, tmp_path, GENROUTER_MODAL_WEB="1")
    service_files = {f"/root/{name}" for name in deployed.module.SERVICE_FILES}
    assert "/root/service.py" in service_files
    assert service_files <= image_files(deployed.module.web_image)
    assert service_files <= image_files(deployed.module.image)


# -- the two snapshot phases ----------------------------------------------------------------------


def _no_cuda_init() -> None:
    raise AssertionError("CUDA was initialised in the snapshot phase")


@pytest.fixture
def svc() -> ModuleType:
    return load_service_module(SERVICE_PATH)


def test_snapshot_phase_loads_bf16_on_cpu_and_the_gpu_phase_serves_on_the_device_in_bf16(
    monkeypatch: pytest.MonkeyPatch, svc: ModuleType
) -> None:
    """snap=True: bf16 weights in CPU memory, no CUDA; snap=False: the (faked) GPU, bf16, warmed up."""
    import diffusers

    service = svc.DiffusionService(
        svc.ServiceConfig(models=("sdxl",), random_weights="tiny", device="auto", cpu_threads=1, wait_ms=1)
    )
    # Snapshot phase: no GPU exists, and nothing may initialise CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "_lazy_init", _no_cuda_init)
    service.load_cpu()
    unet = service.models["sdxl"].eager
    assert next(unet.parameters()).dtype is torch.bfloat16
    assert next(unet.parameters()).device.type == "cpu"

    # GPU phase: a (faked) H100 appears; moving to "cuda" lands on the CPU, recorded.
    moves: list[tuple[Any, ...]] = []
    original_to = diffusers.DiffusionPipeline.to

    def fake_to(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        moves.append(args)
        return original_to(pipe, *("cpu" if a == "cuda" else a for a in args), **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "to", fake_to)
    service.to_device()
    service.start()
    try:
        result = service.generate({"prompt": "a fox", "width": 32, "height": 32, "seed": 1})
    finally:
        service.close()
    assert service.device == "cuda"
    assert moves[0][0] == "cuda"
    assert next(unet.parameters()).dtype is torch.bfloat16
    assert service.warmed == [("sdxl", 32, 32, 1)]
    assert result["device"] == "cuda"
    assert result["gpu"] == "H100"


def test_video_vae_stays_float32_when_the_model_serves_in_bf16(svc: ModuleType) -> None:
    """Wan's VAE runs in float32 beside a bf16 transformer (bf16 decoding bands and flickers)."""
    service = svc.DiffusionService(
        svc.ServiceConfig(
            models=("wan-t2v",), random_weights="tiny", device="cpu", dtype="bfloat16", cpu_threads=1
        )
    )
    service.load_cpu()
    service.to_device()
    pipe = service.models["wan-t2v"].pipe
    assert next(pipe.transformer.parameters()).dtype is torch.bfloat16
    assert next(pipe.vae.parameters()).dtype is torch.float32


# -- cancelling one input --------------------------------------------------------------------------


class Gate:
    """Holds the service's GPU thread inside a group until the test releases it."""

    def __init__(self, service: Any) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.groups: list[int] = []
        run = service._generate

        def gated(requests: list[Any]) -> Any:
            self.groups.append(len(requests))
            self.entered.set()
            assert self.release.wait(60)
            return run(requests)

        service._generate = gated


@pytest.fixture
def batching_service(svc: ModuleType) -> Iterator[Any]:
    config = svc.ServiceConfig(
        models=("sdxl",), random_weights="tiny", device="cpu", cpu_threads=1, wait_ms=200, max_batch_size=4
    )
    service = svc.DiffusionService(config).setup()
    yield service
    service.close()


def _request(seed: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": "a fox", "width": 32, "height": 32, "seed": seed, **extra}


async def test_a_running_request_cancelled_finishes_with_its_batch_and_its_mates_succeed(
    batching_service: Any,
) -> None:
    """Cancelling one input of a running batch fails nobody: the batch completes, its result is dropped."""
    gate = Gate(batching_service)
    tasks = [asyncio.ensure_future(batching_service.agenerate(_request(seed))) for seed in (1, 2, 3)]
    assert await asyncio.to_thread(gate.entered.wait, 60)
    tasks[0].cancel()
    await asyncio.sleep(0)
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    mates = await asyncio.gather(*tasks[1:])
    assert [m["seed"] for m in mates] == [2, 3]
    assert all(m["outputs"] for m in mates)
    assert gate.groups == [3]


async def test_a_queued_request_cancelled_never_runs(batching_service: Any) -> None:
    """A request still waiting for the GPU when cancelled is dropped; the running batch is untouched."""
    gate = Gate(batching_service)
    running = asyncio.ensure_future(batching_service.agenerate(_request(1)))
    assert await asyncio.to_thread(gate.entered.wait, 60)
    queued = asyncio.ensure_future(batching_service.agenerate(_request(2, steps=1)))
    await asyncio.sleep(0.05)
    queued.cancel()
    gate.release.set()
    first = await running
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.to_thread(batching_service._batcher.flush)
    await asyncio.sleep(0.3)
    assert first["outputs"]
    assert gate.groups == [1]


def test_the_image_class_takes_concurrent_async_inputs_not_a_sync_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Modal cancels an async input's own task, but a sync @batched input's whole batch: generate is async."""
    deployed = deploy(monkeypatch, tmp_path).module
    assert set(deployed.CONCURRENCY_OPTIONS) <= {"max_inputs", "target_inputs"}
    assert deployed.CONCURRENCY_OPTIONS["max_inputs"] >= deployed.SETTINGS.max_batch_size
    assert not hasattr(deployed, "BATCH_OPTIONS")
    source = APP_PATH.read_text()
    assert "\n@modal.batched" not in source
    assert "    @modal.batched" not in source
    assert "async def generate(self, request" in source


def test_the_images_carry_every_module_of_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SERVICE_FILES lists every .py beside app.py, so no container misses a module service.py loads."""
    deployed = deploy(monkeypatch, tmp_path).module
    folder = {p.name for p in APP_PATH.parent.glob("*.py")} - {"app.py"}
    assert set(deployed.SERVICE_FILES) == folder


def test_the_config_reads_the_same_secret_variable_the_sender_documents(svc: ModuleType) -> None:
    """GENROUTER_WEBHOOK_SECRET is one name in the config and in _webhooks.py."""
    assert svc._config.WEBHOOK_SECRET_ENV == svc._webhooks.SECRET_ENV
    config = svc.ServiceConfig.from_env({svc._webhooks.SECRET_ENV: "whsec_" + "A" * 32})
    assert config.webhook_secret.startswith("whsec_")
    assert "whsec_" not in repr(config)


def test_a_signing_secret_in_the_deployers_shell_is_never_baked_into_an_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GENROUTER_WEBHOOK_SECRET reaches containers only through a Modal Secret, not the image."""
    secret = "whsec_" + "B" * 32
    deployed = deploy(monkeypatch, tmp_path, GENROUTER_WEBHOOK_SECRET=secret, GENROUTER_MODAL_WEB="1")
    for env in deployed.image_envs:
        assert "GENROUTER_WEBHOOK_SECRET" not in env
        assert secret not in "".join(env.values())


def test_auto_on_a_machine_without_cuda_serves_in_float32(
    svc: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device=auto without a GPU: loaded in bf16 for a GPU that never came, served on the CPU in float32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    service = svc.DiffusionService(
        svc.ServiceConfig(models=("sdxl",), random_weights="tiny", device="auto", cpu_threads=1, wait_ms=1)
    ).setup()
    try:
        result = service.generate({"prompt": "a fox", "width": 32, "height": 32, "seed": 1})
    finally:
        service.close()
    assert service.device == "cpu"
    assert next(service.models["sdxl"].eager.parameters()).dtype is torch.float32
    assert result["gpu"] == "cpu"
