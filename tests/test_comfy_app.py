"""deploy/modal/comfy/app.py imports offline with modal 1.6 names, in Modal's ComfyUI shape."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType

import pytest

modal = pytest.importorskip("modal")

from modal_helpers import DEPLOY_DIR, fresh_import, image_files, offline  # noqa: E402

APP_PATH = DEPLOY_DIR / "comfy" / "app.py"


def import_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ModuleType:
    """A fresh import of the ComfyUI app under ``env``, every warning an error, no credentials."""
    offline(monkeypatch, tmp_path, **env)
    return fresh_import(monkeypatch, APP_PATH, "genrouter_comfy_app")


def test_app_imports_without_credentials_or_comfyui(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Importing the app needs no token, no network and no ComfyUI, and defines the ComfyUI class."""
    app = import_app(monkeypatch, tmp_path)
    assert app.app.name == "genrouter-comfy"
    assert app.ComfyUI is not None


def test_defaults_follow_modals_comfyui_pattern(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An L40S, scaledown_window=300, @modal.concurrent(max_inputs=5) and one Volume for the data."""
    app = import_app(monkeypatch, tmp_path)
    assert app.CLS_OPTIONS["gpu"] == "L40S"
    assert app.CLS_OPTIONS["scaledown_window"] == 300
    assert app.CONCURRENT_OPTIONS == {"max_inputs": 5}
    assert list(app.CLS_OPTIONS["volumes"]) == [app.DATA_PATH]
    assert "enable_memory_snapshot" not in app.CLS_OPTIONS  # ComfyUI's GPU check fails in a CPU snapshot


def test_options_are_modal_1_6_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every @app.cls and @modal.concurrent argument is a parameter of modal 1.6."""
    app = import_app(monkeypatch, tmp_path, GENROUTER_COMFY_GPU_SNAPSHOT="1")
    assert set(app.CLS_OPTIONS) <= set(inspect.signature(modal.App.cls).parameters)
    assert set(app.CONCURRENT_OPTIONS) <= set(inspect.signature(modal.concurrent).parameters)
    assert app.CLS_OPTIONS["experimental_options"] == {"enable_gpu_snapshot": True}


def test_the_class_exposes_generate_run_workflow_and_health(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """generate (what the Modal backend calls), run_workflow and the health web endpoint."""
    app = import_app(monkeypatch, tmp_path, GENROUTER_COMFY_NODES="comfyui-impact-pack")
    assert set(app.ComfyUI._get_method_names()) == {"generate", "run_workflow", "health"}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GENROUTER_COMFY_* variables set the GPU, concurrency, scale-down and app name."""
    app = import_app(
        monkeypatch,
        tmp_path,
        GENROUTER_COMFY_GPU="H100",
        GENROUTER_COMFY_MAX_INPUTS="2",
        GENROUTER_COMFY_SCALEDOWN_WINDOW_S="60",
        GENROUTER_COMFY_APP="my-comfy",
    )
    assert app.app.name == "my-comfy"
    assert app.CLS_OPTIONS["gpu"] == "H100"
    assert app.CLS_OPTIONS["scaledown_window"] == 60
    assert app.CONCURRENT_OPTIONS == {"max_inputs": 2}


def test_extra_model_paths_point_comfyui_at_the_volume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ComfyUI reads checkpoints, LoRAs and custom nodes from the Volume."""
    app = import_app(monkeypatch, tmp_path)
    target = tmp_path / "extra.yaml"
    app.write_extra_model_paths(str(target), "/comfy-data")
    text = target.read_text()
    assert "base_path: /comfy-data/models" in text
    assert "checkpoints: checkpoints" in text
    assert "custom_nodes: /comfy-data/custom_nodes" in text


def test_the_image_carries_the_files_the_app_and_service_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A container imports app.py again: the image holds service.py and the shared _deploy and _webhooks."""
    app = import_app(monkeypatch, tmp_path)
    assert {"/root/service.py", "/root/_deploy.py", "/root/_webhooks.py"} <= image_files(app.image)
