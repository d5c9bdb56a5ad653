"""The video class: one request per call, frames capped to the model's trained length, fps fixed,
image-to-video, the output Volume with signed links, and routing to the app's ``Video`` class."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("diffusers")

from PIL import Image

from genrouter import AsyncRouter, GenerationRequest
from genrouter.backends.modal import ModalBackend
from genrouter.testing import InProcessModalTransport
from genrouter.testing._modal import SERVICE_PATH, load_service_module

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SECRET = "whsec_" + "A" * 32


@pytest.fixture(scope="module")
def svc() -> ModuleType:
    return load_service_module(SERVICE_PATH)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def video_service(svc: ModuleType, outputs: Path) -> Iterator[Any]:
    """Tiny Wan text- and image-to-video, with an output folder and a public URL for links."""
    config = svc.ServiceConfig(
        models=("wan-t2v", "wan-i2v"),
        random_weights="tiny",
        device="cpu",
        cpu_threads=1,
        wait_ms=50,
        max_batch_size=4,
        output_dir=str(outputs),
        public_url="https://example.invalid/downloads",
        webhook_secret=SECRET,
    )
    service = svc.DiffusionService(config).setup()
    yield service
    service.close()


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_frames_are_capped_to_the_models_trained_length_with_a_warning(video_service: Any) -> None:
    """A 30 s request to Wan (trained on 81 frames) gets 81 frames and says why."""
    result = video_service.generate({"model": "wan-t2v", "prompt": "waves", "duration_s": 30, "seed": 1})
    assert result["num_frames"] == 81
    assert any("at most 81 frames" in w for w in result["warnings"])


def test_fps_stays_the_models_own_and_a_warning_says_so(video_service: Any) -> None:
    """fps=8 does not change the frame count or playback rate: Wan plays at its trained 16 fps."""
    result = video_service.generate(
        {"model": "wan-t2v", "prompt": "waves", "duration_s": 0.5, "fps": 8, "seed": 1}
    )
    assert result["fps"] == 16
    assert result["num_frames"] == 9
    assert any("trained 16 fps" in w for w in result["warnings"])


def test_image_to_video_starts_from_the_given_image(video_service: Any) -> None:
    """wan-i2v makes a clip from the image; another first frame gives another clip."""
    base = {"model": "wan-i2v", "prompt": "it moves", "duration_s": 2.0, "seed": 4, "output_volume": False}
    red = video_service.generate({**base, "image": _png(64, 64, (220, 20, 20))})
    blue = video_service.generate({**base, "image": _png(64, 64, (20, 20, 220))})
    assert red["kind"] == "video"
    assert red["num_frames"] == 33
    assert red["outputs"][0] != blue["outputs"][0]


def test_image_to_video_without_an_image_is_a_value_error(video_service: Any) -> None:
    """wan-i2v needs its first frame; the error says to send image."""
    with pytest.raises(ValueError, match="send image"):
        video_service.generate({"model": "wan-i2v", "prompt": "it moves"})


def test_video_requests_never_share_a_pipeline_call(video_service: Any) -> None:
    """Two identical video requests arriving together run as two calls of one video each."""
    before = len(video_service.batch_sizes)
    request = {"model": "wan-t2v", "prompt": "waves", "duration_s": 0.25, "seed": 2}
    results = video_service.generate_many([request, {**request, "seed": 3}])
    assert all("outputs" in r for r in results)
    assert video_service.batch_sizes[before:] == [1, 1]


def test_output_volume_returns_a_path_and_a_signed_link_instead_of_bytes(
    video_service: Any, svc: ModuleType, outputs: Path
) -> None:
    """output_volume: the clip is written to the Volume; the result has its path and a signed URL."""
    result = video_service.generate(
        {"model": "wan-t2v", "prompt": "waves", "duration_s": 0.25, "seed": 5, "output_volume": True}
    )
    assert result["outputs"] == []
    (path,) = result["output_paths"]
    assert (outputs / path).read_bytes()[:4] == b"RIFF"
    link = urlsplit(result["output_urls"][0])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert query["path"] == path
    served = svc._outputs.verify_download(str(outputs), SECRET, path, query["expires"], query["sig"])
    assert served == (outputs / path).resolve()


def test_a_forged_or_expired_download_link_is_refused(
    video_service: Any, svc: ModuleType, outputs: Path
) -> None:
    """A link whose signature does not match, or whose time is up, opens nothing."""
    result = video_service.generate(
        {"model": "wan-t2v", "prompt": "waves", "duration_s": 0.25, "seed": 6, "output_volume": True}
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(result["output_urls"][0]).query).items()}
    with pytest.raises(PermissionError, match="signature"):
        svc._outputs.verify_download(str(outputs), SECRET, query["path"], query["expires"], "0" * 64)
    with pytest.raises(PermissionError, match="expired"):
        svc._outputs.verify_download(
            str(outputs), SECRET, query["path"], query["expires"], query["sig"], now=int(query["expires"]) + 1
        )


def test_large_outputs_go_to_the_volume_on_their_own(svc: ModuleType, tmp_path: Path) -> None:
    """Outputs over output_inline_max_bytes are written to the Volume without being asked."""
    config = svc.ServiceConfig(output_dir=str(tmp_path), output_inline_max_bytes=10)
    result: dict[str, Any] = {"outputs": [b"x" * 11], "content_type": "image/png"}
    svc._outputs.place(result, None, config)
    assert result["outputs"] == []
    assert (tmp_path / result["output_paths"][0]).read_bytes() == b"x" * 11
    assert any("GENROUTER_PUBLIC_URL" in w for w in result["warnings"])


VIDEO_CONFIG = {
    "version": 1,
    "providers": {
        "gpu": {
            "type": "modal",
            "models": {
                "wan-t2v": {
                    "endpoint": "wan-t2v",
                    "kind": "video",
                    "capabilities": ["text-to-video"],
                    "limits": {"width": [16, 1280], "height": [16, 1280], "default_size": [32, 32]},
                    "params": {"duration_s": "duration_s", "fps": "fps"},
                    "price": {"per_gpu_second": "0.001097"},
                    "gpu_seconds_per_output": 30.0,
                }
            },
        }
    },
}


async def test_video_requests_are_sent_to_the_video_class(video_service: Any) -> None:
    """The backend spawns video models on the app's Video class (its own timeout and pool)."""
    transport = InProcessModalTransport(service=video_service)
    backend = ModalBackend(name="gpu", settings={}, transport=transport)
    async with AsyncRouter.from_config(VIDEO_CONFIG, backends={"gpu": backend}) as router:
        result = await router.generate(
            GenerationRequest(model="wan-t2v", prompt="waves", duration_s=0.25, seed=1)
        )
    assert transport.classes == ["Video"]
    assert result.outputs[0].content_type == "image/webp"


