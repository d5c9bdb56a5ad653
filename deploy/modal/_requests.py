"""Validating request dicts into :class:`Request` values (``ValueError`` names each problem)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import urllib.parse
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = [
    "IMAGE_FORMATS",
    "KNOWN_FIELDS",
    "MAX_SEED",
    "VIDEO_FORMATS",
    "Request",
    "derived_seed",
    "parse_request",
]

MAX_SEED = 2**32 - 1
IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
VIDEO_FORMATS = {"webp": "image/webp", "gif": "image/gif", "mp4": "video/mp4"}
KNOWN_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "num_outputs",
        "seed",
        "steps",
        "guidance",
        "image",
        "strength",
        "loras",
        "output_format",
        "duration_s",
        "fps",
        "webhook_url",
        "checkpoint",
        "output_volume",
    }
)


@dataclasses.dataclass
class Request:
    """A validated request: what the GPU thread needs, nothing to re-check."""

    model: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_outputs: int
    seed: int
    steps: int
    guidance: float
    image: Any
    strength: float | None
    loras: tuple[tuple[str, str, float], ...]
    """(adapter name, path, scale)"""
    output_format: str
    num_frames: int | None
    fps: int | None
    warnings: list[str]
    webhook_url: str | None = None
    """Where to POST the signed job event when the request ends (``_webhooks.py``)."""
    checkpoint: tuple[str, str] | None = None
    """``(key, path)`` of a single-file checkpoint whose denoiser serves this request."""
    output_volume: bool | None = None
    """Write outputs to the output folder (a Volume): True, False, or None (when large)."""

    @property
    def key(self) -> Hashable:
        """What every request in one pipeline call must share."""
        loras = tuple((name, scale) for name, _, scale in self.loras)
        img2img = self.image is not None
        return (
            self.model,
            img2img,
            bool(self.negative_prompt),  # None means the pipeline's own unconditional embedding
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.strength if img2img else None,
            loras,
            self.num_frames,
            self.checkpoint[0] if self.checkpoint else None,
            # Video: one request per pipeline call (each runs minutes; a batch would wait on all).
            id(self) if self.num_frames is not None else None,
        )


def _int(raw: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside [{low}, {high}]")
    return value


def _float(raw: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {type(value).__name__}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name}={value} is outside [{low}, {high}]")
    return float(value)


def derived_seed(raw: Mapping[str, Any]) -> int:
    """A seed that is a pure function of the request, so re-runs reproduce it."""
    canonical = {k: (hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else v) for k, v in raw.items()}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, default=repr).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def parse_request(raw: Mapping[str, Any], models: Mapping[str, Any], config: Any) -> Request:
    """Validate a request dict against the loaded ``models``; ``ValueError`` names the problem.

    ``models`` maps ids to loaded models (``spec``, ``default_size``, ``default_steps``,
    ``size_step``, ``loras``); ``config`` is the service's :class:`ServiceConfig`.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"a request is a dict, not {type(raw).__name__}")
    warnings: list[str] = []
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown:
        warnings.append(f"ignored unknown field(s): {', '.join(unknown)}")
    model = raw.get("model") or (next(iter(models)) if len(models) == 1 else None)
    if model not in models:
        raise ValueError(f"model {model!r} is not served here; served: {', '.join(models) or 'none'}")
    loaded = models[model]
    spec = loaded.spec
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    negative = raw.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ValueError("negative_prompt must be a string")
    if negative and not spec.negative_prompt:
        warnings.append(f"{model} takes no negative_prompt; it was ignored")
        negative = None
    default_w, default_h = loaded.default_size
    width = _int(raw, "width", default_w, 16, 4096)
    height = _int(raw, "height", default_h, 16, 4096)
    step = loaded.size_step
    if width % step or height % step:
        raise ValueError(f"{model} needs width and height that are multiples of {step}; got {width}x{height}")
    if width * height > config.max_pixels:
        raise ValueError(f"{width}x{height} is over the {config.max_pixels}-pixel limit")
    num_outputs = _int(raw, "num_outputs", 1, 1, config.max_outputs)
    seed = _int(raw, "seed", -1, 0, MAX_SEED)
    if seed < 0:
        seed = derived_seed(raw)
    steps = _int(raw, "steps", loaded.default_steps, 1, 200)
    guidance = _float(raw, "guidance", spec.default_guidance, 0.0, 50.0)
    if spec.image_to_video:
        image, strength = _first_frame(raw, spec, width, height), None
    else:
        image, strength = _image(raw, spec, width, height, steps)
    loras = _loras(raw, loaded, config)
    output_format = raw.get("output_format") or ("webp" if spec.kind == "video" else "png")
    formats = VIDEO_FORMATS if spec.kind == "video" else IMAGE_FORMATS
    if output_format not in formats:
        raise ValueError(f"output_format {output_format!r} is not one of {', '.join(formats)} for {model}")
    if output_format == "mp4" and importlib.util.find_spec("av") is None:
        raise ValueError("mp4 output needs PyAV in the image (pip install av); ask for webp or gif")
    num_frames = fps = None
    if spec.kind == "video":
        asked_fps = _int(raw, "fps", spec.fps, 1, 60)
        fps = spec.fps  # the rate the model was trained at: another rate would change the motion
        if asked_fps != fps:
            warnings.append(
                f"{model} plays at its trained {fps} fps; fps={asked_fps} was ignored "
                "(duration_s sets the length)"
            )
        duration = _float(raw, "duration_s", (spec.num_frames - 1) / spec.fps, 0.1, 120.0)
        num_frames = max(5, 4 * round(duration * fps / 4) + 1)  # Wan needs 4k + 1 frames
        if num_frames > spec.max_frames:
            warnings.append(
                f"{model} is trained on at most {spec.max_frames} frames ({(spec.max_frames - 1) / fps:g} s "
                f"at {fps} fps); duration_s={duration:g} was capped to that"
            )
            num_frames = spec.max_frames
    elif raw.get("duration_s") is not None or raw.get("fps") is not None:
        warnings.append(f"{model} makes images; duration_s and fps were ignored")
    webhook_url = _webhook_url(raw.get("webhook_url"))
    checkpoint = None
    if raw.get("checkpoint") is not None:
        if loras:
            raise ValueError("a checkpoint with LoRAs is not supported; ask for one or the other")
        if loaded.checkpoints is None:
            raise ValueError(f"{model} takes no checkpoint")
        checkpoint = loaded.checkpoints.resolve(raw["checkpoint"])
    output_volume = raw.get("output_volume")
    if output_volume is not None and not isinstance(output_volume, bool):
        raise ValueError(f"output_volume must be true or false, not {type(output_volume).__name__}")
    if output_volume and not getattr(config, "output_dir", None):
        raise ValueError(
            "output_volume: this deployment has no output Volume (GENROUTER_MODAL_OUTPUTS_VOLUME)"
        )
    return Request(
        model=model,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        num_outputs=num_outputs,
        seed=seed,
        steps=steps,
        guidance=guidance,
        image=image,
        strength=strength,
        loras=loras,
        output_format=output_format,
        num_frames=num_frames,
        fps=fps,
        warnings=warnings,
        webhook_url=webhook_url,
        checkpoint=checkpoint,
        output_volume=output_volume,
    )


