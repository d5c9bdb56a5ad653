"""deploy/modal/service.py on CPU with tiny random pipelines: sizes, seeds, LoRAs, batching, types."""

from __future__ import annotations

import concurrent.futures as cf
import io
import pickle
import pickletools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from PIL import Image

from genrouter.testing._modal import SERVICE_PATH, load_service_module
from modal_helpers import SERVICE_WARNINGS

pytestmark = SERVICE_WARNINGS


@pytest.fixture(scope="module")
def svc() -> ModuleType:
    """The service module, imported from its path."""
    return load_service_module(SERVICE_PATH)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (initially empty) LoRA folder."""
    return tmp_path_factory.mktemp("loras")


@pytest.fixture(scope="module")
def service(svc: ModuleType, lora_dir: Path) -> Iterator[Any]:
    """A started service with tiny SDXL, FLUX-dev and Wan models, and a random LoRA for each image model."""
    config = svc.ServiceConfig(
        models=("sdxl", "flux-dev", "wan-t2v"),
        random_weights="tiny",
        device="cpu",
        lora_dir=str(lora_dir),
        wait_ms=0,
        max_loras=2,
        encode_threads=2,
        cpu_threads=1,
    )
    service = svc.DiffusionService(config).setup()
    random_models = svc._sibling("random_models")
    random_models.save_random_lora(service.models["sdxl"].pipe, lora_dir / "sdxl", "style", seed=1)
    random_models.save_random_lora(service.models["sdxl"].pipe, lora_dir / "sdxl", "other", seed=2)
    random_models.save_random_lora(service.models["sdxl"].pipe, lora_dir / "sdxl", "third", seed=3)
    random_models.save_random_lora(service.models["flux-dev"].pipe, lora_dir / "flux-dev", "style", seed=4)
    yield service
    service.close()


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


_OBJECT_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}


def _pickled_objects(payload: Any) -> set[str]:
    """Opcodes in ``payload``'s pickle that build objects (none for plain builtin values)."""
    return {op.name for op, _, _ in pickletools.genops(pickle.dumps(payload))} & _OBJECT_OPCODES


# -- generation -------------------------------------------------------------------------


def test_tiny_sdxl_generates_an_image_of_the_requested_size(service: Any) -> None:
    """An SDXL-like pipeline returns a PNG of exactly the requested width and height."""
    result = service.generate({"model": "sdxl", "prompt": "a red fox", "width": 48, "height": 32, "seed": 1})
    assert result["content_type"] == "image/png"
    assert _image(result["outputs"][0]).size == (48, 32)
    assert (result["width"], result["height"]) == (48, 32)


def test_unet_attention_runs_on_pytorch_sdpa(service: Any) -> None:
    """Every attention layer of the SDXL UNet uses the SDPA processor."""
    processors = service.models["sdxl"].eager.attn_processors.values()
    assert {type(p).__name__ for p in processors} == {"AttnProcessor2_0"}


def test_tiny_flux_generates_an_image_of_the_requested_size(service: Any) -> None:
    """A FLUX-like pipeline returns a PNG of exactly the requested width and height."""
    result = service.generate({"model": "flux-dev", "prompt": "a red fox", "width": 64, "height": 32})
    assert _image(result["outputs"][0]).size == (64, 32)


def test_video_model_returns_an_animated_webp(service: Any) -> None:
    """The Wan-like video pipeline returns an animated WebP with duration_s x fps frames (4k + 1)."""
    result = service.generate(
        {"model": "wan-t2v", "prompt": "waves", "duration_s": 0.5, "fps": 16, "seed": 3}
    )
    video = _image(result["outputs"][0])
    assert result["content_type"] == "image/webp"
    assert result["kind"] == "video"
    assert video.n_frames == result["num_frames"] == 9


def test_same_seed_gives_the_same_bytes(service: Any) -> None:
    """A request run twice with one seed produces identical outputs (preempted re-runs match)."""
    request = {"model": "flux-dev", "prompt": "a lighthouse", "seed": 42}
    assert service.generate(request)["outputs"] == service.generate(request)["outputs"]


def test_different_seeds_give_different_images(service: Any) -> None:
    """Changing only the seed changes the output."""
    first = service.generate({"model": "flux-dev", "prompt": "a lighthouse", "seed": 1})
    second = service.generate({"model": "flux-dev", "prompt": "a lighthouse", "seed": 2})
    assert first["outputs"] != second["outputs"]


