"""The LoRA adapters loaded into one pipeline: resolved by name in a folder, kept in an LRU."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["HotswapSlot", "LoraCache"]

_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class LoraCache:
    """The LoRA adapters loaded into one pipeline: an LRU of at most ``max_loaded``.

    Adapter names are derived from the file's path, size and mtime, so re-uploading a
    LoRA under the same name loads the new file. ``on_miss`` (e.g. a Modal Volume's
    ``reload``) runs once before a name is declared missing.
    """

    def __init__(
        self,
        lora_dir: str | None,
        model_id: str,
        max_loaded: int,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self.lora_dir = Path(lora_dir) if lora_dir else None
        self.model_id = model_id
        self.max_loaded = max(1, max_loaded)
        self.on_miss = on_miss
        self.loaded: OrderedDict[str, Path] = OrderedDict()
        self.active: tuple[tuple[str, float], ...] | None = None
        self.loads = 0

    def _candidates(self, name: str) -> list[Path]:
        assert self.lora_dir is not None
        root = self.lora_dir
        return [
            root / self.model_id / f"{name}.safetensors",
            root / f"{name}.safetensors",
            root / self.model_id / name,
            root / name,
        ]

    def resolve(self, source: str) -> tuple[str, str]:
        """``(adapter name, path)`` for a LoRA source; ``ValueError`` if it is not in the folder."""
        if self.lora_dir is None:
            raise ValueError("this deployment has no LoRA folder (GENROUTER_LORA_DIR); LoRAs are unavailable")
        name = source.removesuffix(".safetensors")
        if not _LORA_NAME.match(name) or ".." in name.split("/"):
            raise ValueError(
                f"LoRA source {source!r} must be a name in the LoRA folder (letters, digits, '._-/'), "
                "not a URL or an absolute path"
            )
        for attempt in range(2):
            for path in self._candidates(name):
                if path.is_file() or (path.is_dir() and any(path.glob("*.safetensors"))):
                    stat = path.stat()
                    ident = f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                    return f"lora_{hashlib.sha1(ident, usedforsecurity=False).hexdigest()[:12]}", str(path)
            if attempt == 0 and self.on_miss is not None:
                self.on_miss()
        raise ValueError(f"LoRA {source!r} not found for {self.model_id} in {self.lora_dir}")

    def activate(self, pipe: Any, wanted: Sequence[tuple[str, str, float]]) -> None:
        """Load what is missing (evicting least recently used), then set ``wanted`` as active."""
        active = tuple((name, scale) for name, _, scale in wanted)
        if active == self.active:
            for name, _, _ in wanted:
                self.loaded.move_to_end(name)
            return
        for name, path, _ in wanted:
            if name in self.loaded:
                self.loaded.move_to_end(name)
                continue
            keep = {n for n, _, _ in wanted}
            while len(self.loaded) >= self.max_loaded:
                victim = next((n for n in self.loaded if n not in keep), None)
                if victim is None:
                    break
                pipe.delete_adapters(victim)
                del self.loaded[victim]
            self._load(pipe, name, path)
        if wanted:
            pipe.enable_lora()
            pipe.set_adapters([n for n, _, _ in wanted], adapter_weights=[s for _, _, s in wanted])
        elif self.loaded:
            pipe.disable_lora()
        self.active = active

    def _load(self, pipe: Any, name: str, path: str) -> None:
        target = Path(path)
        try:
            if target.is_dir():
                pipe.load_lora_weights(str(target), adapter_name=name)
            else:
                pipe.load_lora_weights(str(target.parent), weight_name=target.name, adapter_name=name)
        except Exception as exc:
            with contextlib.suppress(Exception):
                pipe.delete_adapters(name)
            raise ValueError(f"LoRA {target.name} does not fit {self.model_id}: {exc}") from None
        self.loaded[name] = target
        self.loads += 1


class HotswapSlot:
    """One LoRA slot inside a compiled denoiser, refilled in place so swapping never recompiles.

    With ``torch.compile`` on, :meth:`prepare` (before compiling) enables diffusers' LoRA
    hotswap at ``target_rank`` and loads a placeholder adapter whose B matrices are zero (it
    changes nothing) into the slot. A request with one LoRA then hotswaps that LoRA's weights
    into the slot, its scale folded into B (so the scaling, a graph input, never changes); a
    request without LoRAs swaps the placeholder back. LoRAs the slot cannot take (several per
    request, a rank above ``target_rank``, layers the placeholder does not adapt) are refused by
    :meth:`swap` returning False, and run on the eager module instead.
    """

    NAME = "hotswap"

    def __init__(self, target_rank: int) -> None:
        self.target_rank = target_rank
        self.placeholder: str | None = None
        self.current: tuple[str, float] | None = None
        self.swaps = 0
        self.unfit: set[str] = set()

    def prepare(self, pipe: Any, placeholder_path: str) -> None:
        """Enable hotswap and load the zero placeholder (call before ``torch.compile``)."""
        pipe.enable_lora_hotswap(target_rank=self.target_rank)
        target = Path(placeholder_path)
        pipe.load_lora_weights(str(target.parent), weight_name=target.name, adapter_name=self.NAME)
        self.placeholder = placeholder_path

    def swap(self, pipe: Any, wanted: Sequence[tuple[str, str, float]]) -> bool:
        """Put ``wanted`` (one LoRA, or none: the placeholder) in the slot; False if it cannot go there."""
        if self.placeholder is None or len(wanted) > 1 or any(name in self.unfit for name, _, _ in wanted):
            return False
        key = (wanted[0][0], wanted[0][2]) if wanted else None
        if key == self.current:
            return True
        path, scale = (wanted[0][1], wanted[0][2]) if wanted else (self.placeholder, 1.0)
        try:
            state = _scaled_state(pipe, path, scale)
            pipe.load_lora_weights(state, adapter_name=self.NAME, hotswap=True)
        except Exception:
            if not wanted:
                raise
            self.unfit.add(wanted[0][0])
            return False
        self.current = key
        self.swaps += 1
        return True


def _scaled_state(pipe: Any, path: str, scale: float) -> dict[str, Any]:
    target = Path(path)
    loaded = (
        pipe.lora_state_dict(str(target))
        if target.is_dir()
        else pipe.lora_state_dict(str(target.parent), weight_name=target.name)
    )
    state: dict[str, Any] = dict(loaded[0] if isinstance(loaded, tuple) else loaded)
    if scale != 1.0:
        for key, tensor in state.items():
            if "lora_B" in key or "lora_up" in key or "lora.up" in key:
                state[key] = tensor * scale
    return state
