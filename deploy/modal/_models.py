"""The models the diffusion service knows (:data:`MODELS`), how to add fine-tunes, and GPU names."""

from __future__ import annotations

import dataclasses
import os

__all__ = ["MODELS", "PIPELINES", "ModelSpec", "gpu_type", "patch_wan_prompt_cleaning", "register_model"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the service can serve, and how to load and drive it."""

    model_id: str
    family: str
    """``sdxl``, ``flux`` or ``wan``: which diffusers pipeline classes load it."""
    source: str
    """Hub repo id or path of the weights (a folder in ``weights_dir`` named like the id wins)."""
    random_family: str
    """The :mod:`random_models` family used with ``random_weights``."""
    kind: str = "image"
    default_steps: int = 30
    default_guidance: float = 5.0
    default_size: tuple[int, int] = (1024, 1024)
    size_factor: int = 1
    """Size step = VAE scale factor x this (FLUX and Wan pack 2x2 latent patches)."""
    max_sequence_length: int | None = None
    negative_prompt: bool = True
    img2img: bool = True
    lora: bool = True
    variant: str | None = None
    fps: int = 16
    """Video: the frame rate the model was trained at; output plays at it, whatever was asked."""
    num_frames: int = 33
    """Video: frames by default."""
    max_frames: int = 81
    """Video: the longest clip the model was trained on; longer requests are capped (a warning)."""
    image_to_video: bool = False
    """Video: the request's ``image`` is the first frame (required)."""


_WAN_T2V = ModelSpec(
    "wan-t2v",
    "wan",
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "wan",
    kind="video",
    default_steps=30,
    default_guidance=5.0,
    default_size=(832, 480),
    size_factor=2,
    max_sequence_length=512,
    img2img=False,
    lora=False,
)
"""Wan 2.1 text-to-video; its image-to-video sibling differs only in weights and the first frame."""

MODELS: dict[str, ModelSpec] = {
    "sdxl": ModelSpec(
        "sdxl",
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "sdxl",
        default_steps=30,
        default_guidance=5.0,
        variant="fp16",
    ),
    "flux-dev": ModelSpec(
        "flux-dev",
        "flux",
        "black-forest-labs/FLUX.1-dev",
        "flux",
        default_steps=28,
        default_guidance=3.5,
        size_factor=2,
        max_sequence_length=512,
        negative_prompt=False,
    ),
    "flux-schnell": ModelSpec(
        "flux-schnell",
        "flux",
        "black-forest-labs/FLUX.1-schnell",
        "flux-schnell",
        default_steps=4,
        default_guidance=0.0,
        size_factor=2,
        max_sequence_length=256,
        negative_prompt=False,
        img2img=False,
        lora=False,
    ),
    "wan-t2v": _WAN_T2V,
    "wan-i2v": dataclasses.replace(
        _WAN_T2V,
        model_id="wan-i2v",
        family="wan-i2v",
        source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        random_family="wan-i2v",
        image_to_video=True,
    ),
}
"""Every model the service knows, by id. Add fine-tunes with :func:`register_model`."""


def register_model(model_id: str, base: str, source: str) -> ModelSpec:
    """Serve a fine-tune: ``model_id`` is ``base``'s architecture with weights from ``source``.

    ``GENROUTER_EXTRA_MODELS="my-sdxl=sdxl:/weights/my-sdxl"`` does the same at deploy time.
    """
    if base not in MODELS:
        raise ValueError(f"unknown base model {base!r}; expected one of {', '.join(sorted(MODELS))}")
    spec = dataclasses.replace(MODELS[base], model_id=model_id, source=source, variant=None)
    MODELS[model_id] = spec
    return spec


def _register_extra_models(value: str) -> None:
    for item in filter(None, (part.strip() for part in value.split(","))):
        model_id, _, rest = item.partition("=")
        base, _, source = rest.partition(":")
        if not (model_id and base and source):
            raise ValueError(f"GENROUTER_EXTRA_MODELS item {item!r} is not 'id=base:source'")
        register_model(model_id.strip(), base.strip(), source.strip())


if os.environ.get("GENROUTER_EXTRA_MODELS"):
    _register_extra_models(os.environ["GENROUTER_EXTRA_MODELS"])


_GPU_NAMES = (
    ("H200", "H200"),
    ("H100", "H100"),
    ("B200", "B200"),
    ("A100", "A100"),
    ("L40S", "L40S"),
    ("A10", "A10"),
    ("L4", "L4"),
    ("T4", "T4"),
    ("RTX PRO 6000", "RTX-PRO-6000"),
)


def gpu_type(device_name: str) -> str:
    """Modal's GPU type for a CUDA device name (``NVIDIA A100-SXM4-80GB`` → ``A100-80GB``).

    An unknown name is returned as it is, so the result still says what ran.
    """
    upper = device_name.upper()
    for marker, name in _GPU_NAMES:
        if marker in upper:
            if name == "A100":
                return "A100-80GB" if "80GB" in upper else "A100-40GB"
            return name
    return device_name


def patch_wan_prompt_cleaning() -> None:
    """diffusers 0.42's Wan image-to-video pipeline calls ``ftfy`` without checking it is installed
    (the text-to-video one checks); use the checking cleaner when ``ftfy`` is absent."""
    import diffusers.utils
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v

    if not diffusers.utils.is_ftfy_available():
        pipeline_wan_i2v.basic_clean = pipeline_wan.basic_clean


PIPELINES = {
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "flux": ("FluxPipeline", "FluxImg2ImgPipeline"),
    "wan": ("WanPipeline", None),
    "wan-i2v": ("WanImageToVideoPipeline", None),
}
"""diffusers pipeline classes of each family: (text-to-X, image-to-image or None)."""