def test_missing_seed_is_derived_from_the_request(service: Any) -> None:
    """Without a seed, the seed is a function of the request, so a re-run reproduces it."""
    request = {"model": "flux-dev", "prompt": "a quiet harbour"}
    first, second = service.generate(request), service.generate(request)
    assert first["seed"] == second["seed"]
    assert first["outputs"] == second["outputs"]


def test_num_outputs_uses_consecutive_seeds(service: Any) -> None:
    """num_outputs=3 returns three different images seeded seed, seed+1, seed+2."""
    result = service.generate({"model": "flux-dev", "prompt": "tiles", "seed": 10, "num_outputs": 3})
    assert result["seeds"] == [10, 11, 12]
    assert len(set(result["outputs"])) == 3


def test_image_to_image_depends_on_the_input_image(service: Any) -> None:
    """Image-to-image output has the requested size and changes with the input image."""
    base = {"model": "sdxl", "prompt": "a painting", "seed": 5, "strength": 0.5, "steps": 2}
    black, white = (
        _png(Image.new("RGB", (40, 40), (0, 0, 0))),
        _png(Image.new("RGB", (40, 40), (255, 255, 255))),
    )
    from_black = service.generate({**base, "image": black, "width": 32, "height": 32})
    from_white = service.generate({**base, "image": white, "width": 32, "height": 32})
    assert _image(from_black["outputs"][0]).size == (32, 32)
    assert from_black["outputs"] != from_white["outputs"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("output_format", "content_type", "magic"),
    [("jpeg", "image/jpeg", b"\xff\xd8\xff"), ("webp", "image/webp", b"RIFF")],
)
def test_output_format_sets_encoding_and_content_type(
    service: Any, output_format: str, content_type: str, magic: bytes
) -> None:
    """output_format jpeg/webp encodes accordingly and says so in content_type."""
    result = service.generate({"model": "flux-dev", "prompt": "x", "output_format": output_format})
    assert result["content_type"] == content_type
    assert result["outputs"][0].startswith(magic)


def test_result_reports_gpu_seconds_and_timestamps(service: Any) -> None:
    """A result carries its GPU-second share and wall-clock start and finish times."""
    before = time.time()
    result = service.generate({"model": "flux-dev", "prompt": "x", "seed": 3})
    assert result["gpu_seconds"] > 0
    assert before - 1 <= result["started_at"] <= result["finished_at"] <= time.time() + 1


# -- LoRAs --------------------------------------------------------------------------------


def test_lora_changes_the_output(service: Any) -> None:
    """The same request with a random LoRA produces a different image."""
    request = {"model": "sdxl", "prompt": "a castle", "seed": 7}
    plain = service.generate(request)
    styled = service.generate({**request, "loras": [{"source": "style", "scale": 1.0}]})
    assert plain["outputs"] != styled["outputs"]


def test_lora_unloads_without_reloading_the_base_model(service: Any) -> None:
    """After a LoRA request, a plain request gives the plain output again, on the same base module."""
    request = {"model": "sdxl", "prompt": "a bridge", "seed": 8}
    base_module = service.models["sdxl"].eager
    plain = service.generate(request)
    service.generate({**request, "loras": [{"source": "style", "scale": 0.8}]})
    assert service.generate(request)["outputs"] == plain["outputs"]
    assert service.models["sdxl"].eager is base_module


def test_lora_scale_changes_the_output(service: Any) -> None:
    """The same LoRA at another scale gives another image."""
    request = {"model": "sdxl", "prompt": "a tower", "seed": 9}
    low = service.generate({**request, "loras": [{"source": "style", "scale": 0.3}]})
    high = service.generate({**request, "loras": [{"source": "style", "scale": 1.5}]})
    assert low["outputs"] != high["outputs"]


def test_lru_keeps_at_most_max_loras_adapters_loaded(service: Any) -> None:
    """With max_loras=2, loading a third adapter deletes the least recently used one."""
    request = {"model": "sdxl", "prompt": "a tree", "seed": 1}
    for name in ("style", "other", "third"):
        service.generate({**request, "loras": [{"source": name}]})
    cache = service.models["sdxl"].loras
    adapters = service.models["sdxl"].pipe.get_list_adapters().get("unet", [])
    assert len(cache.loaded) == 2
    assert sorted(adapters) == sorted(cache.loaded)
    assert [path.stem for path in cache.loaded.values()] == ["other", "third"]