def test_the_video_class_has_a_long_timeout_and_takes_one_input_at_a_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Video's timeout is at least 30 minutes (even if set lower) and it has no input concurrency."""
    pytest.importorskip("modal")
    import importlib.util
    import sys

    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("GENROUTER_MODAL_VIDEO_TIMEOUT_S", "600")
    monkeypatch.delitem(sys.modules, "genrouter_modal.service", raising=False)
    path = Path(__file__).resolve().parents[1] / "deploy" / "modal" / "app.py"
    spec = importlib.util.spec_from_file_location("genrouter_modal_video_app", path)
    assert spec is not None
    assert spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "genrouter_modal_video_app", app)
    spec.loader.exec_module(app)
    assert app.VIDEO_CLS_OPTIONS["timeout"] >= 1800
    assert "@modal.concurrent" not in path.read_text().split("class Video")[0].rsplit("@app.cls", 1)[1]


async def test_an_image_to_video_request_is_routed_with_its_first_frame(video_service: Any) -> None:
    """A routed wan-i2v request sends its image as bytes to the Video class and gets a clip back."""
    config = {
        "version": 1,
        "providers": {
            "gpu": {
                "type": "modal",
                "models": {
                    "wan-i2v": {
                        "endpoint": "wan-i2v",
                        "kind": "video",
                        "capabilities": ["image-to-video"],
                        "limits": {"width": [16, 1280], "height": [16, 1280], "default_size": [32, 32]},
                        "params": {"duration_s": "duration_s", "fps": "fps", "strength": None},
                        "price": {"per_gpu_second": "0.001097"},
                        "gpu_seconds_per_output": 300.0,
                    }
                },
            }
        },
    }
    transport = InProcessModalTransport(service=video_service)
    backend = ModalBackend(name="gpu", settings={}, transport=transport)
    first_frame = _png(32, 32, (200, 120, 40))
    async with AsyncRouter.from_config(config, backends={"gpu": backend}) as router:
        result = await router.generate(
            GenerationRequest(model="wan-i2v", prompt="it moves", image=first_frame, duration_s=0.25, seed=2)
        )
    assert transport.classes == ["Video"]
    assert transport.spawned[0][1]["image"] == first_frame
    assert result.raw["num_frames"] == 5


async def test_a_routed_result_from_the_output_volume_links_to_its_files(video_service: Any) -> None:
    """provider_options output_volume: the result's artifacts are the signed download links."""
    transport = InProcessModalTransport(service=video_service)
    backend = ModalBackend(name="gpu", settings={}, transport=transport)
    async with AsyncRouter.from_config(VIDEO_CONFIG, backends={"gpu": backend}) as router:
        result = await router.generate(
            GenerationRequest(
                model="wan-t2v",
                prompt="waves",
                duration_s=0.25,
                seed=1,
                provider_options={"gpu": {"output_volume": True}},
            )
        )
    assert len(result.outputs) == 1
    assert result.outputs[0].url == result.raw["output_urls"][0]
    assert result.outputs[0].url.startswith("https://example.invalid/downloads?path=")
