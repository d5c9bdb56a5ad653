"""ComfyUI outputs as :class:`~genrouter.types.Artifact` s, for every backend that serves workflows.

ComfyUI reports outputs per output node: ``{"<node id>": {"images": [...], "gifs": [...],
"videos": [...]}}``, each file ``{filename, subfolder, type}`` and, where a host has
uploaded it (fal's ``comfy/`` endpoints), a ``url``. Files of ``type: temp`` (previews)
are skipped; node ids are visited in numeric order so outputs come in a stable order.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from typing import Any

from genrouter.types import Artifact, ArtifactKind

__all__ = ["comfy_artifacts", "file_kind", "node_order", "service_artifacts"]

_VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")
_FILE_LISTS = ("images", "gifs", "videos", "video")


def node_order(node_id: str) -> tuple[int, str]:
    """Sort key for node ids: numeric ids by value, others after them."""
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def file_kind(filename: str, content_type: str | None, listed_as: str) -> ArtifactKind:
    """Video for a ``video/`` content type, a video extension or a ``videos`` list; else image (GIFs too)."""
    if content_type:
        return ArtifactKind.VIDEO if content_type.startswith("video/") else ArtifactKind.IMAGE
    if listed_as in ("videos", "video") or filename.lower().endswith(_VIDEO_EXTENSIONS):
        return ArtifactKind.VIDEO
    return ArtifactKind.IMAGE


def comfy_artifacts(outputs: Mapping[str, Any]) -> list[Artifact]:
    """Artifacts for every file with a ``url`` in ComfyUI's per-node ``outputs``."""
    artifacts: list[Artifact] = []
    for node_id in sorted((k for k in outputs if isinstance(k, str)), key=node_order):
        node = outputs[node_id]
        if not isinstance(node, Mapping):
            continue
        for listed_as in _FILE_LISTS:
            files = node.get(listed_as)
            for item in files if isinstance(files, list) else []:
                if not isinstance(item, Mapping) or item.get("type") == "temp":
                    continue
                url = item.get("url")
                if not isinstance(url, str) or not url:
                    continue
                name = str(item.get("filename") or item.get("file_name") or url.rsplit("/", 1)[-1])
                reported = item.get("content_type")
                content_type = reported if isinstance(reported, str) else mimetypes.guess_type(name)[0]
                artifacts.append(
                    Artifact(
                        kind=file_kind(name, content_type, listed_as),
                        url=url,
                        content_type=content_type,
                        width=_positive(item.get("width")),
                        height=_positive(item.get("height")),
                    )
                )
    return artifacts


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def service_artifacts(value: Mapping[str, Any]) -> list[Artifact]:
    """Artifacts from the self-hosted ComfyUI class's result: ``outputs`` (bytes) with ``files``
    (``{content_type, kind, filename, node}``, one per output) as ``data:`` URLs."""
    files = value.get("files")
    described = files if isinstance(files, list) else []
    artifacts: list[Artifact] = []
    for index, data in enumerate(value.get("outputs") or []):
        if not isinstance(data, bytes):
            continue
        info = described[index] if index < len(described) and isinstance(described[index], Mapping) else {}
        name = str(info.get("filename") or "")
        content_type = info.get("content_type") or mimetypes.guess_type(name)[0] or "image/png"
        kind = file_kind(name, content_type, "videos" if info.get("kind") == "video" else "images")
        artifacts.append(
            Artifact(
                kind=kind,
                url=f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}",
                content_type=content_type,
                width=_positive(info.get("width")),
                height=_positive(info.get("height")),
            )
        )
    return artifacts