def test_flux_lora_changes_the_output(service: Any) -> None:
    """A random LoRA for the FLUX-like transformer changes its output."""
    request = {"model": "flux-dev", "prompt": "a castle", "seed": 7}
    plain = service.generate(request)
    styled = service.generate({**request, "loras": [{"source": "style", "scale": 1.0}]})
    assert plain["outputs"] != styled["outputs"]


def test_unknown_lora_is_a_value_error(service: Any) -> None:
    """A LoRA name missing from the folder is refused as a bad request."""
    with pytest.raises(ValueError, match="not found"):
        service.generate({"model": "sdxl", "prompt": "x", "loras": [{"source": "missing"}]})


@pytest.mark.parametrize("source", ["../etc/passwd", "/abs/path", "https://example.com/lora.safetensors"])
def test_lora_outside_the_folder_is_refused(service: Any, source: str) -> None:
    """LoRA sources are names inside the LoRA folder: no paths outside it, no URLs."""
    with pytest.raises(ValueError, match="name in the LoRA folder"):
        service.generate({"model": "sdxl", "prompt": "x", "loras": [{"source": source}]})


# -- errors and types ---------------------------------------------------------------------


def test_results_hold_only_builtin_types(service: Any) -> None:
    """A result pickles with no reference to torch, numpy or the deploy code."""
    result = service.generate({"model": "flux-dev", "prompt": "x", "num_outputs": 2})
    assert _pickled_objects(result) == set()


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"model": "nope", "prompt": "x"}, "not served here"),
        ({"model": "sdxl", "prompt": ""}, "prompt"),
        ({"model": "sdxl", "prompt": "x", "width": 33, "height": 32}, "multiples of"),
        ({"model": "sdxl", "prompt": "x", "steps": True}, "steps must be an integer"),
        ({"model": "sdxl", "prompt": "x", "output_format": "bmp"}, "output_format"),
        ({"model": "sdxl", "prompt": "x", "image": b"not an image"}, "not a readable image"),
    ],
)
def test_bad_request_raises_a_plain_value_error(service: Any, request_: dict[str, Any], match: str) -> None:
    """Invalid input raises exactly the builtin ValueError (unpicklable without the deploy code)."""
    with pytest.raises(ValueError, match=match) as info:
        service.generate(request_)
    assert type(info.value) is ValueError


def test_generate_many_returns_errors_in_place(service: Any) -> None:
    """generate_many answers a bad item with an error dict and still serves its neighbours."""
    results = service.generate_many(
        [
            {"model": "flux-dev", "prompt": "a"},
            {"model": "flux-dev", "prompt": ""},
            {"model": "flux-dev", "prompt": "b"},
        ]
    )
    assert "outputs" in results[0]
    assert "outputs" in results[2]
    assert results[1] == {"error": {"type": "ValueError", "message": "prompt must be a non-empty string"}}


def test_builtin_error_turns_library_errors_into_builtins(svc: ModuleType) -> None:
    """A library's own exception becomes RuntimeError naming it; a ValueError subclass a ValueError."""

    class OutOfMemoryError(RuntimeError):
        pass

    class SchedulerError(ValueError):
        pass

    oom = svc.builtin_error(OutOfMemoryError("CUDA out of memory"))
    bad = svc.builtin_error(SchedulerError("bad steps"))
    assert type(oom) is RuntimeError
    assert "smaller size" in str(oom)
    assert type(bad) is ValueError


# -- batching -------------------------------------------------------------------------------


def test_generate_many_groups_compatible_requests(service: Any) -> None:
    """Requests sharing model, size, steps and LoRA set run as one pipeline batch."""
    results = service.generate_many([{"model": "flux-dev", "prompt": f"p{i}", "seed": i} for i in range(3)])
    assert [r["batch_size"] for r in results] == [3, 3, 3]


