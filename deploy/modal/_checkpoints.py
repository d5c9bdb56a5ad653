"""Single-file checkpoints chosen per request: denoisers loaded from a folder, kept in an LRU.

A request's ``checkpoint`` names a ``.safetensors`` file in the checkpoint folder
(``<dir>/<model>/<name>.safetensors`` or ``<dir>/<name>.safetensors``): a fine-tune of the
model's denoiser (UNet for SDXL, transformer for FLUX and Wan). Both layouts load through
``<Denoiser>.from_single_file(path, config=<the model's weights>, subfolder=<unet|transformer>)``:

- **original** (A1111/Civitai, a whole-pipeline or UNet-only file): diffusers converts it,
  taking the denoiser's part of a whole-pipeline file;
- **diffusers** (the keys of the denoiser's own ``state_dict``): loaded as it is.

Random-weight models have no weights folder: their denoiser's own config is written to a
temporary folder and serves as ``config``.

Only the denoiser is swapped; text encoders and VAE stay the base model's (what nearly every
fine-tune changes). Up to ``max_loaded`` checkpoint denoisers stay on the device per model,
least recently used evicted.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CheckpointCache"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class CheckpointCache:
    """The checkpoint denoisers of one model: resolve names, load on first use, keep an LRU."""

    def __init__(
        self,
        folder: str | None,
        model_id: str,
        max_loaded: int,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self.folder = Path(folder) if folder else None
        self.model_id = model_id
        self.max_loaded = max(1, max_loaded)
        self.on_miss = on_miss
        self.loaded: OrderedDict[str, Any] = OrderedDict()
        self.loads = 0

    def resolve(self, name: Any) -> tuple[str, str]:
        """``(key, path)`` for a checkpoint name; ``ValueError`` when it is not in the folder."""
        if self.folder is None:
            raise ValueError(
                "this deployment has no checkpoint folder (GENROUTER_CHECKPOINT_DIR); "
                "checkpoints are unavailable"
            )
        if not isinstance(name, str):
            raise ValueError(f"checkpoint must be a string, not {type(name).__name__}")
        stem = name.removesuffix(".safetensors")
        if not _NAME.match(stem) or ".." in stem.split("/"):
            raise ValueError(
                f"checkpoint {name!r} must be a file name in the checkpoint folder (letters, digits, '._-/')"
            )
        candidates = [
            self.folder / self.model_id / f"{stem}.safetensors",
            self.folder / f"{stem}.safetensors",
        ]
        for attempt in range(2):
            for path in candidates:
                if path.is_file():
                    stat = path.stat()
                    ident = f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                    return f"ckpt_{hashlib.sha1(ident, usedforsecurity=False).hexdigest()[:12]}", str(path)
            if attempt == 0 and self.on_miss is not None:
                self.on_miss()
        raise ValueError(f"checkpoint {name!r} not found for {self.model_id} in {self.folder}")

    def get(self, key: str, path: str, base: Any, *, device: str, dtype: Any, config: str | None) -> Any:
        """The denoiser of checkpoint ``key`` on ``device``: loaded now unless it is in the LRU."""
        module = self.loaded.get(key)
        if module is not None:
            self.loaded.move_to_end(key)
            return module
        while len(self.loaded) >= self.max_loaded:
            self.loaded.popitem(last=False)
        module = _load(path, base, config)
        module.to(device=device, dtype=dtype)
        module.eval()
        self.loaded[key] = module
        self.loads += 1
        return module


def _load(path: str, base: Any, config: str | None) -> Any:
    """``<Denoiser>.from_single_file``: converts an original-layout file, loads a diffusers-layout one."""
    subfolder = "unet" if type(base).__name__.startswith("UNet") else "transformer"
    if config is None:  # random weights: the base denoiser's own config stands in for the model's
        config = _config_folder(base, subfolder)
    try:
        return type(base).from_single_file(path, config=config, subfolder=subfolder)
    except Exception as exc:
        raise ValueError(f"checkpoint {Path(path).name} does not fit this model: {exc}") from None


_CONFIG_FOLDERS: dict[int, str] = {}


def _config_folder(base: Any, subfolder: str) -> str:
    folder = _CONFIG_FOLDERS.get(id(base))
    if folder is None:
        folder = tempfile.mkdtemp(prefix="genrouter-denoiser-config-")
        base.save_config(str(Path(folder) / subfolder))
        _CONFIG_FOLDERS[id(base)] = folder
    return folder
