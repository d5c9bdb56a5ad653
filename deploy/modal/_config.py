"""The diffusion service's configuration: :class:`ServiceConfig` and the variables it reads."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["ENV_VARIABLES", "WEBHOOK_SECRET_ENV", "ServiceConfig"]

WEBHOOK_SECRET_ENV = "GENROUTER_WEBHOOK_SECRET"
"""The signing secret's variable (``_webhooks.SECRET_ENV``): from a Modal Secret, never baked in."""

ENV_VARIABLES = (
    "GENROUTER_MODELS",
    "GENROUTER_EXTRA_MODELS",
    "GENROUTER_WEIGHTS_DIR",
    "GENROUTER_LORA_DIR",
    "GENROUTER_DEVICE",
    "GENROUTER_DTYPE",
    "GENROUTER_COMPILE",
    "GENROUTER_COMPILE_MODE",
    "GENROUTER_MAX_BATCH_SIZE",
    "GENROUTER_BATCH_WAIT_MS",
    "GENROUTER_MAX_LORAS",
    "GENROUTER_ENCODE_THREADS",
    "GENROUTER_PNG_COMPRESS_LEVEL",
    "GENROUTER_WARMUP",
    "GENROUTER_RANDOM_WEIGHTS",
    "GENROUTER_CPU_THREADS",
    "GENROUTER_CHECKPOINT_DIR",
    "GENROUTER_MAX_CHECKPOINTS",
    "GENROUTER_WARMUP_SIZES",
    "GENROUTER_OUTPUT_DIR",
    "GENROUTER_OUTPUT_INLINE_MAX_BYTES",
    "GENROUTER_COMPILE_BACKEND",
    "GENROUTER_PUBLIC_URL",
    "GENROUTER_DOWNLOAD_TTL_S",
    "GENROUTER_LORA_HOTSWAP",
    "GENROUTER_LORA_MAX_RANK",
)
"""The variables the service reads, besides ``GENROUTER_SOURCE_<MODEL>``."""


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """How the service loads and runs models. :meth:`from_env` reads ``GENROUTER_*`` variables."""

    models: tuple[str, ...] = ("sdxl",)
    """Model ids to load (``GENROUTER_MODELS``, comma-separated)."""
    weights_dir: str | None = None
    """Folder with one diffusers folder per model id (``GENROUTER_WEIGHTS_DIR``); else the HF cache."""
    lora_dir: str | None = None
    """Folder of LoRA files (``GENROUTER_LORA_DIR``); None: LoRA requests are refused."""
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Per-model weight source overrides, a path or a hub repo id (``GENROUTER_SOURCE_<MODEL>``)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cuda`` or ``cpu`` (``GENROUTER_DEVICE``)."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on CUDA, float32 on CPU), ``bfloat16``, ``float16``, ``float32``."""
    compile: bool = False
    """``torch.compile`` the denoiser (``GENROUTER_COMPILE``)."""
    compile_mode: str = "max-autotune-no-cudagraphs"
    """``torch.compile`` mode (``GENROUTER_COMPILE_MODE``)."""
    compile_backend: str = "inductor"
    """``torch.compile`` backend (``GENROUTER_COMPILE_BACKEND``; ``eager`` checks graphs quickly in tests)."""
    checkpoint_dir: str | None = None
    """Folder of single-file checkpoints (``GENROUTER_CHECKPOINT_DIR``); None: ``checkpoint`` is refused."""
    max_checkpoints: int = 1
    """Checkpoint denoisers kept loaded per model besides the base one (``GENROUTER_MAX_CHECKPOINTS``)."""
    warmup_sizes: tuple[tuple[int, int], ...] = ()
    """Sizes warmed up besides each model's default (``GENROUTER_WARMUP_SIZES="1024x1024,832x1216"``):
    with compile on, every size served should be here, or its first request compiles."""
    output_dir: str | None = None
    """Folder (a Volume) for outputs written instead of returned (``GENROUTER_OUTPUT_DIR``)."""
    public_url: str | None = None
    """The deployment's web endpoint URL (``GENROUTER_PUBLIC_URL``): base of signed download links."""
    download_ttl_s: int = 24 * 3600
    """How long a signed download link stays valid (``GENROUTER_DOWNLOAD_TTL_S``)."""
    output_inline_max_bytes: int = 32 * 1024 * 1024
    """Outputs larger than this in total go to ``output_dir`` when it is set
    (``GENROUTER_OUTPUT_INLINE_MAX_BYTES``); a request's ``output_volume`` overrides."""
    max_batch_size: int = 4
    """Most images in one pipeline call (``GENROUTER_MAX_BATCH_SIZE``)."""
    wait_ms: float = 20.0
    """Longest a request waits for batch-mates (``GENROUTER_BATCH_WAIT_MS``)."""
    max_loras: int = 8
    """LoRA adapters kept loaded per model (``GENROUTER_MAX_LORAS``)."""
    lora_hotswap: bool | None = None
    """With compile on, serve one-LoRA requests by hotswapping into the compiled denoiser, so a
    swap never recompiles (``GENROUTER_LORA_HOTSWAP``; default: on with compile and a LoRA folder)."""
    lora_max_rank: int = 64
    """The highest LoRA rank the hotswap slot takes (``GENROUTER_LORA_MAX_RANK``)."""
    max_loras_per_request: int = 4
    max_outputs: int = 8
    max_pixels: int = 2048 * 2048
    encode_threads: int = 4
    """Threads that encode outputs (``GENROUTER_ENCODE_THREADS``)."""
    png_compress_level: int = 1
    """zlib level for PNG (1 is fast: ~30 ms for 1024², files ~25 % larger than level 6)."""
    random_weights: str = ""
    """``tiny`` or ``full``: random pipelines instead of weights (``GENROUTER_RANDOM_WEIGHTS``)."""
    warmup: bool | None = None
    """Run one small generation per model in ``to_device`` (default: on CUDA only)."""
    cpu_threads: int | None = None
    """``torch.set_num_threads`` on a CPU device (``GENROUTER_CPU_THREADS``): 1 keeps tiny models
    fast on a busy machine, where OpenMP threads otherwise spin waiting for each other."""
    webhook_secret: str = dataclasses.field(default="", repr=False)
    """``whsec_...`` key that signs webhook deliveries (``GENROUTER_WEBHOOK_SECRET``, from a Modal
    Secret, never baked into the image); empty: requests with ``webhook_url`` get a warning."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """A config from ``GENROUTER_*`` environment variables; ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("GENROUTER_MODELS"):
            values["models"] = tuple(m.strip() for m in env["GENROUTER_MODELS"].split(",") if m.strip())
        for name, key in (
            ("weights_dir", "GENROUTER_WEIGHTS_DIR"),
            ("lora_dir", "GENROUTER_LORA_DIR"),
            ("device", "GENROUTER_DEVICE"),
            ("dtype", "GENROUTER_DTYPE"),
            ("compile_mode", "GENROUTER_COMPILE_MODE"),
            ("random_weights", "GENROUTER_RANDOM_WEIGHTS"),
            ("compile_backend", "GENROUTER_COMPILE_BACKEND"),
            ("checkpoint_dir", "GENROUTER_CHECKPOINT_DIR"),
            ("output_dir", "GENROUTER_OUTPUT_DIR"),
            ("public_url", "GENROUTER_PUBLIC_URL"),
        ):
            if env.get(key):
                values[name] = env[key]
        for name, key in (
            ("max_batch_size", "GENROUTER_MAX_BATCH_SIZE"),
            ("max_loras", "GENROUTER_MAX_LORAS"),
            ("encode_threads", "GENROUTER_ENCODE_THREADS"),
            ("png_compress_level", "GENROUTER_PNG_COMPRESS_LEVEL"),
            ("cpu_threads", "GENROUTER_CPU_THREADS"),
            ("max_checkpoints", "GENROUTER_MAX_CHECKPOINTS"),
            ("output_inline_max_bytes", "GENROUTER_OUTPUT_INLINE_MAX_BYTES"),
            ("download_ttl_s", "GENROUTER_DOWNLOAD_TTL_S"),
            ("lora_max_rank", "GENROUTER_LORA_MAX_RANK"),
        ):
            if env.get(key):
                values[name] = int(env[key])
        if env.get("GENROUTER_BATCH_WAIT_MS"):
            values["wait_ms"] = float(env["GENROUTER_BATCH_WAIT_MS"])
        if env.get("GENROUTER_COMPILE"):
            values["compile"] = _flag(env["GENROUTER_COMPILE"])
        if env.get("GENROUTER_LORA_HOTSWAP"):
            values["lora_hotswap"] = _flag(env["GENROUTER_LORA_HOTSWAP"])
        if env.get("GENROUTER_WARMUP"):
            values["warmup"] = _flag(env["GENROUTER_WARMUP"])
        if env.get("GENROUTER_WARMUP_SIZES"):
            values["warmup_sizes"] = _sizes(env["GENROUTER_WARMUP_SIZES"])
        if env.get(WEBHOOK_SECRET_ENV):
            values["webhook_secret"] = env[WEBHOOK_SECRET_ENV]
        sources = {
            key[len("GENROUTER_SOURCE_") :].lower().replace("_", "-"): value
            for key, value in env.items()
            if key.startswith("GENROUTER_SOURCE_") and value
        }
        if sources:
            values["sources"] = sources
        values.update(overrides)
        return cls(**values)


def _sizes(value: str) -> tuple[tuple[int, int], ...]:
    sizes = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        width, _, height = item.lower().partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ValueError(f"GENROUTER_WARMUP_SIZES item {item!r} is not WIDTHxHEIGHT")
        sizes.append((int(width), int(height)))
    return tuple(sizes)