def test_generate_many_keeps_incompatible_requests_apart(service: Any) -> None:
    """Different sizes, step counts and LoRA sets never share a batch."""
    results = service.generate_many(
        [
            {"model": "sdxl", "prompt": "a", "width": 32, "height": 32},
            {"model": "sdxl", "prompt": "b", "width": 48, "height": 32},
            {"model": "sdxl", "prompt": "c", "width": 32, "height": 32, "steps": 1},
            {"model": "sdxl", "prompt": "d", "width": 32, "height": 32, "loras": [{"source": "style"}]},
            {"model": "sdxl", "prompt": "e", "width": 32, "height": 32},
        ]
    )
    assert [r["batch_size"] for r in results] == [2, 1, 1, 1, 2]


def _recording_batcher(svc: ModuleType, max_batch_size: int, wait_ms: float) -> tuple[Any, list[list[str]]]:
    groups: list[list[str]] = []

    def run(entries: list[Any]) -> None:
        groups.append([e.payload for e in entries])
        for entry in entries:
            entry.future.set_result(entry.payload)

    batcher = svc.DynamicBatcher(run, max_batch_size=max_batch_size, wait_ms=wait_ms)
    batcher.start()
    return batcher, groups


def test_batcher_groups_by_key_within_wait_ms(svc: ModuleType) -> None:
    """Items arriving within wait_ms group by key; other keys form their own group."""
    batcher, groups = _recording_batcher(svc, max_batch_size=8, wait_ms=200)
    futures = [
        batcher.submit(name, key) for name, key in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")]
    ]
    cf.wait(futures, timeout=5)
    batcher.close()
    assert sorted(groups) == [["a1", "a2", "a3"], ["b1"]]


def test_batcher_caps_a_group_at_max_batch_size(svc: ModuleType) -> None:
    """A group never holds more than max_batch_size units; the rest start the next group."""
    batcher, groups = _recording_batcher(svc, max_batch_size=2, wait_ms=200)
    futures = [batcher.submit(f"x{i}", "K") for i in range(5)]
    cf.wait(futures, timeout=5)
    batcher.close()
    assert [len(g) for g in groups] == [2, 2, 1]


def test_batcher_runs_a_lone_request_after_wait_ms(svc: ModuleType) -> None:
    """A request with no batch-mates runs once its wait_ms has passed."""
    batcher, _ = _recording_batcher(svc, max_batch_size=8, wait_ms=30)
    started = time.monotonic()
    assert batcher.submit("only", "K").result(timeout=5) == "only"
    batcher.close()
    assert time.monotonic() - started >= 0.025


def test_batcher_skips_a_request_cancelled_while_queued(svc: ModuleType) -> None:
    """A future cancelled before its group starts is never run."""
    gate = threading.Event()
    ran: list[str] = []

    def run(entries: list[Any]) -> None:
        gate.wait(5)
        for entry in entries:
            ran.append(entry.payload)
            entry.future.set_result(entry.payload)

    batcher = svc.DynamicBatcher(run, max_batch_size=1, wait_ms=0)
    batcher.start()
    first = batcher.submit("first", "K")
    time.sleep(0.05)  # the worker is now blocked inside the first group
    second = batcher.submit("second", "K")
    assert second.cancel()
    gate.set()
    first.result(timeout=5)
    batcher.close()
    assert ran == ["first"]


# -- configuration and registry ---------------------------------------------------------------


def test_config_reads_genrouter_environment_variables(svc: ModuleType) -> None:
    """ServiceConfig.from_env reads models, batching, compile and per-model sources."""
    config = svc.ServiceConfig.from_env(
        {
            "GENROUTER_MODELS": "sdxl, flux-dev",
            "GENROUTER_MAX_BATCH_SIZE": "8",
            "GENROUTER_BATCH_WAIT_MS": "75",
            "GENROUTER_COMPILE": "1",
            "GENROUTER_SOURCE_FLUX_DEV": "/weights/my-flux",
        }
    )
    assert config.models == ("sdxl", "flux-dev")
    assert (config.max_batch_size, config.wait_ms, config.compile) == (8, 75.0, True)
    assert config.sources == {"flux-dev": "/weights/my-flux"}


def test_register_model_serves_a_finetune_with_its_base_architecture(svc: ModuleType) -> None:
    """register_model adds an id that loads a base family from another source."""
    spec = svc.register_model("my-sdxl-test", "sdxl", "/weights/my-sdxl")
    try:
        assert (spec.family, spec.source, spec.lora) == ("sdxl", "/weights/my-sdxl", True)
        assert svc.MODELS["my-sdxl-test"] is spec
    finally:
        del svc.MODELS["my-sdxl-test"]
