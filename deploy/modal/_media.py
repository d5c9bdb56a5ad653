"""Encoding generated frames: PNG, JPEG and WebP images; animated WebP, GIF and MP4 videos."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["blank_png", "encode_image", "encode_video"]


def _to_uint8(array: Any) -> Any:
    import numpy as np

    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_image(array: Any, fmt: str, png_compress_level: int = 1) -> bytes:
    """An HxWx3 float array in [0, 1] as PNG, JPEG or WebP bytes."""
    from PIL import Image

    image = (
        Image.fromarray(_to_uint8(array), mode="RGB") if array.dtype != "uint8" else Image.fromarray(array)
    )
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=png_compress_level)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


def encode_video(frames: Any, fmt: str, fps: int) -> bytes:
    """FxHxWx3 float frames in [0, 1] as an animated WebP or GIF (Pillow) or an MP4 (PyAV)."""
    frames8 = _to_uint8(frames)
    buffer = io.BytesIO()
    if fmt == "mp4":
        import av

        height, width = frames8.shape[1:3]
        with av.open(buffer, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
            for frame in frames8:
                picture = av.VideoFrame.from_ndarray(frame[: stream.height, : stream.width], format="rgb24")
                for packet in stream.encode(picture):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return buffer.getvalue()
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames8]
    duration = max(1, round(1000 / fps))
    kwargs: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
    if fmt == "webp":
        images[0].save(buffer, format="WEBP", quality=85, **kwargs)
    else:
        images[0].save(buffer, format="GIF", **kwargs)
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A mid-grey PNG of ``width`` x ``height`` (the first frame of image-to-video warm-ups)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