def _first_frame(raw: Mapping[str, Any], spec: Any, width: int, height: int) -> Any:
    """Image-to-video: the required first frame, resized to the clip's size."""
    data = raw.get("image")
    if data is None:
        raise ValueError(f"{spec.model_id} makes a video from an image: send image (PNG, JPEG or WebP bytes)")
    if raw.get("strength") is not None:
        raise ValueError(f"{spec.model_id} takes no strength: the image is the first frame")
    if not isinstance(data, bytes | bytearray):
        raise ValueError("image must be bytes (PNG, JPEG or WebP)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as opened:
            return opened.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image is not a readable image: {exc}") from None


def _webhook_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"webhook_url must be a string, not {type(value).__name__}")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"webhook_url {value[:200]!r} is not an http(s) URL with a host")
    return value


def _image(
    raw: Mapping[str, Any], spec: Any, width: int, height: int, steps: int
) -> tuple[Any, float | None]:
    data = raw.get("image")
    if data is None:
        if raw.get("strength") is not None:
            raise ValueError("strength applies to image-to-image; send image as well")
        return None, None
    if not spec.img2img:
        raise ValueError(f"{spec.model_id} does not do image-to-image")
    if not isinstance(data, bytes | bytearray):
        raise ValueError("image must be bytes (PNG, JPEG or WebP)")
    strength = _float(raw, "strength", 0.8, 0.01, 1.0)
    if int(steps * strength) < 1:
        raise ValueError(f"steps x strength = {steps * strength:g}: at least one denoising step is needed")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as opened:
            image = opened.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image is not a readable image: {exc}") from None
    return image, strength


def _loras(raw: Mapping[str, Any], loaded: Any, config: Any) -> tuple[tuple[str, str, float], ...]:
    items = raw.get("loras") or []
    if not items:
        return ()
    if not loaded.spec.lora:
        raise ValueError(f"{loaded.spec.model_id} does not take LoRAs")
    if not isinstance(items, list | tuple) or len(items) > config.max_loras_per_request:
        raise ValueError(f"loras must be a list of at most {config.max_loras_per_request} items")
    resolved = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("each LoRA is a dict {'source': name, 'scale': float}")
        source = item.get("source") or item.get("name")
        if not isinstance(source, str):
            raise ValueError("each LoRA needs a 'source' string")
        scale = _float(item, "scale", 1.0, -4.0, 4.0)
        name, path = loaded.loras.resolve(source)
        resolved.append((name, path, scale))
    return tuple(resolved)
