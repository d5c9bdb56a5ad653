"""deploy/modal/app.py imports offline with modal 1.6 names only, and .local() runs the service."""

from __future__ import annotations

import asyncio
import inspect
import io
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

modal = pytest.importorskip("modal")

from PIL import Image  # noqa: E402

from modal_helpers import DEPLOY_DIR, fresh_import, offline  # noqa: E402

APP_PATH = DEPLOY_DIR / "app.py"

DEPRECATED_CLS_PARAMETERS = {
    "keep_warm",  # → min_containers
    "concurrency_limit",  # → max_containers
    "container_idle_timeout",  # → scaledown_window
    "allow_concurrent_inputs",  # → @modal.concurrent
    "max_inputs",  # → single_use_containers
}
"""Parameters modal 1.6 rejects or deprecates (shared/reference/modal.md, "Renames")."""

DEPRECATED_API = (
    # max_inputs is current as @modal.concurrent's argument; as an @app.cls argument the
    # options test below rejects it.
    *(DEPRECATED_CLS_PARAMETERS - {"max_inputs"}),
    "web_endpoint",  # → fastapi_endpoint
    "modal.Stub",
    "modal.Mount",
    "modal.gpu.",
    "modal.build",
    ".lookup(",
)


def import_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ModuleType:
    """A fresh import of app.py under ``env``, with every warning an error and no credentials."""
    offline(monkeypatch, tmp_path, **env)
    return fresh_import(monkeypatch, APP_PATH, "genrouter_modal_app")


def test_app_imports_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Importing app.py needs no token, no network and no torch, and defines the Diffusion class."""
    app = import_app(monkeypatch, tmp_path)
    assert app.app.name == "genrouter-diffusion"
    assert app.Diffusion is not None


def test_cls_options_are_modal_1_6_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every @app.cls argument is a parameter of modal 1.6's App.cls, and none is a deprecated name."""
    app = import_app(monkeypatch, tmp_path)
    accepted = set(inspect.signature(modal.App.cls).parameters)
    assert set(app.CLS_OPTIONS) <= accepted
    assert not set(app.CLS_OPTIONS) & DEPRECATED_CLS_PARAMETERS
    assert set(app.VIDEO_CLS_OPTIONS) <= accepted
    assert not set(app.VIDEO_CLS_OPTIONS) & DEPRECATED_CLS_PARAMETERS
    assert set(app.CONCURRENCY_OPTIONS) <= set(inspect.signature(modal.concurrent).parameters)


def test_every_optional_feature_imports_with_current_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Web endpoint, GPU snapshots, retries, region and no memory snapshot all import cleanly."""
    app = import_app(
        monkeypatch,
        tmp_path,
        GENROUTER_MODAL_WEB="1",
        GENROUTER_MODAL_GPU_SNAPSHOT="1",
        GENROUTER_MODAL_RETRIES="2",
        GENROUTER_MODAL_REGION="us-east",
        GENROUTER_MODAL_GPU="H100!",
    )
    assert app.CLS_OPTIONS["experimental_options"] == {"enable_gpu_snapshot": True}
    assert isinstance(app.CLS_OPTIONS["retries"], modal.Retries)
    assert app.CLS_OPTIONS["gpu"] == "H100!"
    assert app.web is not None
    without_snapshot = import_app(monkeypatch, tmp_path, GENROUTER_MODAL_MEMORY_SNAPSHOT="0")
    assert without_snapshot.CLS_OPTIONS["enable_memory_snapshot"] is False


def test_gpu_setting_is_an_ordered_fallback_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GENROUTER_MODAL_GPU with several types becomes modal's GPU fallback list, in order."""
    app = import_app(monkeypatch, tmp_path, GENROUTER_MODAL_GPU="H200, H100, A100-80GB")
    assert app.CLS_OPTIONS["gpu"] == ["H200", "H100", "A100-80GB"]


def test_app_source_names_no_deprecated_modal_api() -> None:
    """app.py's source never mentions a renamed or removed modal API."""
    source = APP_PATH.read_text()
    found = [name for name in DEPRECATED_API if re.search(re.escape(name), source)]
    assert found == []


def test_service_settings_are_copied_into_the_image_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """GENROUTER_* service variables present at deploy time reach the container's environment."""
    app = import_app(
        monkeypatch, tmp_path, GENROUTER_COMPILE="1", GENROUTER_MODELS="flux-dev", GENROUTER_MODAL_CPU="8"
    )
    assert app.SETTINGS.service_env["GENROUTER_COMPILE"] == "1"
    assert app.SETTINGS.service_env["GENROUTER_MODELS"] == "flux-dev"
    assert "GENROUTER_MODAL_CPU" not in app.SETTINGS.service_env


def _hooks_and_generate(cls: Any, **parameters: Any) -> tuple[Any, Any]:
    """An instance of the user class with its parameters, its enter hooks run in order, and
    its ``generate`` as the raw coroutine function: what a container does with the class."""
    user_cls = cls._get_user_cls()
    instance = user_cls.__new__(user_cls)
    instance.__dict__.update(parameters)
    names = ("load", "start") if hasattr(user_cls, "load") else ("load_and_start",)
    for name in names:  # the hooks may be inherited (getattr_static: the partial, not a bound method)
        inspect.getattr_static(user_cls, name)._get_raw_f()(instance)
    return instance, inspect.getattr_static(user_cls, "generate")._get_raw_f()


@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_local_generate_runs_the_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Diffusion(model_id=...) with both enter hooks run serves requests, an error dict for a bad one."""
    pytest.importorskip("diffusers")
    app = import_app(monkeypatch, tmp_path)
    for key, value in {
        "GENROUTER_RANDOM_WEIGHTS": "tiny",
        "GENROUTER_DEVICE": "cpu",
        "GENROUTER_CPU_THREADS": "1",
        "GENROUTER_LORA_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    instance, generate = _hooks_and_generate(app.Diffusion, model_id="flux-dev")

    async def both() -> list[dict[str, Any]]:
        good = {"model": "flux-dev", "prompt": "a fox", "width": 32, "height": 32, "seed": 1}
        return list(await asyncio.gather(generate(instance, good), generate(instance, {"prompt": ""})))

    try:
        results = asyncio.run(both())
    finally:
        instance.service.close()
    assert Image.open(io.BytesIO(results[0]["outputs"][0])).size == (32, 32)
    assert results[1]["error"]["type"] == "ValueError"
