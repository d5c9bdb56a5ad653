"""Deploy-time helpers both Modal apps share (``app.py`` and ``comfy/app.py``).

Loading a file of this folder as a module (``deploy/`` is not a package, and need not be
installed) and reading ``GENROUTER_*`` settings from the environment. Standard library only,
no ``modal`` import; every image whose app imports it carries it at ``/root/_deploy.py``.
"""

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType


def load_file(name: str, *candidates: Path) -> ModuleType:
    """The module ``name``, executed from the first of ``candidates`` that exists (once per process).

    Raises ImportError naming the candidates when none exists.
    """
    if name in sys.modules:
        return sys.modules[name]
    path = next((p for p in candidates if p.is_file()), None)
    spec = importlib.util.spec_from_file_location(name, path) if path is not None else None
    if spec is None or spec.loader is None:
        raise ImportError(f"{name}: none of {', '.join(map(str, candidates))} exists")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def env_flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    """``env[key]`` as a boolean (1, true, yes, on; any case); unset or empty: ``default``."""
    value = env.get(key)
    return default if not value else value.strip().lower() in ("1", "true", "yes", "on")


def env_int(env: Mapping[str, str], key: str, default: int) -> int:
    """``env[key]`` as an integer; unset or empty: ``default``."""
    value = env.get(key)
    return default if not value else int(value)
