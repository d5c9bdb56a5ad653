"""Shared setup for the tests that import the Modal apps under deploy/modal/ offline."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "modal"
_imports = itertools.count()

SERVICE_WARNINGS = [
    # numpy 2 asks torch tensors for __array__(copy=...); diffusers' schedulers trigger it
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    # peft warns whenever a second adapter joins a model: the LoRA cache does that on purpose
    pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute in the model:UserWarning"),
]
"""The ``pytestmark`` of files that run ``deploy/modal/service.py`` on tiny random models."""


def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
    """No Modal credentials (an absent config file) and ``env`` set, as a deployer's shell would."""
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def fresh_import(monkeypatch: pytest.MonkeyPatch, path: Path, prefix: str) -> ModuleType:
    """``path`` imported again under a new module name, with every warning an error."""
    name = f"{prefix}_{next(_imports)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(module)
    return module


def image_files(image: Any) -> set[str]:
    """The container paths of every local file a modal Image (and the images it builds on) adds."""
    found: set[str] = set()
    for dependency in image._deps_():
        if type(dependency).__name__ == "Mount":
            found |= {str(entry.remote_path) for entry in dependency.entries}
        elif type(dependency).__name__ == "Image":
            found |= image_files(dependency)
    return found
